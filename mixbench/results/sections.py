"""A protocol's part of the leaderboard. Each protocol that writes a section of its own into
results.json (``continual``, ``merge``, ``adaptation``, ...) registers a ``Section`` in
``SECTIONS`` next to its code: the columns that lead its tables, the per-run values its extra
tables read, those tables, and any rows a run stands for besides its own (a merge's
reference rows). The leaderboard has no branch per protocol."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from mixbench.registry import SECTIONS
from mixbench.results.columns import Column


def _none(*_args) -> list:
    return []


@dataclass(frozen=True)
class Section:
    key: str  # its key in results.json
    # its headline numbers (keys of the section), before the task's columns in its tables;
    # the first one ranks the rows
    columns: tuple[Column, ...] = ()
    # values of the section a run's row carries besides its numbers (lists, records)
    fields: tuple[str, ...] = ()
    # (title, markdown) of its extra tables, from a table's runs and grouping columns
    tables: Callable[[pd.DataFrame, list[str]], list[tuple[str, str]]] = _none
    # records a run stands for besides its own (e.g. a merge's reference rows)
    expand: Callable[[dict], list[dict]] = _none


def register_section(section: Section) -> Section:
    return SECTIONS.register(section.key)(section)


def sections() -> list[Section]:
    return [SECTIONS.get(name) for name in SECTIONS.names()]


def section_column_list() -> list[Column]:
    """Every registered section's columns."""
    return [c for section in sections() for c in section.columns]
