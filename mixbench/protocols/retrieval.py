"""Metric learning (``protocol=retrieval``): train an embedding on some classes, retrieve
among classes never seen in training (docs/metric-learning.md).

The dataset is split by class (``train_classes``; CUB-200, Cars-196 and SOP come split as
published), the backbone gets an embedding head (``embedding_dim``, L2-normalised,
``pooling``, BatchNorm frozen with ``freeze_bn``), batches hold ``m_per_class`` images of
each class, and the first ``warmup_epochs`` train only the embedding layer (and a loss's
proxies), as the official Metrix main.py L191-203 does. ``+method=metrix`` mixes inside the
pair loss; no method is the plain loss.

results.json: ``test`` holds the final epoch's Recall@K (``ks``), MAP@R, NMI and
utilisation; the ``retrieval`` section holds the epoch with the best test R@1 and its
Recall@K, which is what the official code reports (main.py L244-248: selection on the test
set), labelled as such."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import time

import hydra.utils
import torch
from torch.utils.data import DataLoader

from mixbench.components import DATASETS, SCHEDULERS, TASKS
from mixbench.data import make_loader
from mixbench.data.bundle import Split
from mixbench.data.retrieval import (MPerClassBatches, MPerClassLoader, split_by_class,
                                     split_labels)
from mixbench.engine.checkpoint import CHECKPOINT_NAME
from mixbench.engine.context import RunContext
from mixbench.engine.fit import FitState, Training, fit, resume
from mixbench.eval.retrieval import NMI_STARTS
from mixbench.errors import ConfigError
from mixbench.models.embedding import EmbeddingNet
from mixbench.protocols.base import Protocol
from mixbench.registry import PROTOCOLS
from mixbench.results.sections import Section, register_section
from mixbench.results.record import completed_record
from mixbench.tasks.retrieval import BEST

log = logging.getLogger(__name__)


@contextlib.contextmanager
def train_only(model: torch.nn.Module, keep: list[torch.nn.Parameter]):
    """Parameters of ``model`` outside ``keep`` frozen inside the block, restored after."""
    kept = {id(p) for p in keep}
    before = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        if id(p) not in kept:
            p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in before.items():
            p.requires_grad_(flag)


def best_epoch(history: list[dict], ks) -> dict:
    """The evaluated epoch with the highest test R@1 (the first of equals) and its Recall@K."""
    scored = [r for r in history if r.get("test_recall@1") is not None]
    if not scored:
        return {}
    best = max(scored, key=lambda r: r["test_recall@1"])
    return {"best_epoch": best["epoch"], "selected_on": "test",
            **{f"{BEST}recall@{k}": best[f"test_recall@{k}"] for k in ks}}


@PROTOCOLS.register("retrieval")
class Retrieval(Protocol):
    name = "retrieval"

    def __init__(self, *, train_classes: list[int] | None = None, embedding_dim: int = 128,
                 pooling: str = "avg", freeze_bn: bool = False, warmup_epochs: int = 0,
                 m_per_class: int = 10, ks=(1, 2, 4, 8), nmi_starts: int = NMI_STARTS):
        if warmup_epochs < 0:
            raise ConfigError(f"protocol.warmup_epochs must be >= 0, got {warmup_epochs}")
        self.train_classes = train_classes
        self.embedding_dim, self.pooling, self.freeze_bn = embedding_dim, pooling, freeze_bn
        self.warmup_epochs, self.m = warmup_epochs, m_per_class
        self.ks = list(ks)
        if not isinstance(nmi_starts, int) or nmi_starts < 1:
            raise ConfigError(f"protocol.nmi_starts must be a positive integer (k-means "
                              f"starts per NMI), got {nmi_starts!r}")
        self.nmi_starts = nmi_starts

    def build(self, ctx: RunContext):
        """The class-split data and the run's parts: the backbone with its embedding head,
        the loss (with its proxies), the retrieval task with ``ks``."""
        cfg = ctx.cfg
        data = DATASETS.build(cfg.dataset)
        data = split_by_class(dataclasses.replace(data, name=cfg.dataset.name),
                              self.train_classes)
        parts = self.components(
            ctx, data=data, task=TASKS.build({"name": "retrieval", "ks": self.ks,
                                          "nmi_starts": self.nmi_starts}, data=data),
            head=lambda backbone: EmbeddingNet(backbone, self.embedding_dim,
                                               pooling=self.pooling, freeze_bn=self.freeze_bn),
            loss_options={"num_classes": data.num_classes, "embedding_dim": self.embedding_dim})
        parts.loss_fn.to(ctx.device)  # a proxy loss's proxies
        return parts

    def loaders(self, ctx: RunContext, data):
        t = ctx.cfg.trainer
        if isinstance(data.train, Split):
            train = MPerClassLoader(data.train, t.batch_size, self.m, device=ctx.device,
                                    mean=data.mean, std=data.std, augment=data.augment,
                                    shard=ctx.info)
        else:
            batches = MPerClassBatches(split_labels(data.train), self.m, t.batch_size, ctx.info)
            train = DataLoader(data.train, batch_sampler=batches, num_workers=t.num_workers,
                               pin_memory=ctx.device.type == "cuda",
                               persistent_workers=t.num_workers > 0)
        reference, test = (make_loader(data, split, t.eval_batch_size, train=False,
                                       device=ctx.device, num_workers=t.num_workers,
                                       shard=ctx.info) for split in ("val", "test"))
        return train, reference, test

    def training(self, ctx: RunContext, parts, steps_per_epoch: int) -> Training:
        """The configured optimiser over the model, plus a loss's own parameters (proxies)
        at lr × the loss's ``lr_multiplier``."""
        cfg = ctx.cfg
        groups = [{"params": list(parts.model.parameters())}]
        own = list(parts.loss_fn.parameters())
        if own:
            groups.append({"params": own, "lr": cfg.optimizer.lr * parts.loss_fn.lr_multiplier})
        optimizer = hydra.utils.instantiate(cfg.optimizer)(groups)
        scheduler = SCHEDULERS.build(cfg.scheduler, optimizer=optimizer, epochs=cfg.trainer.epochs,
                                     steps_per_epoch=steps_per_epoch)
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.trainer.precision == "fp16")
        return Training(parts.model, parts.method, parts.loss_fn, optimizer, scheduler, scaler)

    def __call__(self, ctx: RunContext) -> dict:
        cfg, t = ctx.cfg, ctx.cfg.trainer
        if t.init_from:
            raise ConfigError("protocol=retrieval does not start from another run "
                              "(trainer.init_from); start from pretrained weights with "
                              "backbone=timm backbone.checkpoint=PATH")
        parts = self.build(ctx)
        train, reference, test = self.loaders(ctx, parts.data)
        parts.method.setup(parts.data, train)
        training = self.training(ctx, parts, len(train))
        checkpoint = ctx.run_dir / CHECKPOINT_NAME
        state, saved = resume(training, checkpoint, ctx.config)
        if saved is not None:
            parts.loss_fn.load_state_dict(saved["loss"])
            log.info("resuming %s from epoch %d/%d", ctx.run_dir, state.epoch, t.epochs)
        ctx.write_results(task=parts.task.name)
        log.info("run %s: retrieval on %s (%d training classes), %s, method %s, %d epochs",
                 ctx.run_dir, cfg.dataset.name, parts.data.num_classes, cfg.loss.name,
                 parts.method, t.epochs)

        def run_fit(epochs: int) -> FitState:
            training.wrap(ctx)  # again after warm-up: DDP registers what requires grad
            return fit(ctx, training, parts.task, train, test, epochs=epochs, seed=cfg.seed,
                       state=state, checkpoint=checkpoint,
                       extra_state=lambda: {"processes": ctx.info.world_size,
                                            "loss": parts.loss_fn.state_dict()})

        warm = min(self.warmup_epochs, t.epochs)
        if state.epoch < warm:  # the embedding layer (and proxies: not in the model) only
            with train_only(parts.model, parts.model.head_parameters()):
                state = run_fit(warm)
        state = run_fit(t.epochs)

        start = time.perf_counter()
        metrics = parts.task.evaluate(parts.model, reference, test, ctx.device,
                                      n_bins=cfg.eval.n_bins, autocast=ctx.autocast,
                                      info=ctx.info)
        ctx.record = completed_record(ctx.record, metrics=metrics, history=state.history,
                                      train_s=state.train_s,
                                      eval_s=time.perf_counter() - start,
                                      processes=ctx.info.world_size)
        section = {"train_classes": parts.data.num_classes,
                   "test_classes": len(torch.unique(split_labels(parts.data.test))),
                   "ks": parts.task.ks, **best_epoch(state.history, parts.task.ks)}
        results = ctx.write_results(retrieval=section)
        log.info("test (final epoch): %s", parts.task.summary(results))
        ctx.logger.log_results(results, None)
        return results


# The epoch with the best test R@1 and its Recall@K (the official Metrix code's number:
# test-set selection). No leading columns: the retrieval task's own columns show them after
# the final epoch's, which rank the rows.
register_section(Section("retrieval"))
