"""Training runs: ``mixbench-train`` and ``tools/train.py`` call ``main``. ``run`` starts the
processes (one, or several for DDP), and in each ``train`` hands the configured protocol to
the run folder's lifecycle (``mixbench.engine.context.run_protocol``: skip a completed run,
hold the lock, refuse to overwrite, leave a failure record).

    mixbench-train                       # ERM on digits
    mixbench-train +method=mixup seed=1  # mixup
    mixbench-train -m +method=erm,mixup,cutmix seed=0,1

Read top to bottom, then ``mixbench/protocols/standard.py`` (what a run does) and
``mixbench/engine/fit.py`` (the epoch loop)."""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mixbench import protocols  # noqa: F401  (registration)
from mixbench.app.common import exit_on_user_error
from mixbench.config import CONFIG_DIR
from mixbench.engine.context import resolve_device, run_protocol, validate_config
from mixbench.engine.distributed import (SINGLE, DistInfo, broadcast_run_dir,
                                         init_process_group, launcher_ranks, spawn)
from mixbench.registry import PROTOCOLS, TASKS
from mixbench.results.io import RESULTS_NAME, read_results

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: str | Path) -> dict:
    """One process, ``trainer.devices`` processes spawned here, or this process as one rank
    of a job whose ranks a launcher started (torchrun, SLURM)."""
    validate_config(cfg)
    info = launcher_ranks()
    if info is not None:
        init_process_group(info, resolve_device(cfg.trainer.device).type)
        try:
            return train(cfg, broadcast_run_dir(Path(run_dir), info), info)
        finally:
            dist.destroy_process_group()
    if cfg.trainer.devices > 1:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        spawn(_train_rank, cfg.trainer.devices, OmegaConf.to_container(cfg), str(run_dir))
        return read_results(Path(run_dir) / RESULTS_NAME)
    return train(cfg, run_dir)


def _train_rank(info: DistInfo, config: dict, run_dir: str) -> None:
    """One spawned rank: its own process group membership, logging from rank 0 only."""
    if info.is_main:
        logging.basicConfig(level=logging.INFO, handlers=[
            logging.StreamHandler(), logging.FileHandler(Path(run_dir) / "train.log")],
            format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    cfg = OmegaConf.create(config)
    init_process_group(info, resolve_device(cfg.trainer.device).type)
    try:
        train(cfg, run_dir, info)
    finally:
        dist.destroy_process_group()


def train(cfg: DictConfig, run_dir: str | Path, info: DistInfo = SINGLE) -> dict:
    """Run the experiment ``cfg`` describes in this process (one rank under DDP); results
    land in ``run_dir``, written by rank 0 only."""
    return run_protocol(PROTOCOLS.build(cfg.protocol), cfg, run_dir, info)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    """``mixbench-train`` (and tools/train.py): one run, or a sweep with ``-m``."""
    results = run(cfg, HydraConfig.get().runtime.output_dir)
    # The value Hydra sweepers optimise: the task's primary metric (top-1, or RMSE).
    return results["test"][TASKS.get(results["task"]).columns[0].key]
