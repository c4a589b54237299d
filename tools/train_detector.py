"""Train the shipped grazing-incidence detector ``gixd-centernet-sim`` and ship it (weights + MANIFEST entry).

Usage (2-core CPU, about 20 minutes; the seeds are fixed in DetectorTrainConfig)::

    python3 tools/train_detector.py --out /tmp/gixd-centernet-sim.pt [--ship]

The same run is ``braggflow train-detector --out FILE --max-seconds 900`` (the other options at their defaults).
"""

from __future__ import annotations

import argparse

from braggflow.training.detector import DetectorTrainConfig, ship_detector, train_detector


def main() -> None:
    """Parse the options, train, and ship the model when asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="detector file (.pt) to write")
    parser.add_argument("--ship", action="store_true", help="copy it into braggflow/nn/weights and the MANIFEST")
    parser.add_argument("--name", default="gixd-centernet-sim")
    parser.add_argument("--n-train", type=int, default=1600)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    config = DetectorTrainConfig(n_train=args.n_train, n_val=100, epochs=args.epochs, max_seconds=args.max_seconds)
    train_detector(config, args.out, log=lambda line: print(line, flush=True))
    if args.ship:
        entry = ship_detector(args.out, args.name)
        print(f"shipped {args.name}: {entry['params']} parameters, sha256 {entry['pt']['sha256'][:16]}...")


if __name__ == "__main__":
    main()
