"""Shared fixtures: compose the real configs with Hydra's compose API and shrink them."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch.overrides import TorchFunctionMode

import mixbench  # noqa: F401  (registers the resolver configs/train.yaml names folders with)
from mixbench.config import CONFIG_DIR as PACKAGED_CONFIGS

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(PACKAGED_CONFIGS)
PACKAGE = str(ROOT / "mixbench")
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
    import mixbench.engine.fit as fit
    from mixbench.app.train import train

    real_epoch = fit.train_one_epoch

    def dies_in_epoch_two(*args, epoch: int, **kwargs):
        if epoch == 1:  # 0-based: the second epoch
            raise KeyboardInterrupt
        return real_epoch(*args, epoch=epoch, **kwargs)

    monkeypatch.setattr(fit, "train_one_epoch", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir)
    monkeypatch.setattr(fit, "train_one_epoch", real_epoch)


def without_timings(history: list[dict]) -> list[dict]:
    """A run's history without its wall-clock rates (which never repeat exactly)."""
    return [{k: v for k, v in record.items() if k != "samples_per_s"} for record in history]


class HostToDeviceCopies(TorchFunctionMode):
    """Records every copy of host data to another device made inside it, except through
    ``host_to`` (a pinned, queued copy): ``torch.tensor(..., device=d)``, ``.to(d)`` and ops
    mixing host tensors (more than a scalar) with device ones. On a GPU each such copy from
    pageable memory waits for the device. Run the code on the meta device: there a copy
    succeeds and is recorded, and a read of a device value on the host raises."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.device.type != "cpu":
            inputs = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            from_host = func in (torch.tensor, torch.as_tensor) or any(
                a.device.type == "cpu" and a.dim() > 0 for a in inputs)
            if from_host:
                stack = []
                frame = sys._getframe()
                while frame is not None:
                    stack.append(frame)
                    frame = frame.f_back
                if not any(f.f_code.co_name == "host_to" for f in stack):
                    where = next((f"{Path(f.f_code.co_filename).name}:{f.f_lineno}" for f in stack
                                  if f.f_code.co_filename.startswith(PACKAGE)), "?")
                    self.found.append(f"{getattr(func, '__name__', func)} at {where}")
        return out


def steps_that_never_wait(method, model, batch, loss_fn, steps: int = 3) -> list:
    """The outputs of ``steps`` calls of ``method.step`` (with backward where the loss has a
    graph) on a meta-device batch, after one warm-up step that builds or moves the method's
    parts once; fails if any of them copied host data over (reading a device value on the
    host already raises on meta)."""
    method.step(model, batch, loss_fn)
    outs = []
    with HostToDeviceCopies() as copies:
        for _ in range(steps):
            outs.append(method.step(model, batch, loss_fn))
            if outs[-1].loss.requires_grad:
                outs[-1].loss.backward()
    assert not copies.found, copies.found
    assert all(out.loss.device.type == "meta" for out in outs)
    return outs


class Recorder:
    """Soft CE that remembers what it was called with."""

    def __init__(self):
        from mixbench.losses import CrossEntropy

        self.calls, self.ce = [], CrossEntropy()

    def __call__(self, logits, targets):
        self.calls.append((logits.detach(), targets.detach()))
        return self.ce(logits, targets)
