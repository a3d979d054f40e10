"""Classification: top-1 in the loop and the history, calibration metrics before and after
temperature scaling at the end, reliability diagrams."""
from __future__ import annotations

import contextlib

from mixbench.engine.distributed import SINGLE, DistInfo
from mixbench.eval.evaluate import evaluate_model, predict
from mixbench.eval.temperature import check_temperature_split
from mixbench.registry import TASKS
from mixbench.results.columns import TIMING_COLUMNS, Column
from mixbench.tasks.base import Task


@TASKS.register("classification")
class Classification(Task):
    name = "classification"
    columns = (
        Column("top1", "top-1 %", 100, True, 2),
        Column("top5", "top-5 %", 100, True, 2),
        Column("nll", "NLL", 1, False, 3),
        Column("brier", "Brier", 1, False, 3),
        Column("ece", "ECE %", 100, False, 2),
        Column("aece", "aECE %", 100, False, 2),
        Column("mce", "MCE %", 100, False, 2),
        Column("ts_ece", "ECE after TS %", 100, False, 2),
        # the rest of the temperature-scaling study's numbers (experiment=ts_limits)
        Column("ts_nll", "NLL after TS", 1, False, 3),
        Column("ts_aece", "aECE after TS %", 100, False, 2),
        Column("ts_mce", "MCE after TS %", 100, False, 2),
        Column("temperature", "T", 1, None, 2),
        # dataset.label_noise.test: the same model scored on the test labels as published
        Column("clean_top1", "top-1 % clean labels", 100, True, 2),
        Column("clean_nll", "NLL clean labels", 1, False, 3),
        Column("clean_ece", "ECE % clean labels", 100, False, 2),
        Column("clean_ts_ece", "ECE after TS % clean labels", 100, False, 2),
        *TIMING_COLUMNS,
    )
    console_keys = ("top1", "ece", "nll", "ts_ece", "temperature", "clean_ece", "clean_ts_ece")
    default_loss = "soft_ce"
    train_sums = (("train_top1", "acc"),)

    def step_sums(self, logits, labels):
        # a step may return more logits than labels (e.g. clean and mixed halves)
        return [(logits[: len(labels)].argmax(dim=1) == labels).sum()]

    def history_metric(self, model, loader, device, autocast=contextlib.nullcontext,
                       info: DistInfo = SINGLE):
        """Test top-1 (OpenMixup reports the median of the last 10 epochs)."""
        logits, labels = predict(model, loader, device, autocast, info)
        return {"test_top1": (logits.argmax(1) == labels).float().mean().item()}

    def evaluate(self, model, val_loader, test_loader, device, *, n_bins,
                 autocast=contextlib.nullcontext, figure_path=None, info=SINGLE,
                 test_labels_clean=None, temperature_split="val"):
        fit = check_temperature_split(temperature_split,
                                      len(val_loader) if val_loader is not None else 0)
        return evaluate_model(model, val_loader, test_loader, device, n_bins=n_bins,
                              autocast=autocast, figure_path=figure_path, info=info,
                              test_labels_clean=test_labels_clean, fit_temperature=fit)

    @classmethod
    def summary(cls, results):
        test = results["test"]
        line = f"top1={test['top1']:.4f} ece={test['ece']:.4f} nll={test['nll']:.4f} | "
        if results.get("temperature") is None:
            return line + "temperature not fitted (eval.temperature_split=none)"
        return line + (f"after TS (T={results['temperature']:.3f}) "
                       f"ece={results['test_ts']['ece']:.4f}")
