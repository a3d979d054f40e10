"""Shared fixtures: compose the real configs with Hydra's compose API and shrink them."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "configs")
# Small and quick: 1 epoch, no progress bar, tiny eval batches are fine on digits.
FAST = ["trainer.epochs=1", "trainer.progress=false"]


def make_cfg(*overrides: str):
    """The composed root config with ``overrides`` (as on the command line)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.fixture
def cfg_factory():
    return lambda *overrides: make_cfg(*FAST, *overrides)


@pytest.fixture(autouse=True)
def _fresh_rng():
    torch.manual_seed(0)
    yield


def run_tool(*args: str, cwd: Path | None = None, timeout: int = 300):
    """Run a tools/*.py script in a subprocess with the test's Python."""
    import subprocess

    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout)


def kill_in_epoch_two(cfg, run_dir, monkeypatch) -> None:
    """Train ``cfg`` in ``run_dir`` and stop it as a kill would when epoch 2 starts (after
    epoch 1's checkpoint), for kill-and-resume tests."""
    import mixbench.engine.trainer as trainer

    real_epoch = trainer.train_one_epoch

    def dies_in_epoch_two(*args, **kwargs):
        if args[7] == 1:  # the epoch index
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(cfg, run_dir)
    monkeypatch.setattr(trainer, "train_one_epoch", real_epoch)


def without_timings(history: list[dict]) -> list[dict]:
    """A run's history without its wall-clock rates (which never repeat exactly)."""
    return [{k: v for k, v in record.items() if k != "samples_per_s"} for record in history]
