"""Merge runs fine-tuned from one base run, without training, and evaluate every task.

    python tools/merge.py base=RUN models=[RUN_A,RUN_B,RUN_C,RUN_D] merge=pcb merge.ratio=0.1
    python tools/merge.py -m experiment=merge_fmnist_tasks merge=task_arithmetic,ties,dare,pcb
    make merge-demo          # train θ₀ and the fine-tuned tasks, merge them all, the table

Writes results.json (protocol "merge") in the run folder; tools/leaderboard.py reads it.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from mixbench.config import CONFIG_DIR  # noqa: E402  (and the resolvers configs use)
from mixbench import components  # noqa: E402,F401  (registration)
from mixbench.errors import MixbenchError  # noqa: E402
from mixbench.merging.runs import merge_runs  # noqa: E402
from mixbench.results.io import RESULTS_NAME, write_json_atomic  # noqa: E402

log = logging.getLogger("mixbench")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="merge")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        results = merge_runs(cfg)
    except MixbenchError as err:  # a user mistake: say what to do, no traceback
        log.error("error: %s", err)
        sys.exit(1)
    write_json_atomic(run_dir / RESULTS_NAME, results)
    merge = results["merge"]
    for row in merge["tasks"]:
        log.info("%-24s top-1 %.4f (fine-tuned %.4f, θ₀ %.4f)  ECE %.4f", row["dataset"],
                 row["top1"], row["individual_top1"], row["base_top1"], row["ece"])
    log.info("%s: mean top-1 %.4f, normalised %.4f%s", cfg.merge.name, merge["avg_top1"],
             merge["avg_normalized"],
             f", λ = {merge['scale']:g}" if merge["scale"] is not None else "")
    return merge["avg_top1"]


if __name__ == "__main__":
    main()
