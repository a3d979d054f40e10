"""Re-evaluate a saved run from its checkpoint and rewrite its results.json; or, with
--shift, evaluate it on its test split corrupted (results in shift.json; results.json stays).

    mixbench-evaluate runs/digits/small_cnn/mixup/seed0/2026-11-25_10-00-00
    mixbench-evaluate RUN_DIR --shift gaussian_noise:5 --shift contrast:3
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mixbench.engine.load import evaluate_run
from mixbench.errors import MixbenchError
from mixbench.registry import TASKS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder holding last.pt")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--shift", action="append", default=[], metavar="NAME:SEVERITY",
                        help="a CIFAR-10-C corruption at severity 1-5 (repeatable): "
                             "robustness of the run, written to shift.json")
    parser.add_argument("--seed", type=int, default=0, help="the corruptions' random draws")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.shift:
        return evaluate_shifts(args)
    try:
        results = evaluate_run(args.run_dir, args.device)
    except MixbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = TASKS.get(results["task"]).summary(results)
    print(f"{args.run_dir}: {summary} [{results['status']}]")
    return 0


def evaluate_shifts(args) -> int:
    from mixbench.shift.evaluate import evaluate_shift, parse_shift

    try:
        shifts = [parse_shift(text) for text in args.shift]
        for name, severity in shifts:
            entry = evaluate_shift(args.run_dir, name, severity, args.seed, args.device)
            test = entry["test"]
            print(f"{args.run_dir} {name}:{severity}: top1={test['top1']:.4f} "
                  f"ece={test['ece']:.4f} nll={test['nll']:.4f} | after TS "
                  f"ece={entry['test_ts']['ece']:.4f}")
    except MixbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
