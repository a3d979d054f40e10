"""Run the dataset-distillation study of docs/distillation.md and print its tables.

    python tools/distill_study.py       # digits and Fashion-MNIST, IPC 1 and 10, 3 seeds
    python tools/distill_study.py --datasets digits --seeds 0 --out multirun/distill_study
    python tools/distill_study.py --tables-only        # tables and figure from finished runs

Runs already completed in --out are skipped, so an interrupted study continues where it
stopped. Writes study.md and param_change.png in --out."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from mixbench.config import CONFIG_DIR  # noqa: E402

from mixbench.distill.study import (SETTINGS, distill_tables,  # noqa: E402
                                    expert_table_and_figure, plan)
from mixbench.app.train import train  # noqa: E402
from mixbench.errors import MixbenchError  # noqa: E402

CONFIGS = str(CONFIG_DIR)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("multirun/distill_study"))
    parser.add_argument("--datasets", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tables-only", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not args.tables_only:
        runs = plan(args.out.resolve(), args.datasets, args.ipc, args.seeds)
        began = time.perf_counter()
        for i, (what, overrides, run_dir) in enumerate(runs):
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
                cfg = compose(config_name="train", overrides=overrides)
            start = time.perf_counter()
            try:
                train(cfg, run_dir)
            except MixbenchError as err:
                print(f"error in {what}: {err}", file=sys.stderr)
                return 2
            print(f"[{i + 1}/{len(runs)}] {what}: {time.perf_counter() - start:.0f} s "
                  f"(total {time.perf_counter() - began:.0f} s)", flush=True)
    experts = expert_table_and_figure(args.out, args.out / "param_change.png")
    tables = distill_tables(args.out)
    text = f"### Experts\n\n{experts}\n\n### Distillation\n\n{tables}\n"
    (args.out / "study.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
