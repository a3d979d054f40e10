"""The robustness of a trained run: its test split corrupted (``name:severity``), evaluated
with its own model (temperature fitted on the clean validation split). The results go to
``shift.json`` in the run folder, one entry per corruption; results.json and the checkpoint
are never changed."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from mixbench.data.bundle import Split
from mixbench.engine.load import load_run
from mixbench.errors import ConfigError
from mixbench.results.io import write_json_atomic
from mixbench.shift.corruptions import CORRUPTIONS, corrupt

SHIFT_NAME = "shift.json"
BATCH = 1024  # images corrupted at a time (memory, not results: each image has its own draw)


def parse_shift(text: str) -> tuple[str, int]:
    """``"gaussian_noise:5"`` → ("gaussian_noise", 5)."""
    name, _, severity = text.partition(":")
    if not severity.isdigit():
        raise ConfigError(f"--shift takes NAME:SEVERITY (e.g. gaussian_noise:5), got {text!r}")
    if name not in CORRUPTIONS or not 1 <= int(severity) <= 5:
        raise ConfigError(f"--shift {text}: the corruptions are {', '.join(CORRUPTIONS)}, at "
                          f"severities 1-5")
    return name, int(severity)


def require_images(data, dataset: str, what: str) -> None:
    """Corruptions apply to in-memory uint8 image test splits (not tabular data, not image
    folders read from disk)."""
    test = data.test
    if not isinstance(test, Split) or test.x.dtype != torch.uint8 or test.x.dim() != 4:
        raise ConfigError(f"{what} corrupts in-memory uint8 images; dataset={dataset} has "
                          f"none")


def corrupted(split: Split, name: str, severity: int, seed: int,
              device: torch.device) -> Split:
    """``split`` with every image corrupted, batch by batch on ``device`` (batch k drawn
    from seed + k, so the result does not depend on how the caller batches)."""
    parts = [corrupt(split.x[i:i + BATCH].to(device), name, severity, seed + k).cpu()
             for k, i in enumerate(range(0, len(split), BATCH))]
    return Split(torch.cat(parts), split.y)


def evaluate_shift(run_dir: str | Path, name: str, severity: int, seed: int = 0,
                   device: str = "auto") -> dict:
    """The run's test metrics under one corruption (written to shift.json, returned)."""
    run = load_run(run_dir, device)
    data = run.parts.data
    require_images(data, run.cfg.dataset.name, "--shift")
    run.parts.data = dataclasses.replace(
        data, test=corrupted(data.test, name, severity, seed, run.parts.device))
    metrics = run.parts.task.evaluate(run.parts.model, run.loader("val"), run.loader("test"),
                                      run.parts.device, n_bins=run.cfg.eval.n_bins)
    entry = {"corruption": name, "severity": severity, "seed": seed,
             **{key: metrics[key] for key in ("test", "test_ts", "temperature")}}
    path = Path(run_dir) / SHIFT_NAME
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved[f"{name}:{severity}"] = entry
    write_json_atomic(path, saved)
    return entry
