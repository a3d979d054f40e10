"""Class-incremental learning (``protocol=class_incremental``): the classes arrive in steps
(``initial``, then ``increment`` at a time, in an order drawn from ``class_order_seed``); each
step trains on its new classes plus an exemplar memory of the old ones, with the classifier
head grown by the new classes, and is then tested on every class seen so far.

Learners: ``finetune`` (no memory), ``replay`` (memory), ``kd`` (memory and distillation from
the previous step's model, λ = old / seen classes, T = ``temperature``), ``wa`` (``kd`` plus
Weight Aligning of the new head rows after each step; ``clip_weights`` also keeps the head's
weights non-negative, as the WA paper does and PyCIL does not). The method of ``+method=``
trains inside every step, on batches of new samples and exemplars alike."""
from __future__ import annotations

import copy
import dataclasses
import logging

import torch
from omegaconf import OmegaConf

from mixbench.components import METHODS
from mixbench.continual.classes import ClassSteps, rows_of
from mixbench.continual.kd import Distilled
from mixbench.continual.head import clip_head_weights, grow_head, row_norms, weight_align
from mixbench.continual.memory import ExemplarMemory
from mixbench.continual.steps import (evaluate_step, finish, log_step, resume_point,
                                      save_step_end)
from mixbench.data import InMemoryLoader, make_loader
from mixbench.engine.checkpoint import CHECKPOINT_NAME, restore_model
from mixbench.engine.context import RunContext
from mixbench.engine.fit import FitState, Training, fit, resume
from mixbench.engine.seeding import derive_seed, seed_everything
from mixbench.errors import ConfigError
from mixbench.protocols.base import Protocol
from mixbench.registry import PROTOCOLS
from mixbench.tasks import task_for

log = logging.getLogger(__name__)
LEARNERS = ("finetune", "replay", "kd", "wa")
LATER_KEYS = {"epochs", "optimizer", "scheduler"}


@PROTOCOLS.register("class_incremental")
class ClassIncremental(Protocol):
    name = "class_incremental"
    task = "classification"

    def __init__(self, *, initial: int = 2, increment: int = 2,
                 class_order_seed: int | None = 1993, learner: str = "replay",
                 memory: int | None = 2000, memory_per_class: int | None = None,
                 selection: str = "herding", temperature: float = 2.0,
                 clip_weights: bool = False, later: dict | None = None):
        if learner not in LEARNERS:
            raise ConfigError(f"protocol.learner must be one of {LEARNERS}, got {learner!r}")
        if not temperature > 0:
            raise ConfigError(f"protocol.temperature must be > 0, got {temperature}")
        later = dict(later or {})
        if set(later) - LATER_KEYS:
            raise ConfigError(f"protocol.later takes {sorted(LATER_KEYS)} (what changes after "
                              f"the first step), got {sorted(later)}")
        self.initial, self.increment, self.seed = initial, increment, class_order_seed
        self.learner, self.temperature, self.clip = learner, float(temperature), clip_weights
        self.memory = None if learner == "finetune" else ExemplarMemory(
            total=memory, per_class=memory_per_class, selection=selection)
        self.later = later

    def step_recipe(self, cfg, step: int):
        """Epochs, optimiser and schedule of a step: the run's, with ``later`` after the
        first step (PyCIL's WA trains the first step longer, with other milestones)."""
        if step == 0:
            return cfg.trainer.epochs, cfg.optimizer, cfg.scheduler
        merged = [OmegaConf.merge(base, self.later.get(key) or {})
                  for key, base in (("optimizer", cfg.optimizer), ("scheduler", cfg.scheduler))]
        return self.later.get("epochs") or cfg.trainer.epochs, *merged

    def __call__(self, ctx: RunContext) -> dict:
        cfg, t = ctx.cfg, ctx.cfg.trainer
        parts = self.components(ctx)
        model = parts.model
        steps = ClassSteps.of(parts.data, self.seed, self.initial, self.increment)
        ranges, data, train = steps.ranges, steps.data, steps.data.train
        candidates = InMemoryLoader(train, t.eval_batch_size, shuffle=False, drop_last=False,
                                    device=ctx.device, mean=data.mean, std=data.std)

        start = resume_point(ctx)
        records, history, metrics = start.records, start.history, start.metrics
        if start.model is not None:
            grow_head(model, ranges[start.step - 1][1])
            restore_model(model, start.model, "the previous step's checkpoint")
        if self.memory is not None and start.memory is not None:
            self.memory.load_state_dict(start.memory)
        ctx.write_results(task=parts.task.name)
        log.info("run %s: %d steps of classes %s, learner %s, method %s", ctx.run_dir,
                 len(ranges), [b - a for a, b in ranges], self.learner, cfg.method.name)

        for step in range(start.step, len(ranges)):
            low, high = ranges[step]
            # every step's randomness (new head rows, then fit's epochs) from (seed, step):
            # a run resumed at this step draws what the uninterrupted run drew
            step_seed = derive_seed(cfg.seed, step)
            seed_everything(step_seed)
            teacher = copy.deepcopy(model) if step > 0 and self.learner in ("kd", "wa") else None
            grow_head(model, high)
            rows = rows_of(train, low, high)  # the step's classes, and the exemplars
            if self.memory is not None:
                rows = torch.cat([rows, self.memory.indices()])
            step_data = dataclasses.replace(steps.seen(step, rows), num_classes=high)
            task = task_for(step_data)
            train_loader, val_loader, test_loader = step_loaders(ctx, step_data)
            method = METHODS.build(cfg.method, num_classes=high)
            if teacher is not None:
                method = Distilled(method, teacher, low, self.temperature)
            method.start_step(low)
            method.setup(step_data, train_loader)
            epochs, optimizer, scheduler = self.step_recipe(cfg, step)
            training = Training.build(ctx, parts, len(train_loader), epochs, method=method,
                                      optimizer=optimizer, scheduler=scheduler)
            state = FitState()
            if start.inside is not None and step == start.step:  # stopped during this step
                state, _ = resume(training, ctx.run_dir / CHECKPOINT_NAME, ctx.config)
                log.info("resuming step %d at epoch %d/%d", step + 1, state.epoch, epochs)
            clipping = clip_head_weights(model, training.optimizer) if self.clip else None
            training.wrap(ctx)
            memory_state = self.memory.state_dict() if self.memory is not None else None
            state = fit(ctx, training, task, train_loader, test_loader, epochs=epochs,
                        seed=step_seed, state=state,
                        checkpoint=ctx.run_dir / CHECKPOINT_NAME,
                        extra_state=lambda: {"step": step, "memory": memory_state,
                                             "records": records, "past_history": history})
            if clipping is not None:
                clipping.remove()

            record = {"step": step, "classes": steps.classes(step), "seen": high,
                      "epochs": epochs, "train_s": state.train_s, "samples": len(rows),
                      **(self.align_head(model.head, low) if step else {})}
            metrics, evaluation = evaluate_step(ctx, task, model, val_loader, test_loader,
                                                ranges[:step + 1], step == len(ranges) - 1)
            record.update(evaluation)
            records.append(record)
            history += [{"step": step, **r} for r in state.history]
            if self.memory is not None:
                self.select_exemplars(model, train, candidates, range(low, high), high,
                                      step_seed)
            save_step_end(ctx, step, model, self.memory.state_dict() if self.memory else None,
                          records, history, metrics)
            log_step(log, step, len(ranges), steps.classes(step), record)

        return finish(ctx, metrics, records, history, steps.order)

    def align_head(self, head, n_old: int) -> dict:
        """The new rows' mean norm over the old rows', before and after Weight Aligning
        (``wa``: γ too; the other learners leave the head as it is)."""
        old, new = row_norms(head, n_old)
        aligned = {"norm_ratio_before": new / old}
        if self.learner == "wa":
            aligned["gamma"] = weight_align(head, n_old)
            old, new = row_norms(head, n_old)
        return {**aligned, "norm_ratio_after": new / old}

    @torch.no_grad()
    def select_exemplars(self, model, train, candidates: InMemoryLoader, new: range,
                         seen: int, seed: int) -> None:
        """The memory after a step: herding on the model's features (no augmentation), or a
        random choice seeded by the step."""
        model.eval()

        def features(rows):
            return torch.cat([model.forward_features(candidates.fetch(chunk, augment=False)[0])
                              for chunk in rows.split(candidates.batch_size)])

        by_class = {c: rows_of(train, c, c + 1) for c in new}
        self.memory.update(new, seen, {c: r.to(candidates.device) for c, r in by_class.items()},
                           features, torch.Generator().manual_seed(seed))


def step_loaders(ctx: RunContext, data):
    """A step's training loader (its new classes and the exemplars) and the evaluation
    loaders of the classes seen so far."""
    t = ctx.cfg.trainer
    train = make_loader(data, "train", t.batch_size, train=True, device=ctx.device,
                        shard=ctx.info, seed=ctx.cfg.seed)
    return (train, *(make_loader(data, split, t.eval_batch_size, train=False, device=ctx.device,
                                 shard=ctx.info) for split in ("val", "test")))
