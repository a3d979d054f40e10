"""Evaluation: calibration metrics, temperature scaling, reliability diagrams, regression;
last-layer geometry (neural collapse) in ``mixbench.eval.geometry``."""
from mixbench.eval.calibration import calibration_metrics, reliability_bins
from mixbench.eval.evaluate import evaluate_model, evaluate_regression, predict
from mixbench.eval.regression import regression_metrics
from mixbench.eval.temperature import fit_temperature

__all__ = ["calibration_metrics", "evaluate_model", "evaluate_regression", "fit_temperature",
           "predict", "regression_metrics", "reliability_bins"]
