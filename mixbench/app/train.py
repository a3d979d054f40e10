"""Starting runs: ``run`` is what ``tools/train.py`` calls. It starts the processes (one, or
several for DDP), and in each ``train`` skips a completed run, holds the folder's lock,
prepares the run context and hands it to the configured protocol. A failure leaves a
results.json that says what happened; what was written before stays.

Read top to bottom, then ``mixbench/protocols/standard.py`` (what a run does) and
``mixbench/engine/fit.py`` (the epoch loop)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from mixbench import protocols  # noqa: F401  (registration)
from mixbench.config import experiment_changes
from mixbench.engine.checkpoint import CHECKPOINT_NAME
from mixbench.engine.context import prepare, resolve_device, validate_config
from mixbench.engine.distributed import (SINGLE, DistInfo, broadcast_run_dir,
                                         init_process_group, launcher_ranks, spawn)
from mixbench.engine.rundir import RunLock, completed_results
from mixbench.errors import NonFiniteLossError, RunExistsError
from mixbench.registry import PROTOCOLS
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
    validate_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    done = completed_results(run_dir) if cfg.trainer.skip_completed else None
    if done is not None and experiment_changes(done.get("config", {}),
                                               OmegaConf.to_container(cfg, resolve=True)):
        done = None  # another experiment finished here: resuming or refusing says why
    if info.enabled:  # every rank must take the same branch
        decision = [done]
        dist.broadcast_object_list(decision, src=0)
        done = decision[0]
    if done is not None:
        log.info("%s already completed: skipping it (trainer.skip_completed=false to refuse "
                 "instead)", run_dir)
        return done
    with RunLock(run_dir) if info.is_main else contextlib.nullcontext():
        return _train_locked(cfg, run_dir, info)


def _train_locked(cfg: DictConfig, run_dir: Path, info: DistInfo) -> dict:
    checkpoint = run_dir / CHECKPOINT_NAME
    if checkpoint.exists() and not cfg.trainer.resume:
        raise RunExistsError(f"{run_dir} already holds a run (checkpoint {checkpoint.name}). "
                             f"Pass trainer.resume=true to continue it, or choose another "
                             f"hydra.run.dir for a new run.")
    protocol = PROTOCOLS.build(cfg.protocol)
    ctx = prepare(cfg, run_dir, info)
    try:
        return protocol(ctx)
    except BaseException as err:
        # Leave a record that says what happened (once the run has written one: a run
        # stopped by its config keeps the folder as it was); the last checkpoint stays.
        if ctx.written:
            status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
            ctx.write_results(status=status, error=f"{type(err).__name__}: {err}")
        if isinstance(err, NonFiniteLossError):
            history = ctx.record.get("history")
            kept = (f"The last good checkpoint ({checkpoint}, epoch {history[-1]['epoch']}) "
                    f"is kept." if history else "No epoch had completed.")
            raise NonFiniteLossError(f"{err}. The run stopped. {kept} Lower optimizer.lr, "
                                     f"check the data, or use trainer.precision=fp32.") from err
        raise
    finally:
        ctx.logger.close()
