"""Expert trajectories for dataset distillation (``protocol=experts``): ``num_experts``
training runs, each in its own folder ``expert_NNN/`` keeping its weights every epoch
(``trainer.keep_every=1``). Plain experts are MTT's (SGD lr 0.01, no momentum, 50 epochs,
DSA); ``smooth=true`` makes AST's: the loss × 0.5 → 0.95 over epochs 0–9, a gradient penalty
2·mean((‖∂Σf/∂x‖ − 1)²), SGD momentum 0.9, weight decay 1e-3, lr × 0.6 at epoch 26. Each
expert resumes from its own checkpoint; a finished one is not trained again.
``protocol=distill`` matches them (docs/distillation.md)."""
from __future__ import annotations

import dataclasses
import logging
import statistics

import torch
from omegaconf import OmegaConf

from mixbench.components import BACKBONES, METHODS
from mixbench.distill.augment import DSA
from mixbench.distill.smooth import AugmentedStep
from mixbench.distill.trajectories import kept_path, prepared_data
from mixbench.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from mixbench.engine.context import RunContext
from mixbench.engine.fit import Training, fit, resume
from mixbench.engine.seeding import derive_seed, seed_everything
from mixbench.engine.rundir import refuse_overwrite
from mixbench.errors import ConfigError
from mixbench.protocols.base import Protocol
from mixbench.results.record import timings
from mixbench.registry import PROTOCOLS
from mixbench.results.columns import Column
from mixbench.results.sections import Section, register_section

log = logging.getLogger(__name__)
EARLY = 10  # the epochs AST's loss scale covers: the smoothness is compared there


@PROTOCOLS.register("experts")
class Experts(Protocol):
    name = "experts"
    task = "classification"
    one_process = "trains its experts one after another in one process"

    def __init__(self, *, num_experts: int = 100, smooth: bool = False, dsa: bool = True,
                 dsa_strategy: str = "color_crop_cutout_flip_scale_rotate", zca: bool = False,
                 loss_scale_start: float = 0.5, loss_scale_epochs: int = 10,
                 gp_weight: float = 2.0, smooth_optimizer: dict | None = None,
                 smooth_scheduler: dict | None = None):
        if not isinstance(num_experts, int) or num_experts < 1:
            raise ConfigError(f"protocol.num_experts must be a positive integer, got "
                              f"{num_experts!r}")
        self.num_experts, self.smooth, self.zca = num_experts, bool(smooth), bool(zca)
        self.dsa = DSA(dsa_strategy) if dsa else None
        self.loss_scale_start, self.loss_scale_epochs = loss_scale_start, loss_scale_epochs
        self.gp_weight = gp_weight
        # AST's recipe unless the config gives one (mixbench/configs/protocol/experts.yaml does)
        self.smooth_optimizer = dict(smooth_optimizer if smooth_optimizer is not None else
                                     {"momentum": 0.9, "weight_decay": 1e-3, "lr": None})
        self.smooth_scheduler = dict(smooth_scheduler if smooth_scheduler is not None else
                                     {"name": "step", "milestones": [26], "gamma": 0.6})

    def method(self, cfg, num_classes: int) -> AugmentedStep:
        inner = METHODS.build(cfg.method, num_classes=num_classes)
        if not self.smooth:
            return AugmentedStep(inner, self.dsa)
        return AugmentedStep(inner, self.dsa, scale_start=self.loss_scale_start,
                             scale_epochs=self.loss_scale_epochs, gp_weight=self.gp_weight)

    def recipe(self, cfg):
        """The optimiser and schedule: the run's, with AST's recipe over them when smooth."""
        if not self.smooth:
            return cfg.optimizer, cfg.scheduler
        changes = {k: v for k, v in self.smooth_optimizer.items() if v is not None}
        optimizer = OmegaConf.merge(cfg.optimizer, changes)
        scheduler = OmegaConf.create(self.smooth_scheduler) if self.smooth_scheduler \
            else cfg.scheduler
        return optimizer, scheduler

    def __call__(self, ctx: RunContext) -> dict:
        cfg, t = ctx.cfg, ctx.cfg.trainer
        if t.keep_every != 1:
            raise ConfigError(f"protocol=experts keeps every epoch of each trajectory: "
                              f"trainer.keep_every must be 1, got {t.keep_every}")
        parts = self.components(ctx)
        data = prepared_data(parts.data, self.zca, keep_augment=self.dsa is None)
        train = self.loader(ctx, data, "train", train=True, shard=False)
        test = self.loader(ctx, data, "test", shard=False)
        optimizer, scheduler = self.recipe(cfg)
        started = sorted(ctx.run_dir.glob(f"expert_*/{CHECKPOINT_NAME}"))
        if started:
            refuse_overwrite(started[0], resume=t.resume)
        ctx.write_results(task=parts.task.name)
        log.info("run %s: %d %s experts of %s on %s, %d epochs each", ctx.run_dir,
                 self.num_experts, "smooth (AST)" if self.smooth else "plain (MTT)",
                 cfg.backbone.name, cfg.dataset.name, t.epochs)

        records, history, changes = [], [], []
        for k in range(self.num_experts):
            folder = ctx.run_dir / f"expert_{k:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            checkpoint = folder / CHECKPOINT_NAME
            seed = derive_seed(cfg.seed, k)
            seed_everything(seed)  # the expert's initialisation
            model = BACKBONES.build(cfg.backbone, num_classes=data.num_classes,
                                    in_channels=data.in_channels).to(ctx.device)
            expert = dataclasses.replace(parts, model=model, data=data,
                                         method=self.method(cfg, data.num_classes))
            training = Training.build(ctx, expert, len(train), t.epochs, optimizer=optimizer,
                                      scheduler=scheduler)
            state, _ = resume(training, checkpoint, ctx.config)
            training.wrap(ctx)
            if state.epoch < t.epochs:
                log.info("expert %d/%d from epoch %d", k + 1, self.num_experts, state.epoch)
                state = fit(ctx, training, parts.task, train, test, epochs=t.epochs, seed=seed,
                            state=state, checkpoint=checkpoint,
                            extra_state=lambda: {"expert": k})
            records.append({"expert": k, "top1": state.history[-1].get("test_top1"),
                            "train_s": state.train_s})
            history += [{"expert": k, **r} for r in state.history]
            changes.append(parameter_changes(folder, t.epochs))

        per_epoch = [statistics.fmean(c[e] for c in changes) for e in range(t.epochs)]
        tops = [r["top1"] for r in records if r["top1"] is not None]
        section = {"num_experts": self.num_experts, "smooth": self.smooth,
                   "expert_top1": statistics.fmean(tops),
                   "expert_top1_std": statistics.pstdev(tops),
                   "change_early": statistics.fmean(per_epoch[:EARLY]),
                   "change_late": statistics.fmean(per_epoch[EARLY:] or per_epoch),
                   "param_change": per_epoch, "experts": records}
        train_s = sum(r["train_s"] for r in records)
        samples = sum(r.get("samples", 0) for r in history)
        return ctx.write_results(test={"top1": section["expert_top1"]}, experts=section,
                                 history=history, status="completed",
                                 timings=timings(train_s, 0.0, samples=samples))


def parameter_changes(folder, epochs: int) -> list[float]:
    """‖θ_{e+1} − θ_e‖ for e = 0 … epochs−1, from an expert's kept weights: how far each
    epoch moves the parameters (AST's smoothness claim is about the early epochs)."""
    def flat(epoch):
        model = load_checkpoint(kept_path(folder, epoch))["model"]
        return torch.cat([v.float().flatten() for v in model.values() if v.is_floating_point()])

    out, previous = [], flat(0)
    for epoch in range(1, epochs + 1):
        current = flat(epoch)
        out.append((current - previous).norm().item())
        previous = current
    return out



# Final test top-1 and the mean per-epoch parameter change ‖Δθ‖ (AST's smoothness) over
# epochs 1-10 and after.
register_section(Section(
    "experts",
    columns=(Column("expert_top1", "expert top-1 %", 100, True, 2),
             Column("change_early", "‖Δθ‖/epoch, first 10", 1, None, 3),
             Column("change_late", "‖Δθ‖/epoch, later", 1, None, 3))))
