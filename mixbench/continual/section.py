"""The continual protocols' part of the leaderboard: their headline numbers, and a table of
every step averaged over seeds."""
from __future__ import annotations

import pandas as pd

from mixbench.results.columns import Column
from mixbench.results.sections import Section, register_section
from mixbench.results.table import summarize, to_markdown

# A continual run's per-step records (results.json's continual.steps), averaged over seeds in
# a table of their own: not ranked (steps are not competitors).
STEP_COLUMNS = (Column("seen", "seen classes", 1, None, 0),
                Column("top1", "top-1 % on seen", 100, None, 2),
                Column("acc_old", "old classes %", 100, None, 2),
                Column("acc_new", "new classes %", 100, None, 2),
                Column("newest_share", "predicted newest %", 100, None, 1),
                Column("ece", "ECE %", 100, None, 2),
                Column("ts_ece", "ECE after TS %", 100, None, 2),
                Column("norm_ratio_before", "new/old row norm", 1, None, 3),
                Column("norm_ratio_after", "after aligning", 1, None, 3))


def summarize_steps(runs: pd.DataFrame, group_by: list[str]) -> pd.DataFrame | None:
    """Per group and step, the mean (± std over seeds) of each step's record
    (``STEP_COLUMNS``), in step order; None when no run has steps."""
    if "steps" not in runs or runs["steps"].isna().all():
        return None
    rows = [{**{g: run[g] for g in group_by}, **record, "step": i + 1}
            for _, run in runs[runs["steps"].notna()].iterrows()
            for i, record in enumerate(run["steps"])]
    table = summarize(pd.DataFrame(rows), list(STEP_COLUMNS), group_by + ["step"])
    return table.sort_values(group_by + ["step"], ignore_index=True)


def step_tables(runs: pd.DataFrame, group_by: list[str]) -> list[tuple[str, str]]:
    steps = summarize_steps(runs, group_by)
    if steps is None:
        return []
    return [("after each step", to_markdown(steps, list(STEP_COLUMNS), group_by + ["step"]))]


CONTINUAL = register_section(Section(
    "continual",
    columns=(Column("avg_incremental_acc", "avg inc. acc %", 100, True, 2),
             Column("final_avg_acc", "final acc %", 100, True, 2),
             Column("forgetting", "forgetting %", 100, False, 2),
             Column("bwt", "BWT %", 100, True, 2)),
    # accuracy on the seen classes after each step (the figure), each step's record (table)
    fields=("step_acc", "steps"), tables=step_tables))
