"""The trainer: build the components a config names, run the method's step for each batch,
checkpoint every epoch, evaluate with calibration at the end, and write results.json.

Read top to bottom: ``run`` starts one process or several (DDP), ``train`` is the whole run
of one process, ``train_one_epoch`` is the hot loop."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra.utils
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from mixbench.data import DataBundle, make_loader
from mixbench.data.label_noise import LABEL_NOISE_NAME
from mixbench.engine.checkpoint import (CHECKPOINT_NAME, load_checkpoint, restore_model,
                                        save_checkpoint)
from mixbench.engine.distributed import (SINGLE, DistInfo, broadcast_run_dir,
                                         init_process_group, launcher_ranks, spawn)
from mixbench.engine.rundir import RunLock, completed_results
from mixbench.engine.seeding import epoch_seed, seed_everything
from mixbench.eval.evaluate import evaluate_model, evaluate_regression, original_units, predict
from mixbench.eval.regression import regression_metrics
from mixbench.methods import Method
from mixbench.loggers import NullLogger
from mixbench.registry import BACKBONES, DATASETS, LOGGERS, LOSSES, METHODS, SCHEDULERS
from mixbench.results.io import RESULTS_NAME, git_sha, read_results, write_json_atomic
from mixbench.errors import (CheckpointError, ConfigError, NonFiniteLossError,
                             RunExistsError)

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Keys that may change when a run is resumed: they do not change what is being trained.
RESUME_MAY_DIFFER = ("trainer.resume", "trainer.progress", "trainer.device",
                     "trainer.num_workers", "trainer.eval_batch_size", "trainer.log_every",
                     "trainer.skip_completed", "trainer.compile", "dataset.root",
                     "dataset.download", "logger.")


@dataclass
class Components:
    data: DataBundle
    model: torch.nn.Module
    method: Method
    loss_fn: torch.nn.Module
    device: torch.device


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


def build_components(cfg: DictConfig, device: torch.device,
                     data: DataBundle | None = None) -> Components:
    """Everything a run needs, from the config groups, via the registries (``data`` given:
    that dataset instead of the configured one, e.g. synthetic data in benchmarks)."""
    if data is None:
        data = dataclasses.replace(DATASETS.build(cfg.dataset), name=cfg.dataset.name)
    model = BACKBONES.build(cfg.backbone, num_classes=data.num_classes,
                            in_channels=data.in_channels).to(device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    method = METHODS.build(cfg.method, num_classes=data.num_classes)
    loss_fn = LOSSES.build(cfg.loss)
    if loss_fn.task != data.task:
        hint = "loss=mse" if data.task == "regression" else "loss=soft_ce"
        raise ConfigError(f"loss={cfg.loss.name} is a {loss_fn.task} loss, but "
                          f"dataset={cfg.dataset.name} is a {data.task} task: use {hint}")
    return Components(data, model, method, loss_fn, device)


def autocast_for(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext
    if dtype == torch.float16 and device.type != "cuda":
        raise ConfigError("trainer.precision=fp16 needs CUDA; use bf16 or fp32 on the CPU")
    return lambda: torch.autocast(device.type, dtype=dtype)


def train_one_epoch(model, loader, method: Method, loss_fn, optimizer, scheduler, scaler, *,
                    epoch: int, device: torch.device, autocast=contextlib.nullcontext,
                    log_every: int = 50, progress: bool = True, desc: str = "",
                    info: DistInfo = SINGLE) -> dict:
    """One pass over ``loader``. Loss and accuracy stay on the device and are read every
    ``log_every`` steps (also to stop on a non-finite loss), so the GPU is not synced per step.
    A batch is (x, y) or (x, y, index); the method gets it whole. Training accuracy is kept
    for classification (integer labels) only. Under DDP the sums are all-reduced when read,
    so every rank reports (and stops on) the same numbers."""
    model.train()
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    # loss sum, correct predictions, samples: read every log_every steps
    local = torch.zeros(3, device=device, dtype=torch.float64)
    start = time.perf_counter()
    bar = tqdm(total=len(loader), desc=desc, disable=not progress, leave=False,
               dynamic_ncols=True)
    for step, batch in enumerate(loader):
        batch = tuple(t.to(device, non_blocking=True) for t in batch)
        y = batch[1]
        classify = not y.is_floating_point()
        with autocast():
            out = method.step(model, batch, loss_fn)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out.loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        local[0] += out.loss.detach().double() * len(y)
        if classify:
            local[1] += (out.logits[: len(y)].argmax(dim=1) == y).sum()
        local[2] += len(y)
        if (step + 1) % log_every == 0 or step + 1 == len(loader):
            totals = local.clone()
            if info.enabled:
                dist.all_reduce(totals)
            loss_sum, correct, seen = totals.tolist()
            mean_loss = loss_sum / seen
            if not torch.isfinite(torch.tensor(mean_loss)):
                bar.close()
                raise NonFiniteLossError(f"the training loss became {mean_loss} at epoch "
                                         f"{epoch + 1}, step {step + 1}")
            rate = seen / (time.perf_counter() - start)
            shown = {"acc": f"{correct / seen:.3f}"} if classify else {}
            bar.set_postfix(loss=f"{mean_loss:.4f}", **shown, img_s=f"{rate:.0f}")
            bar.update(step + 1 - bar.n)
    bar.close()
    elapsed = time.perf_counter() - start
    stats = {"train_loss": loss_sum / seen}
    if classify:
        stats["train_top1"] = correct / seen
    return {**stats, "samples": int(seen), "epoch_s": elapsed, "samples_per_s": seen / elapsed}


def history_metric(model, loader, data: DataBundle, device, autocast,
                   info: DistInfo = SINGLE) -> dict[str, float]:
    """The per-epoch number kept in the history: test top-1 (OpenMixup reports the median of
    the last 10 epochs), or test RMSE in the targets' units for regression."""
    out, target = predict(model, loader, device, autocast, info)
    if data.task == "regression":
        units = lambda t: original_units(t, data.target_mean, data.target_std)  # noqa: E731
        return {"test_rmse": regression_metrics(units(out), units(target))["rmse"]}
    return {"test_top1": (out.argmax(1) == target).float().mean().item()}


def evaluate(parts: Components, val_loader, test_loader, *, n_bins: int, autocast,
             figure_path: Path | None, info: DistInfo = SINGLE) -> dict:
    """The metrics of results.json for the dataset's task (every rank gets them; only the
    rank given a ``figure_path`` draws the reliability diagram)."""
    data = parts.data
    if data.task == "regression":
        return evaluate_regression(parts.model, val_loader, test_loader, parts.device,
                                   target_mean=data.target_mean, target_std=data.target_std,
                                   autocast=autocast, info=info)
    return evaluate_model(parts.model, val_loader, test_loader, parts.device, n_bins=n_bins,
                          autocast=autocast, figure_path=figure_path, info=info)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _config_changes(saved: dict, current: dict) -> list[str]:
    """The config keys (dotted) that differ and would change what is trained."""
    old, new = _flatten(saved), _flatten(current)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)
                  and not any(k == p or k.startswith(p) for p in RESUME_MAY_DIFFER))


def check_same_experiment(saved: dict, current: dict, source: Path) -> None:
    old, new = _flatten(saved), _flatten(current)
    differ = _config_changes(saved, current)
    if differ:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ[:8])
        raise CheckpointError(f"cannot resume from {source}: it was trained with a different "
                              f"config ({shown}). Resume with the original settings, or start "
                              f"a new run in another hydra.run.dir.")


def run(cfg: DictConfig, run_dir: str | Path) -> dict:
    """What ``tools/train.py`` calls: one process, ``trainer.devices`` processes spawned here,
    or this process as one rank of a job whose ranks a launcher started (torchrun, SLURM)."""
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


def _prepare_model(model: torch.nn.Module, t: DictConfig, device: torch.device,
                   info: DistInfo) -> torch.nn.Module:
    """SyncBN and DDP when several processes train, then torch.compile if asked."""
    if info.enabled:
        if t.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model) if t.compile else model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain backbone inside torch.compile and DDP wrappers (what checkpoints hold)."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, DistributedDataParallel) else model


def train(cfg: DictConfig, run_dir: str | Path, info: DistInfo = SINGLE) -> dict:
    """Train and evaluate one run described by ``cfg`` in this process (one rank under DDP);
    results land in ``run_dir``, written by rank 0 only."""
    validate_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t = cfg.trainer
    done = completed_results(run_dir) if t.skip_completed else None
    if done is not None and _config_changes(done.get("config", {}),
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
    config = OmegaConf.to_container(cfg, resolve=True)
    ckpt_path = run_dir / CHECKPOINT_NAME
    if ckpt_path.exists() and not cfg.trainer.resume:
        raise RunExistsError(f"{run_dir} already holds a run (checkpoint {ckpt_path.name}). "
                             f"Pass trainer.resume=true to continue it, or choose another "
                             f"hydra.run.dir for a new run.")
    device = resolve_device(cfg.trainer.device, info)
    seed_everything(cfg.seed)  # the same on every rank: same init, same shuffling
    parts = build_components(cfg, device)
    data, t = parts.data, cfg.trainer
    train_loader = make_loader(data, "train", t.batch_size, train=True, device=device,
                               num_workers=t.num_workers, shard=info, seed=cfg.seed)
    eval_loaders = {which: make_loader(data, which, t.eval_batch_size, train=False,
                                       device=device, num_workers=t.num_workers, shard=info)
                    for which in ("val", "test")}
    parts.method.setup(data, train_loader)
    optimizer = hydra.utils.instantiate(cfg.optimizer)(parts.model.parameters())
    scheduler = SCHEDULERS.build(cfg.scheduler, optimizer=optimizer, epochs=t.epochs,
                                 steps_per_epoch=len(train_loader))
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    autocast = autocast_for(device, t.precision)

    start_epoch, history, train_s = 0, [], 0.0
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        check_same_experiment(state["config"], config, ckpt_path)
        restore_model(parts.model, state["model"], ckpt_path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        parts.method.load_state_dict(state["method"])
        start_epoch, history, train_s = state["epoch"], state["history"], state["train_s"]
        log.info("resuming %s from epoch %d/%d", run_dir, start_epoch, t.epochs)
    elif t.resume:
        log.info("trainer.resume=true but %s has no checkpoint: starting from scratch", run_dir)
    model = _prepare_model(parts.model, t, device, info)

    main = info.is_main
    results: dict[str, Any] = {"config": config, "task": data.task, "seed": cfg.seed,
                               "git_sha": git_sha(), "status": "running"}
    if main:
        write_json_atomic(run_dir / RESULTS_NAME, results)
        if data.label_noise is not None:  # the training labels dataset.label_noise changed
            write_json_atomic(run_dir / LABEL_NOISE_NAME, data.label_noise)
    logger = LOGGERS.build(cfg.logger, run_dir=run_dir, config=config) if main else NullLogger()
    log.info("run %s: %s on %s, method %s, %d epochs on %s%s", run_dir, cfg.backbone.name,
             cfg.dataset.name, parts.method, t.epochs, device,
             f" × {info.world_size} processes" if info.enabled else "")
    try:
        for epoch in range(start_epoch, t.epochs):
            seed_everything(epoch_seed(cfg.seed, epoch))
            parts.method.start_epoch(epoch, t.epochs)
            stats = train_one_epoch(model, train_loader, parts.method, parts.loss_fn, optimizer,
                                    scheduler, scaler, epoch=epoch, device=device,
                                    autocast=autocast,
                                    log_every=t.log_every, progress=t.progress and main,
                                    desc=f"epoch {epoch + 1}/{t.epochs}", info=info)
            train_s += stats.pop("epoch_s")
            record = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0], **stats}
            if (epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs:
                record.update(history_metric(parts.model, eval_loaders["test"], data, device,
                                             autocast, info))
            history.append(record)
            if main:
                save_checkpoint(ckpt_path, {
                    "epoch": epoch + 1, "model": parts.model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "method": parts.method.state_dict(),
                    "history": history, "train_s": train_s, "config": config})
            logger.log_epoch(history)

        eval_start = time.perf_counter()
        figure = run_dir / "reliability.png"
        metrics = evaluate(parts, eval_loaders["val"], eval_loaders["test"],
                           n_bins=cfg.eval.n_bins, autocast=autocast,
                           figure_path=figure if main else None, info=info)
        samples = sum(r["samples"] for r in history)
        results.update(metrics, history=history, status="completed", timings={
            "train_s": train_s, "eval_s": time.perf_counter() - eval_start,
            "samples_per_s": samples / train_s if train_s > 0 else None,
            "processes": info.world_size})
        if main:
            write_json_atomic(run_dir / RESULTS_NAME, results)
        logger.log_results(results, figure if figure.exists() else None)
    except BaseException as err:
        # Leave a record that says what happened; the last good checkpoint stays as it was.
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        results.update(status=status, error=f"{type(err).__name__}: {err}", history=history)
        if main:
            write_json_atomic(run_dir / RESULTS_NAME, results)
        if isinstance(err, NonFiniteLossError):
            kept = (f"The last good checkpoint ({ckpt_path}, epoch {history[-1]['epoch']}) "
                    f"is kept." if history else "No epoch had completed.")
            raise NonFiniteLossError(f"{err}. The run stopped. {kept} Lower optimizer.lr, "
                                     f"check the data, or use trainer.precision=fp32.") from err
        raise
    finally:
        logger.close()
    return results


def evaluate_run(run_dir: str | Path, device: str = "auto") -> dict:
    """Re-evaluate a saved run from its checkpoint and rewrite its results.json (history and
    training time are kept; metrics, temperature and reliability are recomputed)."""
    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    cfg = OmegaConf.create(state["config"])
    torch_device = resolve_device(device)
    parts = build_components(cfg, torch_device)
    restore_model(parts.model, state["model"], run_dir / CHECKPOINT_NAME)
    loaders = [make_loader(parts.data, which, cfg.trainer.eval_batch_size, train=False,
                           device=torch_device) for which in ("val", "test")]
    eval_start = time.perf_counter()
    metrics = evaluate(parts, *loaders, n_bins=cfg.eval.n_bins, autocast=contextlib.nullcontext,
                       figure_path=run_dir / "reliability.png")
    results_path = run_dir / RESULTS_NAME
    try:
        results = read_results(results_path)
    except (OSError, ValueError):
        results = {"config": state["config"], "seed": cfg.seed, "git_sha": git_sha()}
    complete = state["epoch"] == cfg.trainer.epochs
    samples = sum(r["samples"] for r in state["history"])
    results.update(metrics, task=parts.data.task, history=state["history"],
                   status="completed" if complete else "partial",
                   timings={"train_s": state["train_s"],
                            "eval_s": time.perf_counter() - eval_start,
                            "samples_per_s": (samples / state["train_s"] if state["train_s"]
                                              else None)})
    results.pop("error", None)
    write_json_atomic(results_path, results)
    return results
