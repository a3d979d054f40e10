"""Turn a trained model into the metrics of results.json. Classification: predictions on val
and test, temperature fitted on val (unless eval.temperature_split=none), every metric before
and after, reliability bins and diagram. Regression: RMSE, MAE, MAPE and R² on val and test,
in the targets' original units."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from mixbench.engine.distributed import SINGLE, DistInfo, all_gather_rows
from mixbench.eval.calibration import calibration_metrics, reliability_bins
from mixbench.eval.regression import regression_metrics
from mixbench.eval.reliability import plot_reliability
from mixbench.errors import ConfigError
from mixbench.eval.temperature import fit_temperature as fit_temperature_on


@torch.no_grad()
def predict(model: torch.nn.Module, loader, device: torch.device,
            autocast=contextlib.nullcontext,
            info: DistInfo = SINGLE) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, CPU) and labels for every sample of a loader, in order. Under DDP each
    rank predicts its share and every rank gets all rows, in the single-process order."""
    model.eval()
    logits, labels = [], []
    for x, y, *_ in loader:
        with autocast():
            out = model(x.to(device, non_blocking=True))
        logits.append(out.float())
        labels.append(y.to(device, non_blocking=True))
    return (all_gather_rows(torch.cat(logits), info).cpu(),
            all_gather_rows(torch.cat(labels), info).cpu())


def evaluate_model(model, val_loader, test_loader, device, *, n_bins: int = 15,
                   figure_path: str | Path | None = None, autocast=contextlib.nullcontext,
                   info: DistInfo = SINGLE, test_labels_clean: torch.Tensor | None = None,
                   fit_temperature: bool = True) -> dict:
    """Metrics on test before and after temperature scaling, and, given the test labels as
    published (``test_labels_clean``, when label noise changed the test split's), the same
    predictions scored against them (``test_clean``, ``test_clean_ts``).

    ``fit_temperature=False`` (``eval.temperature_split=none``, e.g. no validation split):
    ``temperature`` is null and the after-TS entries are left out. An empty or missing
    ``val_loader`` leaves out ``val``."""
    has_val = val_loader is not None and len(val_loader) > 0
    if fit_temperature and not has_val:
        raise ConfigError("temperature scaling needs a validation split, and this run has "
                          "none: set eval.temperature_split=none or dataset.val_size > 0")
    val_logits, val_labels = (predict(model, val_loader, device, autocast, info) if has_val
                              else (None, None))
    test_logits, test_labels = predict(model, test_loader, device, autocast, info)
    temperature = fit_temperature_on(val_logits, val_labels) if fit_temperature else None
    scaled = test_logits / temperature if fit_temperature else None
    results = {"test": calibration_metrics(test_logits, test_labels, n_bins)}
    if fit_temperature:
        results["test_ts"] = calibration_metrics(scaled, test_labels, n_bins)
    results["temperature"] = temperature  # null: not fitted
    if has_val:
        results["val"] = calibration_metrics(val_logits, val_labels, n_bins)
    results["reliability"] = reliability_bins(test_logits, test_labels, n_bins)
    if fit_temperature:
        results["reliability_ts"] = reliability_bins(scaled, test_labels, n_bins)
    if test_labels_clean is not None:
        clean = torch.as_tensor(test_labels_clean, dtype=torch.long)
        if clean.shape != test_labels.shape:
            raise ValueError(f"{len(clean)} clean test labels for {len(test_labels)} "
                             f"test predictions")
        results["test_clean"] = calibration_metrics(test_logits, clean, n_bins)
        if scaled is not None:
            results["test_clean_ts"] = calibration_metrics(scaled, clean, n_bins)
    if figure_path is not None:
        panels = [(results["reliability"], f"test (ECE {results['test']['ece']:.3f})")]
        if scaled is not None:
            panels.append((results["reliability_ts"],
                           f"after TS, T={results['temperature']:.2f} "
                           f"(ECE {results['test_ts']['ece']:.3f})"))
        plot_reliability(panels, figure_path)
    return results


def original_units(values: torch.Tensor, mean, std) -> torch.Tensor:
    """Undo the target standardisation of a regression dataset (identity when it has none)."""
    if mean is None:
        return values
    return values * torch.tensor(std, dtype=values.dtype) + torch.tensor(mean, dtype=values.dtype)


def evaluate_regression(model, val_loader, test_loader, device, *, target_mean=None,
                        target_std=None, autocast=contextlib.nullcontext,
                        info: DistInfo = SINGLE) -> dict:
    results = {}
    for split, loader in (("test", test_loader), ("val", val_loader)):
        pred, target = predict(model, loader, device, autocast, info)
        results[split] = regression_metrics(original_units(pred, target_mean, target_std),
                                            original_units(target, target_mean, target_std))
    return results
