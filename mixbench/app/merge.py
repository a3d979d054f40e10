"""Merge runs fine-tuned from one base run, without training, and evaluate every task
(``mixbench-merge``, tools/merge.py).

    mixbench-merge base=RUN models=[RUN_A,RUN_B,RUN_C,RUN_D] merge=pcb merge.ratio=0.1
    mixbench-merge -m experiment=merge_fmnist_tasks merge=task_arithmetic,ties,dare,pcb

Writes results.json (protocol "merge") in the run folder. A re-run sweep skips what it has
written; a failure leaves a record that says what happened."""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mixbench import components  # noqa: F401  (registration)
from mixbench.app.common import exit_on_user_error, run_in_folder
from mixbench.config import CONFIG_DIR
from mixbench.merging.runs import merge_runs

log = logging.getLogger("mixbench")


def merge(cfg: DictConfig, run_dir: str | Path) -> dict:
    """One merge through the run folder's lifecycle; its completed record."""
    return run_in_folder(cfg, run_dir, merge_runs, key="merge", protocol="merge")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="merge")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    results = merge(cfg, HydraConfig.get().runtime.output_dir)
    section = results["merge"]
    for row in section["tasks"]:
        log.info("%-24s top-1 %.4f (fine-tuned %.4f, θ₀ %.4f)  ECE %.4f", row["dataset"],
                 row["top1"], row["individual_top1"], row["base_top1"], row["ece"])
    log.info("%s: mean top-1 %.4f, normalised %.4f%s", cfg.merge.name, section["avg_top1"],
             section["avg_normalized"],
             f", λ = {section['scale']:g}" if section["scale"] is not None else "")
    return section["avg_top1"]
