"""What a task decides about a run: which losses and methods fit it, what the training loop
sums besides the loss, the per-epoch history metric, the final evaluation, and the
leaderboard's columns. The engine and the protocols ask the task; nothing else branches on
the kind of task."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from mixbench.engine.distributed import SINGLE, DistInfo
from mixbench.errors import ConfigError
from mixbench.results.columns import Column


class Task:
    name: str
    columns: tuple[Column, ...]  # the first is the primary metric (what sweeps optimise)
    console_keys: tuple[str, ...]  # the columns tools/leaderboard.py prints
    default_loss: str  # suggested when a loss of another task is configured
    # What the training loop sums per step besides the loss: (history key, progress label).
    train_sums: tuple[tuple[str, str], ...] = ()

    def __init__(self, data):
        self.data = data

    @property
    def primary(self) -> Column:
        return self.columns[0]

    def check(self, *, loss_fn, method, loss_name: str, method_name: str) -> None:
        """Reject a loss or method made for another task, before anything runs."""
        dataset = self.data.name
        if loss_fn.task != self.name:
            hint = getattr(loss_fn, "task_hint", "")  # e.g. where retrieval losses belong
            raise ConfigError(f"loss={loss_name} is a {loss_fn.task} loss, but dataset={dataset} "
                              f"is a {self.name} task: use loss={self.default_loss}"
                              + (f" ({hint})" if hint else ""))
        if self.name not in method.tasks:
            wanted = " or ".join(method.tasks)
            raise ConfigError(f"method={method_name} is for {wanted}, but dataset={dataset} is "
                              f"a {self.name} task; use a {wanted} dataset"
                              + (f". {method.task_hint}" if method.task_hint else ""))

    def step_sums(self, logits: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """This step's contribution to each of ``train_sums``, kept on the device."""
        return []

    def history_metric(self, model, loader, device, autocast=contextlib.nullcontext,
                       info: DistInfo = SINGLE) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self, model, val_loader, test_loader, device, *, n_bins: int,
                 autocast=contextlib.nullcontext, figure_path: Path | None = None,
                 info: DistInfo = SINGLE, test_labels_clean: torch.Tensor | None = None,
                 temperature_split: str = "val") -> dict:
        """The metrics of results.json (every rank gets them; only the rank given a
        ``figure_path`` draws figures). ``test_labels_clean``: the test labels before
        ``dataset.label_noise.test`` changed them, in the test loader's order (the metrics
        against them go in ``test_clean``). ``temperature_split``: ``eval.temperature_split``
        (tasks without temperature scaling ignore it)."""
        raise NotImplementedError

    @classmethod
    def summary(cls, results: dict) -> str:
        """One line of a run's test metrics."""
        raise NotImplementedError


def require_task(task: Task, name: str, what: str) -> None:
    """For analyses made for one kind of task (e.g. class-mean geometry)."""
    if task.name != name:
        raise ConfigError(f"{what} is for {name} runs; dataset={task.data.name} is a "
                          f"{task.name} task")
