"""The run context: what a protocol needs from the process it runs in, built once per process
by ``prepare``: the config, the run folder, the distributed set-up, the device and autocast,
the logger, and rank-0-only writers of results.json and checkpoints. ``run_protocol`` runs a
protocol in a folder through the folder's lifecycle (mixbench/engine/rundir.py)."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

import torch.distributed as dist

from mixbench.components import LOGGERS
from mixbench.engine.checkpoint import CHECKPOINT_NAME, save_checkpoint
from mixbench.engine.distributed import SINGLE, DistInfo
from mixbench.engine.rundir import RunFolder, refuse_overwrite
from mixbench.errors import ConfigError, NonFiniteLossError
from mixbench.loggers import NullLogger
from mixbench.results.io import RESULTS_NAME, write_json_atomic
from mixbench.results.record import new_record

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, info: DistInfo = SINGLE) -> torch.device:
    """The device of this process; under DDP on CUDA, the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but CUDA is not available; "
                          f"use trainer.device=cpu")
    return device


def autocast_for(device: torch.device, precision: str) -> Callable[[], Any]:
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext
    if dtype == torch.float16 and device.type != "cuda":
        raise ConfigError("trainer.precision=fp16 needs CUDA; use bf16 or fp32 on the CPU")
    return lambda: torch.autocast(device.type, dtype=dtype)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate_config(cfg: DictConfig) -> None:
    """Reject bad values before anything runs, naming the key to fix. (Component arguments
    are checked by the components' constructors, also at start-up.)"""
    t = cfg.trainer
    for key in ("epochs", "batch_size", "eval_batch_size", "eval_every", "log_every"):
        _require(isinstance(t[key], int) and t[key] >= 1,
                 f"trainer.{key} must be a positive integer, got {t[key]!r}")
    _require(isinstance(t.keep_every, int) and t.keep_every >= 0,
             f"trainer.keep_every must be 0 (keep only last.pt) or a positive number of epochs, "
             f"got {t.keep_every!r}")
    _require(t.precision in PRECISIONS,
             f"trainer.precision must be one of {list(PRECISIONS)}, got {t.precision!r}")
    _require(isinstance(t.devices, int) and t.devices >= 1,
             f"trainer.devices must be a positive integer, got {t.devices!r}")
    _require(t.batch_size % t.devices == 0,
             f"trainer.batch_size={t.batch_size} is the global batch and must split evenly over "
             f"trainer.devices={t.devices}")
    _require(not (t.sync_bn and t.devices > 1 and resolve_device(t.device).type != "cuda"),
             "trainer.sync_bn=true needs CUDA (torch's SyncBatchNorm is GPU-only); on the CPU "
             "each process keeps its own BatchNorm statistics: set trainer.sync_bn=false")
    _require(cfg.optimizer.lr > 0, f"optimizer.lr must be > 0, got {cfg.optimizer.lr}")
    _require(cfg.optimizer.get("weight_decay", 0) >= 0,
             f"optimizer.weight_decay must be >= 0, got {cfg.optimizer.get('weight_decay')}")
    _require(isinstance(cfg.seed, int), f"seed must be an integer, got {cfg.seed!r}")


@dataclass
class RunContext:
    cfg: DictConfig
    config: dict  # cfg resolved to plain values: what results.json and checkpoints record
    run_dir: Path
    info: DistInfo
    device: torch.device
    autocast: Callable[[], Any]
    logger: Any
    record: dict  # the run's results.json, as last written (or about to be)
    written: bool = field(default=False)  # has this process written results.json yet?

    @property
    def main(self) -> bool:
        return self.info.is_main

    def write_results(self, **updates: Any) -> dict:
        """Update the record and write results.json atomically (rank 0 only)."""
        self.record.update(updates)
        if self.main:
            write_json_atomic(self.run_dir / RESULTS_NAME, self.record)
        self.written = True
        return self.record

    def write_json(self, name: str, data: dict) -> None:
        if self.main:
            write_json_atomic(self.run_dir / name, data)

    def save_checkpoint(self, path: Path, state: dict) -> None:
        if self.main:
            save_checkpoint(path, state)


def prepare(cfg: DictConfig, run_dir: str | Path, info: DistInfo = SINGLE) -> RunContext:
    """The context of one run in this process (one rank under DDP)."""
    run_dir = Path(run_dir)
    device = resolve_device(cfg.trainer.device, info)
    config = OmegaConf.to_container(cfg, resolve=True)
    logger = (LOGGERS.build(cfg.logger, run_dir=run_dir, config=config) if info.is_main
              else NullLogger())
    record = new_record(config, protocol=cfg.protocol.name, seed=cfg.seed)
    return RunContext(cfg, config, run_dir, info, device,
                      autocast_for(device, cfg.trainer.precision), logger, record)


def run_protocol(protocol: Callable[[RunContext], dict], cfg: DictConfig, run_dir: str | Path,
                 info: DistInfo = SINGLE) -> dict:
    """Run ``protocol`` (built by the caller from ``cfg.protocol``) in ``run_dir``: skip it if
    this experiment already completed there, hold the lock, refuse to overwrite a started run
    without ``trainer.resume``, and leave a failure record if it raises."""
    validate_config(cfg)
    folder = RunFolder(run_dir, OmegaConf.to_container(cfg, resolve=True), main=info.is_main)
    folder.path.mkdir(parents=True, exist_ok=True)
    done = folder.completed() if cfg.trainer.skip_completed else None
    if info.enabled:  # every rank must take the same branch
        decision = [done]
        dist.broadcast_object_list(decision, src=0)
        done = decision[0]
    if done is not None:
        log.info("%s already completed: skipping it (trainer.skip_completed=false to refuse "
                 "instead)", folder.path)
        return done
    with folder.lock():
        checkpoint = folder.path / CHECKPOINT_NAME
        refuse_overwrite(checkpoint, resume=cfg.trainer.resume)
        ctx = prepare(cfg, folder.path, info)
        try:
            return protocol(ctx)
        except BaseException as err:
            # a run stopped by its config before writing anything keeps the folder as it was
            if ctx.written:
                ctx.record = folder.write_failure(ctx.record, err)
            if isinstance(err, NonFiniteLossError):
                history = ctx.record.get("history")
                kept = (f"The last good checkpoint ({checkpoint}, epoch "
                        f"{history[-1]['epoch']}) is kept." if history
                        else "No epoch had completed.")
                raise NonFiniteLossError(f"{err}. The run stopped. {kept} Lower optimizer.lr, "
                                         f"check the data, or use trainer.precision=fp32."
                                         ) from err
            raise
        finally:
            ctx.logger.close()
