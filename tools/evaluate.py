"""Re-evaluate a saved run from its checkpoint and rewrite its results.json.

    python tools/evaluate.py runs/digits/small_cnn/mixup/seed0/2026-11-25_10-00-00
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixbench.engine.load import evaluate_run  # noqa: E402
from mixbench.errors import MixbenchError  # noqa: E402
from mixbench.registry import TASKS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder holding last.pt")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        results = evaluate_run(args.run_dir, args.device)
    except MixbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = TASKS.get(results["task"]).summary(results)
    print(f"{args.run_dir}: {summary} [{results['status']}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
