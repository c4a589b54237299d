"""Export localizer networks to ONNX, so that they run with ONNX Runtime without torch.

Shipped models (default: all of them) are exported beside their PyTorch files
in ``src/braggflow/nn/weights/`` and the MANIFEST records each ``.onnx`` file,
its SHA-256 and the model description that inference needs (architecture,
patch size, input features, symmetries, error calibration)::

    python tools/export_onnx.py                      # every shipped model
    python tools/export_onnx.py locnet-sim-sym4      # one

A model file of your own becomes a self-describing ``.onnx`` file (the
description is stored in its metadata), usable as ``--model FILE.onnx``::

    python tools/export_onnx.py my-model.pt -o my-model.onnx

Each export is compared with the torch network on simulated patches before it
is written (``--check N`` patches; 0 skips the check).  Needs torch and onnx
(``pip install -e ".[train]"``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="shipped model names or model files (default: every shipped model)")
    parser.add_argument("-o", "--out", type=Path, help="output .onnx file (one model file given)")
    parser.add_argument("--check", type=int, default=2000,
                        help="simulated patches on which the export is compared with torch (0: none)")
    args = parser.parse_args(argv)

    from braggflow.errors import BraggflowError
    from braggflow.nn.export import export_onnx, ship_onnx
    from braggflow.nn.files import list_models

    shipped = [r["name"] for r in list_models()]
    names = args.models or shipped
    if args.out is not None and len(names) != 1:
        parser.error("--out takes exactly one model")
    try:
        for name in names:
            if name in shipped and args.out is None:
                entry = ship_onnx(name, check=args.check)
                onnx = entry["onnx"]
                print(f"{name}: {onnx['file']} ({onnx['size_bytes']} bytes, opset {onnx['opset']}), "
                      f"sha256 {onnx['sha256'][:16]}...; MANIFEST updated")
            else:
                out = args.out if args.out is not None else Path(name).with_suffix(".onnx")
                info = export_onnx(name, out, check=args.check)
                print(f"{name} -> {out} ({info['size_bytes']} bytes, opset {info['opset']}), "
                      f"largest difference to torch {info['max_abs_diff']:.2g}, sha256 {info['sha256'][:16]}...")
    except BraggflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
