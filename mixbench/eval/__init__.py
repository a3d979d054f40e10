"""Evaluation: calibration metrics, temperature scaling, reliability diagrams."""
from mixbench.eval.calibration import calibration_metrics, reliability_bins
from mixbench.eval.temperature import fit_temperature

__all__ = ["calibration_metrics", "fit_temperature", "reliability_bins"]
from mixbench.eval.evaluate import evaluate_model, predict  # noqa: E402

__all__ += ["evaluate_model", "predict"]
