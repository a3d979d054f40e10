"""From run folders to tables: load every results.json under a folder into a pandas
DataFrame (one row per run), then aggregate seeds (mean ± std, n) per dataset × backbone ×
method × loss × epochs, in one table per protocol and task with that task's columns. Nothing
here is hand-written: every number comes from a run file."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mixbench import tasks  # noqa: F401  (registration: each task's columns)
from mixbench.config import experiment_config
from mixbench.eval.geometry import GEOMETRY_JSON
from mixbench.registry import TASKS
from mixbench.results.columns import Column
from mixbench.results.headline import run_headline
from mixbench.results.io import RESULTS_NAME
from mixbench.results.sections import section_column_list, sections

log = logging.getLogger(__name__)

IDENTITY = ["dataset", "backbone", "method", "loss", "epochs"]
# Every table is one protocol and one task: rows of different shapes are never ranked together.
SECTION = ["protocol", "task"]
# Published tables name the no-mixing baseline differently.
METHOD_ALIASES = {"vanilla": "erm", "baseline": "erm"}


def section_columns(runs: pd.DataFrame | None) -> list[Column]:
    """The protocol sections' columns that ``runs`` have numbers for."""
    if runs is None:
        return []
    return [c for c in section_column_list() if c.key in runs and runs[c.key].notna().any()]


def columns_for(task: str, runs: pd.DataFrame | None = None) -> list[Column]:
    """A table's columns: its protocol's section columns (those ``runs`` have), then the
    task's."""
    return section_columns(runs) + list(TASKS.get(task).columns)


def console_columns(task: str, runs: pd.DataFrame | None = None) -> list[Column]:
    """What fits a terminal: the columns tools/leaderboard.py prints (files get them all)."""
    keys = TASKS.get(task).console_keys
    return section_columns(runs) + [c for c in TASKS.get(task).columns if c.key in keys]


def protocol_options(runs: pd.DataFrame) -> list[str]:
    """The ``protocol.*`` columns set in ``runs``: a protocol's options (learner, memory,
    steps...) define different experiments, so tables group by them too."""
    return [c for c in runs.columns if c.startswith("protocol.") and runs[c].notna().any()]


def experiment_groups(runs: pd.DataFrame, group_by: list[str]) -> list[str]:
    """What a table's rows are told apart by: ``group_by``, the protocol's options, and the
    runs' ``tag`` where a study set one (its configurations may share dataset, method and
    loss, e.g. mixup with and without label noise, and must not be averaged together)."""
    tags = ["tag"] if "tag" in runs and runs["tag"].notna().any() else []
    modes = ["method.mode"] if "method.mode" in runs and runs["method.mode"].notna().any() \
        else []
    return group_by + [m for m in modes if m not in group_by] + protocol_options(runs) + \
        [t for t in tags if t not in group_by]


def _cell(value):
    """A protocol option as a table cell: text (JSON for lists and dicts), so that it groups,
    filters (``--filter protocol.learner=wa``) and prints as written; None stays missing."""
    if value is None:
        return None
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value)


@dataclass
class RunTable:
    completed: pd.DataFrame
    incomplete: pd.DataFrame  # running, failed, interrupted, partial: listed, never averaged
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def duplicates(self) -> pd.DataFrame:
        """Completed runs that share their config and seed with another completed run."""
        if self.completed.empty:
            return self.completed
        return self.completed[self.completed.duplicated("config_key", keep=False)]


def _row(path: Path, results: dict) -> dict:
    cfg = results.get("config") or {}
    test, ts = results.get("test") or {}, results.get("test_ts") or {}
    timings = results.get("timings") or {}
    tops = [r["test_top1"] for r in results.get("history") or [] if r.get("test_top1") is not None]
    numbers, fields = {}, {}
    for section in sections():
        values = results.get(section.key) or {}
        numbers.update({key: value for key, value in values.items()
                        if value is None or isinstance(value, (int, float))})
        fields.update({key: values.get(key) or None for key in section.fields})
    return {
        "run_dir": str(path.parent),
        "protocol": results.get("protocol", "standard"),  # runs written before protocols
        "task": results.get("task", "classification"),
        "dataset": cfg["dataset"]["name"],
        "backbone": cfg["backbone"]["name"],
        "method": (cfg.get("method") or {}).get("name", "erm"),
        # a method's variant (metrix's input / feature / embed): different experiments
        "method.mode": _cell((cfg.get("method") or {}).get("mode")),
        "loss": (cfg.get("loss") or {}).get("name"),
        "epochs": (cfg.get("trainer") or {}).get("epochs"),
        # dataset.label_noise.p, for --group-by ...,label_noise (the temperature-scaling study)
        "label_noise": ((cfg["dataset"].get("label_noise") or {}).get("p") or 0.0),
        **{f"protocol.{k}": _cell(v) for k, v in (cfg.get("protocol") or {}).items()
           if k != "name"},
        "seed": results.get("seed"),
        "tag": cfg.get("tag"),  # the run's label in a study (reproductions select runs by it)
        "status": results.get("status", "unknown"),
        "reference": results.get("reference"),  # a merge's reference row (merger individual/base)
        **numbers,
        **fields,  # a section's records for its own tables (steps, λ searched, corruptions)
        **test,
        **{f"ts_{k}": v for k, v in ts.items()},
        # dataset.label_noise.test: the same predictions against the test labels as published
        **{f"clean_{k}": v for k, v in (results.get("test_clean") or {}).items()},
        **{f"clean_ts_{k}": v for k, v in (results.get("test_clean_ts") or {}).items()},
        "temperature": results.get("temperature"),
        "train_s": timings.get("train_s"),
        "samples_per_s": timings.get("samples_per_s"),
        # OpenMixup's reported metric: the median test top-1 of the last 10 epochs.
        "last10_median_top1": float(pd.Series(tops[-10:]).median()) if tops else None,
        # the run's own headline (eval.top1, eval.top1_heads): --top1 headline
        "headline_top1": run_headline(results),
        "reliability": results.get("reliability"),
        "config_key": json.dumps(experiment_config(cfg), sort_keys=True),
        **_geometry(path.parent),
    }


def _geometry(run_dir: Path) -> dict:
    """``geometry.KEY`` for each number in the run's geometry.json (tools/analyze.py
    --geometry), if it has one; a broken one loses only these columns, not the run."""
    path = run_dir / GEOMETRY_JSON
    if not path.exists():
        return {}
    try:
        report = json.loads(path.read_text())
        if not isinstance(report, dict):
            raise ValueError(f"expected a JSON object, got {type(report).__name__}")
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable %s (%s)", path, err)
        return {}
    return {f"geometry.{key}": value for key, value in report.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def load_runs(root: str | Path) -> RunTable:
    """Every results.json below ``root`` (any depth, Hydra multirun layouts included)."""
    rows, unreadable = [], []
    for path in sorted(Path(root).rglob(RESULTS_NAME)):
        try:
            results = json.loads(path.read_text())
            stands_for = [r for section in sections() for r in section.expand(results)]
            rows += [_row(path, record) for record in (results, *stands_for)]
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as err:
            unreadable.append((str(path), f"{type(err).__name__}: {err}"))
            log.warning("skipping unreadable %s (%s)", path, err)
    if not rows:
        empty = pd.DataFrame(columns=["run_dir", *SECTION, "status", "seed", *IDENTITY])
        return RunTable(empty, empty.copy(), unreadable)
    frame = pd.DataFrame(rows)
    # a reference row comes with every merge of the same models: keep one per experiment
    frame = frame[~(frame["reference"].notna() & frame.duplicated("config_key"))]
    done = frame["status"] == "completed"
    return RunTable(frame[done].reset_index(drop=True), frame[~done].reset_index(drop=True),
                    unreadable)


def filter_runs(runs: pd.DataFrame, filters: dict[str, str]) -> pd.DataFrame:
    """Keep rows whose column equals the value (compared as strings: ``epochs=200`` works)."""
    for key, value in filters.items():
        if key not in runs:
            raise KeyError(f"cannot filter on '{key}': the run table has columns "
                           f"{', '.join(c for c in runs.columns if c != 'config_key')}")
        runs = runs[runs[key].astype(str) == value]
    return runs


def summarize(runs: pd.DataFrame, columns: list[Column],
              group_by: list[str] | None = None) -> pd.DataFrame:
    """One row per group: ``KEY`` (mean over seeds), ``KEY_std`` (population std) and
    ``seeds``, sorted best-first by the first column."""
    group_by = group_by or IDENTITY
    present = [c.key for c in columns if c.key in runs]
    numeric = runs[present].apply(pd.to_numeric, errors="coerce")
    grouped = numeric.groupby([runs[g] for g in group_by], dropna=False)
    table = grouped.mean().join(grouped.std(ddof=0).add_suffix("_std"))
    table["seeds"] = grouped.size()
    primary = columns[0]
    return table.reset_index().sort_values(
        primary.key, ascending=not primary.higher_is_better, ignore_index=True)


def widen(long: pd.DataFrame, group_by: list[str], pivot: str, value: Column,
          names: dict) -> tuple[pd.DataFrame, list[Column]]:
    """A ``summarize`` table with one row per group and ``pivot`` value turned wide: a
    column per pivot value (``names``: value → (key, header), in display order)."""
    keys = {v: key for v, (key, _) in names.items()}
    wide = long.set_index(group_by + [pivot])[[value.key, f"{value.key}_std", "seeds"]]
    wide = wide.unstack(pivot)  # only the groups that exist (pivot_table would cross them)
    out = wide[value.key].rename(columns=keys).join(
        wide[f"{value.key}_std"].rename(columns={v: f"{k}_std" for v, k in keys.items()}))
    out["seeds"] = wide["seeds"].max(axis=1)
    columns = [Column(key, header, value.scale, value.higher_is_better, value.decimals)
               for key, header in names.values()]
    return out.reset_index(), columns


def attach_reference(summary: pd.DataFrame, reference: pd.DataFrame, primary: Column,
                     group_by: list[str] | None = None) -> pd.DataFrame:
    """Add ``ref_KEY`` and ``delta_KEY`` (ours − reference) from a published table, matched
    on the grouping columns both have. The reference holds the primary metric in the table's
    display unit (top-1 in %), as published."""
    reference = reference.copy()
    if "method" in reference:
        reference["method"] = reference["method"].replace(METHOD_ALIASES)
    if primary.key not in reference:
        raise KeyError(f"the reference table has no '{primary.key}' column "
                       f"(it has {', '.join(reference.columns)})")
    keys = [k for k in group_by or IDENTITY if k in reference and k in summary]
    reference = reference[keys + [primary.key]].rename(columns={primary.key: f"ref_{primary.key}"})
    reference[f"ref_{primary.key}"] = reference[f"ref_{primary.key}"] / primary.scale
    reference = reference.drop_duplicates(keys)
    missing = reference[keys].isna()
    # protocol options are text in the run table (see _cell); numbers elsewhere
    reference = reference.astype({k: str if summary[k].dtype == object else summary[k].dtype
                                  for k in keys})
    for k in keys:  # a reference row without a value (e.g. no method.mode) stays missing
        if summary[k].dtype == object:
            reference.loc[missing[k], k] = None
    merged = summary.merge(reference, on=keys, how="left")
    merged[f"delta_{primary.key}"] = merged[primary.key] - merged[f"ref_{primary.key}"]
    return merged


def to_markdown(summary: pd.DataFrame, columns: list[Column],
                group_by: list[str] | None = None) -> str:
    """mean ± std per column, the best of each ranked column in bold. Identity columns that
    are the same on every row move to a caption line above the table."""
    return render_table(summary, columns, group_by).to_markdown(index=False)


def render_table(summary: pd.DataFrame, columns: list[Column],
                 group_by: list[str] | None = None, bold=("**", "**")) -> "RenderedTable":
    group_by = group_by or IDENTITY
    constant = [c for c in group_by
                if len(summary) > 1 and summary[c].nunique(dropna=False) == 1]
    shown = summary[[c for c in group_by if c not in constant] + ["seeds"]].astype(object)
    shown = shown.where(shown.notna(), "—")  # an option a run does not have
    for col in columns:
        if col.key not in summary or summary[col.key].isna().all():
            continue
        mean, std = summary[col.key] * col.scale, summary[f"{col.key}_std"] * col.scale
        cells = [f"{m:.{col.decimals}f} ± {s:.{col.decimals}f}" if pd.notna(m) else "—"
                 for m, s in zip(mean, std)]
        if col.higher_is_better is not None:
            best = mean.idxmax() if col.higher_is_better else mean.idxmin()
            cells[best] = f"{bold[0]}{cells[best]}{bold[1]}"
        shown[col.title] = cells
        ref = f"ref_{col.key}"
        if ref in summary:
            shown[f"published {col.header}"] = [
                f"{r * col.scale:.{col.decimals}f}" if pd.notna(r) else "—" for r in summary[ref]]
            shown[f"Δ {col.header}"] = [
                f"{d * col.scale:+.{col.decimals}f}" if pd.notna(d) else "—"
                for d in summary[f"delta_{col.key}"]]
    caption = " · ".join(f"{c} {summary[c].iloc[0]}" for c in constant)
    return RenderedTable(shown, caption)


@dataclass
class RenderedTable:
    """Display strings (one column per metric) plus the caption of constant columns."""

    cells: pd.DataFrame
    caption: str

    def to_markdown(self, index: bool = False) -> str:
        table = self.cells.to_markdown(index=index, disable_numparse=True)  # keep our formatting
        return f"{self.caption}\n\n{table}" if self.caption else table
