"""A protocol decides what a run does with its context: which fits, which evaluations, what
goes into results.json. ``PROTOCOLS.build(cfg.protocol)`` makes one from its config group
(``mixbench/configs/protocol/NAME.yaml``: ``name`` plus the protocol's options); calling it
runs it.

The base class gives every protocol the same start: ``components`` (seeded, built and checked:
the task the protocol is made for, one process where it needs one) and ``loader`` (a split
with the trainer's batch size, workers and DDP shard)."""
from __future__ import annotations

from mixbench.components import Components, build_components
from mixbench.data import DataBundle, make_loader
from mixbench.engine.context import RunContext
from mixbench.engine.seeding import seed_everything
from mixbench.errors import ConfigError
from mixbench.tasks import require_task


class Protocol:
    name: str
    task: str | None = None  # the one task the protocol is made for (None: any)
    one_process: str | None = None  # why it runs in one process (None: DDP works)

    def __call__(self, ctx: RunContext) -> dict:
        """Run, write results.json through ``ctx`` (with a ``task`` and this protocol's own
        section next to the usual keys) and return the final record."""
        raise NotImplementedError

    def components(self, ctx: RunContext, **overrides) -> Components:
        """The run's components, built from the run's seed (the same initialisation on every
        rank); ``overrides`` as ``build_components`` takes them."""
        if self.one_process and ctx.info.enabled:
            raise ConfigError(f"protocol={self.name} {self.one_process}; use trainer.devices=1")
        seed_everything(ctx.cfg.seed)
        parts = build_components(ctx.cfg, ctx.device, **overrides)
        if self.task is not None:
            require_task(parts.task, self.task, f"protocol={self.name}")
        return parts

    def loader(self, ctx: RunContext, data: DataBundle, split: str, *, train: bool = False,
               batch_size: int | None = None, shard: bool = True):
        """``split`` of ``data`` with the trainer's settings: shuffled and augmented when
        ``train``; the global batch ``trainer.batch_size`` (``eval_batch_size`` when not
        training) unless given; split over the DDP ranks unless ``shard=False``."""
        t = ctx.cfg.trainer
        size = batch_size or (t.batch_size if train else t.eval_batch_size)
        if not shard:
            return make_loader(data, split, size, train=train, device=ctx.device)
        return make_loader(data, split, size, train=train, device=ctx.device,
                           num_workers=t.num_workers, shard=ctx.info, seed=ctx.cfg.seed)
