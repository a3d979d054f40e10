"""The standard protocol: fit on a dataset's training split for ``trainer.epochs``, then
evaluate once on val and test. What every mixbench run was before protocols existed, and the
default."""
from __future__ import annotations

import logging
import time

from mixbench.data.label_noise import LABEL_NOISE_NAME
from mixbench.engine.checkpoint import CHECKPOINT_NAME
from mixbench.engine.context import RunContext
from mixbench.engine.fit import Training, fit, resume
from mixbench.engine.load import init_from_run
from mixbench.eval.temperature import check_temperature_split
from mixbench.protocols.base import Protocol
from mixbench.registry import PROTOCOLS
from mixbench.results.headline import check_headline, with_headline
from mixbench.results.record import completed_record

log = logging.getLogger(__name__)


@PROTOCOLS.register("standard")
class Standard(Protocol):
    name = "standard"

    def __call__(self, ctx: RunContext) -> dict:
        cfg, t, info = ctx.cfg, ctx.cfg.trainer, ctx.info
        parts = self.components(ctx)  # seeded: the same on every rank
        data = parts.data
        temperature_split = cfg.eval.get("temperature_split", "val")
        check_temperature_split(temperature_split, len(data.val))  # before training, not after
        check_headline(cfg.eval.get("top1", "final"), cfg.eval.get("top1_heads", "model"))
        train_loader = self.loader(ctx, data, "train", train=True)
        val_loader, test_loader = (self.loader(ctx, data, split) for split in ("val", "test"))
        parts.method.setup(data, train_loader)
        training = Training.build(ctx, parts, len(train_loader), t.epochs)

        checkpoint = ctx.run_dir / CHECKPOINT_NAME
        state, saved = resume(training, checkpoint, ctx.config)
        if saved is not None:
            log.info("resuming %s from epoch %d/%d", ctx.run_dir, state.epoch, t.epochs)
        elif t.init_from:
            init_from_run(parts.model, t.init_from)
        elif t.resume:
            log.info("trainer.resume=true but %s has no checkpoint: starting from scratch",
                     ctx.run_dir)
        training.wrap(ctx)

        ctx.write_results(task=parts.task.name)
        if data.label_noise is not None:  # the labels dataset.label_noise changed
            ctx.write_json(LABEL_NOISE_NAME, data.label_noise)
        log.info("run %s: %s on %s, method %s, %d epochs on %s%s", ctx.run_dir,
                 cfg.backbone.name, cfg.dataset.name, parts.method, t.epochs, ctx.device,
                 f" × {info.world_size} processes" if info.enabled else "")
        state = fit(ctx, training, parts.task, train_loader, test_loader, epochs=t.epochs,
                    seed=cfg.seed, state=state, checkpoint=checkpoint,
                    extra_state=lambda: {"processes": info.world_size})

        start = time.perf_counter()
        figure = ctx.run_dir / "reliability.png"
        metrics = parts.task.evaluate(parts.model, val_loader, test_loader, ctx.device,
                                      n_bins=cfg.eval.n_bins, autocast=ctx.autocast,
                                      figure_path=figure if ctx.main else None, info=info,
                                      test_labels_clean=data.test_clean_labels,
                                      temperature_split=temperature_split)
        metrics = with_headline(metrics, state.history, cfg.eval)
        ctx.record = completed_record(ctx.record, metrics=metrics, history=state.history,
                                      train_s=state.train_s,
                                      eval_s=time.perf_counter() - start,
                                      processes=info.world_size)
        results = ctx.write_results()
        ctx.logger.log_results(results, figure if figure.exists() else None)
        return results
