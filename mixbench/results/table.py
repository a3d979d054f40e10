"""From run folders to tables: load every results.json under a folder into a pandas
DataFrame, then aggregate seeds (mean ± std, n) per dataset × backbone × method × loss."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mixbench.results.io import RESULTS_NAME

log = logging.getLogger(__name__)

IDENTITY = ["dataset", "backbone", "method", "loss", "epochs"]
# (column, header, scale, higher_is_better, decimals) for the classification table.
CLASSIFICATION_COLUMNS = [
    ("top1", "top-1 %", 100, True, 2),
    ("ece", "ECE %", 100, False, 2),
    ("nll", "NLL", 1, False, 3),
    ("brier", "Brier", 1, False, 3),
    ("ts_ece", "ECE after TS %", 100, False, 2),
    ("temperature", "T", 1, None, 2),
    ("train_s", "train s", 1, None, 1),
]


@dataclass
class RunTable:
    completed: pd.DataFrame
    incomplete: pd.DataFrame  # running, failed, interrupted: listed apart, never averaged
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def _row(path: Path, results: dict) -> dict:
    cfg = results.get("config", {})
    test, ts = results.get("test") or {}, results.get("test_ts") or {}
    history = results.get("history") or []
    tops = [r["test_top1"] for r in history if r.get("test_top1") is not None]
    return {
        "run_dir": str(path.parent),
        "dataset": cfg.get("dataset", {}).get("name"),
        "backbone": cfg.get("backbone", {}).get("name"),
        "method": cfg.get("method", {}).get("name", "erm"),
        "loss": cfg.get("loss", {}).get("name"),
        "epochs": cfg.get("trainer", {}).get("epochs"),
        "seed": results.get("seed"),
        "status": results.get("status", "unknown"),
        **test,
        "ts_ece": ts.get("ece"), "ts_nll": ts.get("nll"),
        "temperature": results.get("temperature"),
        "train_s": (results.get("timings") or {}).get("train_s"),
        "samples_per_s": (results.get("timings") or {}).get("samples_per_s"),
        # OpenMixup's reported metric: the median test top-1 of the last 10 epochs.
        "last10_median_top1": pd.Series(tops[-10:]).median() if tops else None,
    }


def load_runs(root: str | Path) -> RunTable:
    rows, unreadable = [], []
    for path in sorted(Path(root).rglob(RESULTS_NAME)):
        try:
            rows.append(_row(path, json.loads(path.read_text())))
        except (OSError, ValueError, AttributeError, TypeError) as err:
            unreadable.append((str(path), f"{type(err).__name__}: {err}"))
            log.warning("skipping unreadable %s (%s)", path, err)
    frame = pd.DataFrame(rows, columns=None if rows else ["run_dir", "status", *IDENTITY])
    done = frame["status"] == "completed"
    return RunTable(frame[done].reset_index(drop=True), frame[~done].reset_index(drop=True),
                    unreadable)


def summarize(runs: pd.DataFrame, columns=CLASSIFICATION_COLUMNS) -> pd.DataFrame:
    """One row per identity: ``COL`` (mean), ``COL_std`` and ``seeds``, sorted by top-1."""
    present = [c for c, *_ in columns if c in runs]
    grouped = runs.groupby(IDENTITY, dropna=False)
    table = grouped[present].mean()
    std = grouped[present].std(ddof=0).add_suffix("_std")
    table = table.join(std)
    table["seeds"] = grouped.size()
    return table.reset_index().sort_values(present[0], ascending=False, ignore_index=True)


def to_markdown(summary: pd.DataFrame, columns=CLASSIFICATION_COLUMNS) -> str:
    """mean ± std per column, the best value of each metric column in bold. Identity columns
    that are the same on every row move to a caption line above the table."""
    constant = [c for c in IDENTITY if summary[c].nunique(dropna=False) == 1 and len(summary) > 1]
    caption = " · ".join(f"{c} {summary[c].iloc[0]}" for c in constant)
    shown = summary[[c for c in IDENTITY if c not in constant] + ["seeds"]].copy()
    for col, header, scale, higher, digits in columns:
        if col not in summary:
            continue
        mean, std = summary[col] * scale, summary[f"{col}_std"] * scale
        cells = [f"{m:.{digits}f} ± {s:.{digits}f}" if pd.notna(m) else "—"
                 for m, s in zip(mean, std)]
        if higher is not None and mean.notna().any():
            best = mean.idxmax() if higher else mean.idxmin()
            cells[best] = f"**{cells[best]}**"
        shown[header + (" ↑" if higher else " ↓" if higher is False else "")] = cells
    table = shown.to_markdown(index=False)
    return f"{caption}\n\n{table}" if caption else table
