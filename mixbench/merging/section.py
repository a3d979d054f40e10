"""Merges in the leaderboard: their headline numbers, the λ-sensitivity table, and the
reference rows every merge records."""
from __future__ import annotations

import pandas as pd

from mixbench.results.columns import Column
from mixbench.results.sections import Section, register_section
from mixbench.results.table import summarize, to_markdown, widen

# A merge's search (results.json's merge.search): the mean validation top-1 over the tasks at
# each λ tried, averaged over seeds in a table of its own (how sensitive a merger is to λ).
SEARCH_COLUMNS = (Column("val_top1", "val top-1 % (mean over tasks)", 100, None, 2),)
# merge.references: options of the merge that still define a reference row
REFERENCE_KEYS = ("base", "models", "bn", "bn_batches", "eval", "seed")


def summarize_search(runs: pd.DataFrame, group_by: list[str]) -> pd.DataFrame | None:
    """Merges chosen on a grid of one λ: per group and λ, the mean (± std over seeds) of the
    validation top-1 over the tasks; None when no run searched a grid."""
    if "search" not in runs:
        return None
    rows = [{**{g: run[g] for g in group_by}, "λ": tried["scale"],
             "val_top1": tried["val_top1"]}
            for _, run in runs.iterrows() if isinstance(run["search"], list)
            for tried in run["search"] if isinstance(tried["scale"], (int, float))]
    if not rows:
        return None
    table = summarize(pd.DataFrame(rows), list(SEARCH_COLUMNS), group_by + ["λ"])
    return table.sort_values(group_by + ["λ"], ignore_index=True)


def search_by_scale(search: pd.DataFrame, group_by: list[str]) -> tuple[pd.DataFrame,
                                                                        list[Column]]:
    """``summarize_search``'s table turned wide, a column per λ (a row reads as the curve),
    and those columns."""
    scales = sorted(search["λ"].unique())
    return widen(search, group_by, "λ", SEARCH_COLUMNS[0],
                 {scale: (f"at_{scale:g}", f"λ = {scale:g}") for scale in scales})


def search_tables(runs: pd.DataFrame, group_by: list[str]) -> list[tuple[str, str]]:
    search = summarize_search(runs, group_by)
    if search is None:
        return []
    wide, columns = search_by_scale(search, group_by)
    return [("validation top-1 (mean over the tasks) at each λ",
             to_markdown(wide, columns, group_by))]


def reference_records(results: dict) -> list[dict]:
    """The reference rows a merge records beside its own (``merge.references``: each
    fine-tuned model on its own task, θ₀'s body under each head) as records of their own:
    the merge's config with the reference as its merger, and none of the merger's options
    (so the leaderboard keeps one per set of models and seed)."""
    references = (results.get("merge") or {}).get("references") or {}
    out = []
    for name, section in references.items():
        config = dict(results["config"])
        config["protocol"] = {"name": "merge", "merger": name, "bn": config["protocol"]["bn"]}
        config["merge"] = {k: v for k, v in config["merge"].items() if k in REFERENCE_KEYS}
        out.append({**results, "config": config, "merge": section, "reference": name,
                    "test": {"top1": section["avg_top1"], "ece": section["avg_ece"]},
                    "test_ts": {"ece": section["avg_ts_ece"]}})
    return out


MERGE = register_section(Section(
    "merge",
    # means over the tasks of the merged model, against each fine-tuned model on its own
    # task (normalised accuracy) and θ₀'s body under each task's head
    columns=(Column("avg_top1", "avg top-1 %", 100, True, 2),
             Column("avg_normalized", "normalised acc %", 100, True, 2),
             Column("individual_avg_top1", "fine-tuned avg %", 100, None, 2),
             Column("base_avg_top1", "θ₀ avg %", 100, None, 2),
             Column("scale", "λ", 1, None, 2)),
    fields=("search",), tables=search_tables, expand=reference_records))
