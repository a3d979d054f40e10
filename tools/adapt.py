"""Test-time adaptation of a finished run on a corrupted, ordered test stream.

    python tools/adapt.py source=RUN adapter=unmix_tns stream=dirichlet stream.delta=0.1
    python tools/adapt.py -m source=RUN_A,RUN_B adapter=source,tbn,alpha_bn,tent,unmix_tns
    python tools/adapt.py source=RUN corruption=[gaussian_noise,contrast] severity=3

Writes results.json (protocol "adaptation": per corruption error, top-1, NLL, ECE, aECE, and
their means) in its own run folder; the source run's folder is only read.
tools/leaderboard.py reads it: one row per source method × adapter × stream × severity.
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
from mixbench.results.io import RESULTS_NAME, write_json_atomic  # noqa: E402
from mixbench.tta.run import adapt_run, completed_before  # noqa: E402

log = logging.getLogger("mixbench")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="adapt")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    done = completed_before(run_dir, cfg)
    if done is not None:  # a re-run sweep skips what it has already written
        log.info("%s already holds this adaptation: skipped", run_dir)
        return done["adaptation"]["mean_error"]
    try:
        results = adapt_run(cfg)
    except MixbenchError as err:  # a user mistake: say what to do, no traceback
        log.error("error: %s", err)
        sys.exit(1)
    write_json_atomic(run_dir / RESULTS_NAME, results)
    section = results["adaptation"]
    for row in section["corruptions"]:
        log.info("%-18s error %5.2f%%  NLL %.3f  ECE %5.2f%%  aECE %5.2f%%", row["corruption"],
                 100 * row["error"], row["nll"], 100 * row["ece"], 100 * row["aece"])
    log.info("%s on %s (source %s, %s, seed %d): mean error %.2f%%, ECE %.2f%%",
             section["adapter"], section["stream"], section["source"],
             section["source_method"], section["source_seed"], 100 * section["mean_error"],
             100 * section["mean_ece"])
    return section["mean_error"]


if __name__ == "__main__":
    main()
