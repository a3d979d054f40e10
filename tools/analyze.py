"""Analyse a saved run. --geometry: neural-collapse / last-layer geometry on its training set.

    python tools/analyze.py runs/digits/small_cnn/mixup/seed0/2026-11-25_10-00-00 --geometry

Writes geometry.json and geometry.png in the run folder and prints the metrics.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixbench.errors import MixbenchError  # noqa: E402
from mixbench.eval.geometry import analyze_run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder holding last.pt")
    parser.add_argument("--geometry", action="store_true",
                        help="NC1, ETF distances of class means and classifier, mixed-feature "
                             "alignment")
    parser.add_argument("--lam", type=float, default=0.5,
                        help="λ of the mixed pairs for the alignment (default 0.5)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = parser.parse_args(argv)
    if not args.geometry:
        parser.error("choose an analysis: --geometry")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        metrics = analyze_run(args.run_dir, args.device, lam=args.lam)
    except MixbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
