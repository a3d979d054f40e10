"""Experiment loggers (registered in LOGGERS): console (default), csv, wandb.

The trainer calls ``log_epoch(history)`` with the whole per-epoch history after each epoch (so
a resumed run's files stay complete), ``log_results(results, figure)`` once at the end and
``close()``. Only rank 0 logs."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from mixbench.registry import LOGGERS

log = logging.getLogger(__name__)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class ConsoleLogger:
    def __init__(self, *, run_dir: str | Path, config: dict):
        self.run_dir = Path(run_dir)

    def log_epoch(self, history: list[dict]) -> None:
        record = dict(history[-1])
        log.info("epoch %s: %s", record.pop("epoch"),
                 " ".join(f"{k}={_fmt(v)}" for k, v in record.items()))

    def log_results(self, results: dict, figure: Path | None) -> None:
        test, ts = results.get("test", {}), results.get("test_ts", {})
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in test.items())
        log.info("test: %s", shown)
        if ts:
            log.info("after temperature scaling (T=%.3f): ece=%.4f nll=%.4f",
                     results["temperature"], ts["ece"], ts["nll"])

    def close(self) -> None:
        pass


class NullLogger:
    """What ranks other than 0 use under DDP: they log nothing and write no files."""

    def log_epoch(self, history: list[dict]) -> None:
        pass

    def log_results(self, results: dict, figure: Path | None) -> None:
        pass

    def close(self) -> None:
        pass


@LOGGERS.register("console")
def console(**kwargs) -> ConsoleLogger:
    return ConsoleLogger(**kwargs)


class CSVLogger(ConsoleLogger):
    """Also writes ``metrics.csv`` (one row per epoch) in the run folder."""

    def log_epoch(self, history: list[dict]) -> None:
        super().log_epoch(history)
        path = self.run_dir / "metrics.csv"
        pd.DataFrame(history).to_csv(path.with_suffix(".csv.tmp"), index=False)
        path.with_suffix(".csv.tmp").replace(path)


@LOGGERS.register("csv")
def csv(**kwargs) -> CSVLogger:
    return CSVLogger(**kwargs)


class WandbLogger(ConsoleLogger):
    """Weights & Biases; ``mode=offline`` (default) or ``disabled`` needs no login."""

    def __init__(self, *, run_dir, config: dict, project: str = "mixbench",
                 mode: str = "offline", entity: str | None = None, tags: list | None = None):
        super().__init__(run_dir=run_dir, config=config)
        try:
            import wandb
        except ImportError as err:
            raise ImportError("logger=wandb needs the wandb package: "
                              "pip install 'mixbench[wandb]'") from err
        self._wandb = wandb
        self.run = wandb.init(project=project, entity=entity, mode=mode, dir=str(self.run_dir),
                              config=config, tags=list(tags or []), reinit="finish_previous")

    def log_epoch(self, history: list[dict]) -> None:
        super().log_epoch(history)
        record = dict(history[-1])
        self.run.log(record, step=int(record["epoch"]))

    def log_results(self, results: dict, figure: Path | None) -> None:
        super().log_results(results, figure)
        summary = {f"{split}/{k}": v for split in ("test", "test_ts", "val")
                   for k, v in results.get(split, {}).items()}
        summary["temperature"] = results.get("temperature")
        if figure is not None and figure.exists():
            summary["reliability"] = self._wandb.Image(str(figure))
        self.run.log(summary)

    def close(self) -> None:
        self.run.finish()


@LOGGERS.register("wandb")
def wandb_logger(**kwargs) -> WandbLogger:
    return WandbLogger(**kwargs)
