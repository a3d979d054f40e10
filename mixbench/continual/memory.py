"""Memories of past samples, as indices into the (relabelled) training split: the exemplar
memory of class-incremental learning (herding or random selection, iCaRL/PyCIL) and the
reservoir buffer of online learning (Mai et al.'s ER)."""
from __future__ import annotations

import torch

from mixbench.errors import ConfigError

SELECTIONS = ("herding", "random")


def herding(features: torch.Tensor, m: int) -> torch.Tensor:
    """iCaRL's herding on L2-normalised features (n×d): greedily the sample that brings the
    mean of the chosen ones closest to the class mean, each sample at most once. Returns the
    positions of the first min(m, n) choices, in the order chosen."""
    feats = torch.nn.functional.normalize(features.double(), dim=1)
    target = feats.mean(0)
    chosen = torch.zeros(len(feats), dtype=torch.bool, device=feats.device)
    total = torch.zeros_like(target)
    picks = []
    for k in range(1, min(m, len(feats)) + 1):
        distance = ((target - (total + feats) / k) ** 2).sum(1).masked_fill(chosen, torch.inf)
        i = int(distance.argmin())
        picks.append(i)
        chosen[i] = True
        total += feats[i]
    return torch.tensor(picks, dtype=torch.long)


class ExemplarMemory:
    """Exemplars per class: a fixed ``total`` shared by the seen classes (total // seen each,
    PyCIL's default) or, when given, a fixed ``per_class`` number (then ``total`` is not
    used). After a step, old classes keep the first exemplars of their list (herding's best)
    and new classes get theirs."""

    def __init__(self, *, total: int | None = 2000, per_class: int | None = None,
                 selection: str = "herding"):
        if selection not in SELECTIONS:
            raise ConfigError(f"protocol.selection must be one of {SELECTIONS}, "
                              f"got {selection!r}")
        size = total if per_class is None else per_class
        if size is None or size < 0:
            raise ConfigError(f"give the exemplar memory a size >= 0: protocol.memory (in "
                              f"total) or protocol.memory_per_class, got {total} and "
                              f"{per_class}")
        self.total, self.per_class, self.selection = total, per_class, selection
        self.exemplars: dict[int, list[int]] = {}  # class -> training-split rows, best first

    def size_for(self, seen: int) -> int:
        return self.per_class if self.per_class is not None else self.total // seen

    def indices(self) -> torch.Tensor:
        rows = [i for c in sorted(self.exemplars) for i in self.exemplars[c]]
        return torch.tensor(rows, dtype=torch.long)

    def update(self, new_classes: range, seen: int, candidates: dict[int, torch.Tensor],
               features=None, generator: torch.Generator | None = None) -> None:
        """Shrink the old classes' lists to the size for ``seen`` classes and choose that many
        of each new class's ``candidates`` (training rows), by herding on ``features(rows)``
        or at random (``generator``)."""
        m = self.size_for(seen)
        self.exemplars = {c: rows[:m] for c, rows in self.exemplars.items()}
        for c in new_classes:
            rows = candidates[c]
            if self.selection == "herding":
                order = herding(features(rows), m)
            else:
                order = torch.randperm(len(rows), generator=generator)[:m]
            self.exemplars[c] = rows[order].tolist()

    def state_dict(self) -> dict:
        return {"exemplars": {str(c): rows for c, rows in self.exemplars.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.exemplars = {int(c): list(rows) for c, rows in state["exemplars"].items()}


class ReservoirBuffer:
    """Reservoir sampling over a stream of training rows: after n rows were offered, each is in
    the buffer with probability size / n (Vitter's algorithm R), whatever the stream's order."""

    def __init__(self, size: int):
        if size < 1:
            raise ConfigError(f"protocol.memory must be >= 1, got {size}")
        self.size = size
        self.rows: list[int] = []
        self.offered = 0

    def add(self, rows: torch.Tensor, generator: torch.Generator) -> None:
        for row in rows.tolist():
            self.offered += 1
            if len(self.rows) < self.size:
                self.rows.append(row)
                continue
            slot = int(torch.randint(self.offered, (), generator=generator))
            if slot < self.size:
                self.rows[slot] = row

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Up to ``n`` buffered rows drawn without replacement (ER's random retrieval)."""
        if not self.rows:
            return torch.empty(0, dtype=torch.long)
        pick = torch.randperm(len(self.rows), generator=generator)[:n]
        return torch.tensor(self.rows, dtype=torch.long)[pick]

    def state_dict(self) -> dict:
        return {"rows": list(self.rows), "offered": self.offered}

    def load_state_dict(self, state: dict) -> None:
        self.rows, self.offered = list(state["rows"]), int(state["offered"])
