"""Online class-incremental learning (``protocol=online``): one pass over a stream whose
classes arrive ``increment`` at a time (order from ``class_order_seed``); every stream batch
(``stream_batch`` samples) is trained on together with ``memory_batch`` samples retrieved at
random from a reservoir buffer of ``memory`` samples, which then sees the stream batch
(Experience Replay in Mai et al.'s online protocol). The head has every class from the start.
After each step (the stream's share of its classes) the model is tested on every class seen
so far. The method of ``+method=`` trains on each joined batch (``dualmix`` mixes old with
new samples there).

Where this differs from Mai et al.'s code: the stream and memory batches are one batch (the
mean loss over both), where ER there sums the two batches' mean losses."""
from __future__ import annotations

import logging
import math

import torch

from mixbench.continual.classes import ClassSteps, rows_of
from mixbench.continual.memory import ReservoirBuffer
from mixbench.continual.steps import (evaluate_step, finish, log_step, resume_point,
                                      save_step_end)
from mixbench.data import InMemoryLoader, make_loader
from mixbench.engine.checkpoint import CHECKPOINT_NAME
from mixbench.engine.context import RunContext
from mixbench.engine.fit import FitState, Training, fit, resume
from mixbench.engine.seeding import derive_seed
from mixbench.errors import ConfigError
from mixbench.protocols.base import Protocol
from mixbench.registry import PROTOCOLS
from mixbench.tasks import task_for

log = logging.getLogger(__name__)


class ReplayStream:
    """One pass over ``rows`` (training rows, in stream order) in batches of
    ``stream_batch``, each joined by up to ``memory_batch`` rows drawn from ``buffer``; the
    buffer is offered each stream batch after the step that trained on it."""

    def __init__(self, rows: torch.Tensor, loader: InMemoryLoader, buffer: ReservoirBuffer,
                 stream_batch: int, memory_batch: int, generator: torch.Generator):
        self.rows, self.loader, self.buffer = rows, loader, buffer
        self.stream_batch, self.memory_batch, self.generator = (stream_batch, memory_batch,
                                                                generator)

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.stream_batch)

    def __iter__(self):
        for i in range(len(self)):
            new = self.rows[i * self.stream_batch:(i + 1) * self.stream_batch]
            rows = torch.cat([new, self.buffer.sample(self.memory_batch, self.generator)])
            device = self.loader.device
            if device.type == "cuda":  # a pinned copy is queued, a pageable one waits
                rows = rows.pin_memory()
            yield self.loader.fetch(rows.to(device, non_blocking=True))
            self.buffer.add(new, self.generator)


@PROTOCOLS.register("online")
class Online(Protocol):
    name = "online"
    task = "classification"
    one_process = "trains on one stream in one process"

    def __init__(self, *, increment: int = 2, class_order_seed: int | None = 1993,
                 memory: int = 200, stream_batch: int = 10, memory_batch: int = 10):
        if stream_batch < 1 or memory_batch < 0:
            raise ConfigError(f"protocol.stream_batch must be >= 1 and protocol.memory_batch "
                              f">= 0, got {stream_batch} and {memory_batch}")
        self.increment, self.seed = increment, class_order_seed
        self.buffer = ReservoirBuffer(memory)
        self.stream_batch, self.memory_batch = stream_batch, memory_batch

    def __call__(self, ctx: RunContext) -> dict:
        cfg, t = ctx.cfg, ctx.cfg.trainer
        if t.epochs != 1:
            raise ConfigError(f"protocol=online makes one pass over the stream: "
                              f"trainer.epochs must be 1, got {t.epochs}")
        parts = self.components(ctx)
        model = parts.model
        steps = ClassSteps.of(parts.data, self.seed, self.increment, self.increment)
        ranges, train = steps.ranges, steps.data.train
        fetch = make_loader(steps.data, "train", self.stream_batch, train=True,
                            device=ctx.device)  # (its augmentation; rows come from the stream)
        total = sum(math.ceil(len(rows_of(train, a, b)) / self.stream_batch) for a, b in ranges)
        training = Training.build(ctx, parts, total, 1)  # one schedule over the whole stream

        start = resume_point(ctx)
        records, history, metrics = start.records, start.history, start.metrics
        inside = FitState()
        if start.inside is not None:  # stopped during a step: its checkpoint
            inside, _ = resume(training, ctx.run_dir / CHECKPOINT_NAME, ctx.config)
        elif start.model is not None:  # after a step that ended: model, optimiser, method
            training.load_state_dict(start.memory["training"], "the previous step's checkpoint")
        if start.memory is not None:
            self.buffer.load_state_dict(start.memory["buffer"])
        training.wrap(ctx)
        ctx.write_results(task=parts.task.name)
        log.info("run %s: a stream of %d steps of classes %s, memory %d, method %s",
                 ctx.run_dir, len(ranges), [b - a for a, b in ranges], self.buffer.size,
                 cfg.method.name)

        for step in range(start.step, len(ranges)):
            low, high = ranges[step]
            step_seed = derive_seed(cfg.seed, step)  # the step's draws, the same on resume
            generator = torch.Generator().manual_seed(step_seed)
            rows = rows_of(train, low, high)
            rows = rows[torch.randperm(len(rows), generator=generator)]
            stream = ReplayStream(rows, fetch, self.buffer, self.stream_batch,
                                  self.memory_batch, generator)
            seen = steps.seen(step)
            task = task_for(seen)
            val_loader, test_loader = (make_loader(seen, split, t.eval_batch_size, train=False,
                                                   device=ctx.device)
                                       for split in ("val", "test"))
            training.method.start_step(low)
            training.method.setup(seen, stream)
            state = inside if start.inside is not None and step == start.step else FitState()

            state = fit(ctx, training, task, stream, test_loader, epochs=1,
                        seed=step_seed, state=state,
                        checkpoint=ctx.run_dir / CHECKPOINT_NAME,
                        extra_state=lambda: {"step": step,
                                             "memory": {"buffer": self.buffer.state_dict()},
                                             "records": records, "past_history": history})
            metrics, evaluation = evaluate_step(ctx, task, model, val_loader, test_loader,
                                                ranges[:step + 1], step == len(ranges) - 1)
            record = {"step": step, "classes": steps.classes(step), "seen": high,
                      "train_s": state.train_s, "samples": len(rows),
                      "memory_size": len(self.buffer.rows), **evaluation}
            records.append(record)
            history += [{"step": step, **r} for r in state.history]
            # the step's end carries the optimiser too: the stream's next step continues it
            save_step_end(ctx, step, model, {"buffer": self.buffer.state_dict(),
                                             "training": training.state_dict()},
                          records, history, metrics)
            log_step(log, step, len(ranges), steps.classes(step), record)

        return finish(ctx, metrics, records, history, steps.order)
