"""Adaptations in the leaderboard: means over the corruptions, and a table per metric with a
column per corruption."""
from __future__ import annotations

import pandas as pd

from mixbench.results.columns import Column
from mixbench.results.sections import Section, register_section
from mixbench.results.table import summarize, to_markdown, widen

# An adaptation's per-corruption records (results.json's adaptation.corruptions), averaged over
# source seeds in tables of their own, a column per corruption.
CORRUPTION_COLUMNS = (Column("error", "error %", 100, None, 2),
                      Column("ece", "ECE %", 100, None, 2))


def summarize_corruptions(runs: pd.DataFrame, group_by: list[str]
                          ) -> list[tuple[Column, pd.DataFrame, list[Column]]]:
    """Per group, each of ``CORRUPTION_COLUMNS`` per corruption (mean ± std over source
    seeds), a wide table per metric with a column per corruption, in the order the runs list
    them; empty when no run has corruptions."""
    if "corruptions" not in runs:
        return []
    rows = [{**{g: run[g] for g in group_by}, **record}
            for _, run in runs.iterrows() if isinstance(run["corruptions"], list)
            for record in run["corruptions"]]
    if not rows:
        return []
    long = summarize(pd.DataFrame(rows), list(CORRUPTION_COLUMNS), group_by + ["corruption"])
    order = list(dict.fromkeys(row["corruption"] for row in rows))
    return [(value, *widen(long, group_by, "corruption", value,
                           {c: (f"{value.key}:{c}", c) for c in order}))
            for value in CORRUPTION_COLUMNS]


def corruption_tables(runs: pd.DataFrame, group_by: list[str]) -> list[tuple[str, str]]:
    return [(f"{value.header} per corruption", to_markdown(wide, columns, group_by))
            for value, wide, columns in summarize_corruptions(runs, group_by)]


ADAPTATION = register_section(Section(
    "adaptation",
    # means over the corruptions of the adapted predictions (error as UnMix-TNS reports it)
    columns=(Column("mean_error", "error % (mean)", 100, False, 2),
             Column("mean_nll", "NLL", 1, False, 3),
             Column("mean_ece", "ECE %", 100, False, 2),
             Column("mean_aece", "aECE %", 100, False, 2),
             Column("mean_brier", "Brier", 1, False, 3)),
    fields=("corruptions",), tables=corruption_tables))
