"""``python -m braggflow``: the command line (same as the ``braggflow`` command)."""

from braggflow.cli import main

if __name__ == "__main__":
    main()
