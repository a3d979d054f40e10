"""The epoch loop, reusable: ``fit`` trains for a number of epochs from a ``FitState``,
checkpointing after each one, and a protocol may call it several times (once per incremental
step, once per expert) with its own checkpoint. ``train_one_epoch`` is the hot loop."""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import hydra.utils
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from mixbench.components import SCHEDULERS, Components
from mixbench.config import check_same_experiment
from mixbench.engine.checkpoint import load_checkpoint, restore_model
from mixbench.engine.context import RunContext
from mixbench.engine.distributed import SINGLE, DistInfo
from mixbench.engine.seeding import derive_seed, seed_everything
from mixbench.errors import NonFiniteLossError
from mixbench.methods import Method
from mixbench.tasks import Task

KEPT_DIR = "checkpoints"  # trainer.keep_every's copies, next to the checkpoint they keep


@dataclass
class FitState:
    """Where a fit stands: epochs done, their history, and the training time so far."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    train_s: float = 0.0


@dataclass
class Training:
    """What one fit updates: the model (``wrapped`` is what the step calls: DDP and
    torch.compile around ``model``), the method, the loss, and the optimisation state."""

    model: torch.nn.Module
    method: Method
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    wrapped: torch.nn.Module | None = None

    @classmethod
    def build(cls, ctx: RunContext, parts: Components, steps_per_epoch: int, epochs: int, *,
              method: Method | None = None, optimizer=None, scheduler=None) -> "Training":
        """The configured optimiser, schedule (over ``epochs``) and AMP scaler for
        ``parts.model``; ``wrap`` it once its weights are final. ``method``, ``optimizer`` and
        ``scheduler`` (configs) replace the run's, e.g. for one step of a protocol."""
        cfg = ctx.cfg
        optimizer = hydra.utils.instantiate(optimizer or cfg.optimizer)(parts.model.parameters())
        scheduler = SCHEDULERS.build(scheduler or cfg.scheduler, optimizer=optimizer,
                                     epochs=epochs, steps_per_epoch=steps_per_epoch)
        scaler = torch.amp.GradScaler(ctx.device.type,
                                      enabled=cfg.trainer.precision == "fp16")
        return cls(parts.model, method or parts.method, parts.loss_fn, optimizer, scheduler,
                   scaler)

    def wrap(self, ctx: RunContext) -> "Training":
        """SyncBN and DDP when several processes train, then torch.compile if asked."""
        self.wrapped = wrap_model(self.model, ctx.cfg.trainer, ctx.device, ctx.info)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "method": self.method.state_dict()}

    def load_state_dict(self, state: dict[str, Any], source: Path) -> None:
        restore_model(self.model, state["model"], source)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.method.load_state_dict(state["method"])


def wrap_model(model: torch.nn.Module, t, device: torch.device,
               info: DistInfo) -> torch.nn.Module:
    if info.enabled:
        if t.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model) if t.compile else model


def checkpoint_state(training: Training, state: FitState, config: dict,
                     **extra: Any) -> dict[str, Any]:
    """A checkpoint of ``training`` after ``state.epoch`` epochs; ``extra`` holds what the
    protocol needs to resume (e.g. an incremental step's memory)."""
    return {"epoch": state.epoch, **training.state_dict(), "history": state.history,
            "train_s": state.train_s, "config": config, **extra}


def fit_state(checkpoint: dict[str, Any]) -> FitState:
    return FitState(checkpoint["epoch"], checkpoint["history"], checkpoint["train_s"])


def resume(training: "Training", checkpoint: Path, config: dict
           ) -> tuple[FitState, dict[str, Any] | None]:
    """Where a fit stands: from ``checkpoint`` when it exists (refused if it was written by
    another experiment; ``training`` restored from it; the saved dict returned for the
    caller's own state), else from the start (None)."""
    if not checkpoint.exists():
        return FitState(), None
    saved = load_checkpoint(checkpoint)
    check_same_experiment(saved["config"], config, checkpoint)
    training.load_state_dict(saved, checkpoint)
    return fit_state(saved), saved


def keep_copy(checkpoint: Path, epoch: int) -> Path:
    """``checkpoint`` as it is now, kept as checkpoints/epoch_NNNN.pt beside it: a hard link
    (last.pt is replaced, never rewritten, so the link keeps this epoch's file), or a copy
    where the file system has no links."""
    kept = checkpoint.parent / KEPT_DIR / f"epoch_{epoch:04d}.pt"
    kept.parent.mkdir(exist_ok=True)
    tmp = kept.with_name(kept.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(checkpoint, tmp)
    except OSError:
        shutil.copyfile(checkpoint, tmp)
    os.replace(tmp, kept)
    return kept


def fit(ctx: RunContext, training: Training, task: Task, train_loader, test_loader, *,
        epochs: int, seed: int, state: FitState, checkpoint: Path,
        extra_state: Callable[[], dict] = dict) -> FitState:
    """Train from ``state`` up to ``epochs`` epochs. Every epoch's randomness comes from
    (``seed``, epoch), so a fit resumed from its checkpoint replays the rest exactly. After
    each epoch: the task's history metric (every ``trainer.eval_every`` epochs and the last),
    the checkpoint (with ``extra_state()``), a kept copy every ``trainer.keep_every`` epochs
    (and of the starting weights), and the logger."""
    t = ctx.cfg.trainer
    ctx.record["history"] = state.history  # what a failure record shows
    if t.keep_every and state.epoch == 0:
        ctx.save_checkpoint(checkpoint, checkpoint_state(training, state, ctx.config,
                                                         **extra_state()))
        if ctx.main:
            keep_copy(checkpoint, 0)
    for epoch in range(state.epoch, epochs):
        seed_everything(derive_seed(seed, epoch))
        training.method.start_epoch(epoch, epochs)
        stats = train_one_epoch(training.wrapped, train_loader, training.method,
                                training.loss_fn, training.optimizer, training.scheduler,
                                training.scaler, task=task, epoch=epoch, device=ctx.device,
                                autocast=ctx.autocast, log_every=t.log_every,
                                progress=t.progress and ctx.main,
                                desc=f"epoch {epoch + 1}/{epochs}", info=ctx.info)
        state.train_s += stats.pop("epoch_s")
        record = {"epoch": epoch + 1, "lr": training.scheduler.get_last_lr()[0], **stats}
        if (epoch + 1) % t.eval_every == 0 or epoch + 1 == epochs:
            record.update(task.history_metric(training.model, test_loader, ctx.device,
                                              ctx.autocast, ctx.info))
            if ctx.cfg.get("eval", {}).get("top1_heads", "model") == "best":
                record.update(heads_history(task, training.method, test_loader, ctx))
        state.history.append(record)
        state.epoch = epoch + 1
        ctx.save_checkpoint(checkpoint, checkpoint_state(training, state, ctx.config,
                                                         **extra_state()))
        if ctx.main and t.keep_every and state.epoch % t.keep_every == 0:
            keep_copy(checkpoint, state.epoch)
        ctx.logger.log_epoch(state.history)
    return state


def heads_history(task: Task, method: Method, loader, ctx: RunContext) -> dict:
    """The task's history metric for each of the method's other heads, as KEY_HEAD (e.g.
    ``test_top1_ema``): what the headline's ``eval.top1_heads=best`` chooses from."""
    out = {}
    for name, head in method.eval_heads().items():
        metrics = task.history_metric(head, loader, ctx.device, ctx.autocast, ctx.info)
        out.update({f"{key}_{name}": value for key, value in metrics.items()})
    return out


def train_one_epoch(model, loader, method: Method, loss_fn, optimizer, scheduler, scaler, *,
                    epoch: int, task: Task, device: torch.device,
                    autocast=contextlib.nullcontext, log_every: int = 50, progress: bool = True,
                    desc: str = "", info: DistInfo = SINGLE) -> dict:
    """One pass over ``loader``. The loss and the task's sums (e.g. correct predictions) stay
    on the device and are read every ``log_every`` steps (also to stop on a non-finite loss),
    so the GPU is not synced per step. A batch is (x, y) or (x, y, index); the method gets it
    whole. Under DDP the sums are all-reduced when read, so every rank reports (and stops on)
    the same numbers."""
    model.train()
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    # The loss sum and the task's sums stay on the device, read every log_every steps; one
    # in-place add each per step (the samples are counted on the host).
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    task_sums = [torch.zeros((), device=device, dtype=torch.float64) for _ in task.train_sums]
    seen, steps = 0, len(loader)
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for step, batch in enumerate(loader):
        batch = tuple(t.to(device, non_blocking=True) for t in batch)
        y = batch[1]
        with autocast():
            out = method.step(model, batch, loss_fn)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out.loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_sum.add_(out.loss.detach(), alpha=len(y))
        for total, value in zip(task_sums, task.step_sums(out.logits, y)):
            total.add_(value)
        seen += len(y)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            totals = torch.stack([loss_sum, loss_sum.new_tensor(seen), *task_sums])
            if info.enabled:
                dist.all_reduce(totals)
            total_loss, total_seen, *sums = totals.tolist()
            mean_loss = total_loss / total_seen
            if not torch.isfinite(torch.tensor(mean_loss)):
                bar.close()
                raise NonFiniteLossError(f"the training loss became {mean_loss} at epoch "
                                         f"{epoch + 1}, step {step + 1}")
            rate = total_seen / (time.perf_counter() - start)
            shown = {label: f"{s / total_seen:.3f}"
                     for (_, label), s in zip(task.train_sums, sums)}
            bar.set_postfix(loss=f"{mean_loss:.4f}", **shown, img_s=f"{rate:.0f}")
            bar.update(step + 1 - bar.n)
    bar.close()
    elapsed = time.perf_counter() - start
    stats = {"train_loss": total_loss / total_seen,
             **{key: s / total_seen for (key, _), s in zip(task.train_sums, sums)}}
    return {**stats, "samples": int(total_seen), "epoch_s": elapsed,
            "samples_per_s": total_seen / elapsed}
