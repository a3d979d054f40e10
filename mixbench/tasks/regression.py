"""Regression: RMSE in the targets' original units in the history, RMSE / MAE / MAPE / R² on
val and test at the end."""
from __future__ import annotations

import contextlib

from mixbench.engine.distributed import SINGLE, DistInfo
from mixbench.eval.evaluate import evaluate_regression, original_units, predict
from mixbench.eval.regression import regression_metrics
from mixbench.errors import ConfigError
from mixbench.registry import TASKS
from mixbench.results.columns import TIMING_COLUMNS, Column
from mixbench.tasks.base import Task


@TASKS.register("regression")
class Regression(Task):
    name = "regression"
    columns = (
        Column("rmse", "RMSE", 1, False, 4),
        Column("mae", "MAE", 1, False, 4),
        Column("mape", "MAPE %", 100, False, 2),
        Column("r2", "R²", 1, True, 4),
        *TIMING_COLUMNS,
    )
    console_keys = ("rmse", "mae", "mape")
    default_loss = "mse"

    def _units(self, values):
        return original_units(values, self.data.target_mean, self.data.target_std)

    def history_metric(self, model, loader, device, autocast=contextlib.nullcontext,
                       info: DistInfo = SINGLE):
        pred, target = predict(model, loader, device, autocast, info)
        return {"test_rmse": regression_metrics(self._units(pred), self._units(target))["rmse"]}

    def evaluate(self, model, val_loader, test_loader, device, *, n_bins,
                 autocast=contextlib.nullcontext, figure_path=None, info=SINGLE,
                 test_labels_clean=None, temperature_split="val"):
        if test_labels_clean is not None:
            raise ConfigError("label noise is for classification datasets")
        return evaluate_regression(model, val_loader, test_loader, device,
                                   target_mean=self.data.target_mean,
                                   target_std=self.data.target_std, autocast=autocast, info=info)

    @classmethod
    def summary(cls, results):
        return " ".join(f"{k}={results['test'][k]:.4g}" for k in ("rmse", "mae", "mape", "r2"))
