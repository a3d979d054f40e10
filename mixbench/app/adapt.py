"""Test-time adaptation of a finished run on a corrupted, ordered test stream
(``mixbench-adapt``, tools/adapt.py).

    mixbench-adapt source=RUN adapter=unmix_tns stream=dirichlet stream.delta=0.1
    mixbench-adapt -m source=RUN_A,RUN_B adapter=source,tbn,alpha_bn,tent,unmix_tns
    mixbench-adapt source=RUN corruption=[gaussian_noise,contrast] severity=3

Writes results.json (protocol "adaptation": per corruption error, top-1, NLL, ECE, aECE, and
their means) in its own run folder; the source run's folder is only read. A re-run sweep
skips what it has written; a failure leaves a record that says what happened."""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mixbench import components  # noqa: F401  (registration)
from mixbench.app.common import exit_on_user_error, run_in_folder
from mixbench.config import CONFIG_DIR
from mixbench.tta.run import adapt_run

log = logging.getLogger("mixbench")


def adapt(cfg: DictConfig, run_dir: str | Path) -> dict:
    """One adaptation through the run folder's lifecycle; its completed record."""
    return run_in_folder(cfg, run_dir, adapt_run, key="adapt", protocol="adaptation")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="adapt")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    results = adapt(cfg, HydraConfig.get().runtime.output_dir)
    section = results["adaptation"]
    for row in section["corruptions"]:
        log.info("%-18s error %5.2f%%  NLL %.3f  ECE %5.2f%%  aECE %5.2f%%", row["corruption"],
                 100 * row["error"], row["nll"], 100 * row["ece"], 100 * row["aece"])
    log.info("%s on %s (source %s, %s, seed %d): mean error %.2f%%, ECE %.2f%%",
             section["adapter"], section["stream"], section["source"],
             section["source_method"], section["source_seed"], 100 * section["mean_error"],
             100 * section["mean_ece"])
    return section["mean_error"]
