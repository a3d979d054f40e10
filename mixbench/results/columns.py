"""A leaderboard column: which number of a run, its header, unit and ranking direction."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    scale: float = 1.0
    higher_is_better: bool | None = None  # None: not ranked (e.g. temperature, time)
    decimals: int = 3

    @property
    def title(self) -> str:
        arrow = {True: " ↑", False: " ↓", None: ""}[self.higher_is_better]
        return self.header + arrow


# Every task's tables end with what the run cost.
TIMING_COLUMNS = (Column("train_s", "train s", 1, None, 1),
                  Column("samples_per_s", "samples/s", 1, None, 0))
