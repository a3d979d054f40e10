"""Seed papers' claims checked against our runs.

A YAML spec lists claims: each names a metric and two filters of the run table, the runs of the
method a paper proposes (``ours``) and those it is compared with (``baseline``), and quotes
the paper's own numbers. The numbers and the verdict come from the runs (mean ± std over
seeds); only the quote and ``why`` are written by hand.

``why`` says what a verdict other than *reproduced* is due to, as ``CAUSE: reason``: ``recipe``
(our recipe differs from the paper's: a setting, a law, a model), ``scale`` (the data, the
model or the training length are far smaller than the paper's), ``method`` (the method itself,
as specified, does not do what is claimed here), ``unknown`` (not settled: the reason says
what was checked); ``none`` on claims reproduced here."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import yaml

from mixbench import tasks  # noqa: F401  (registration: each task's columns)
from mixbench.errors import ConfigError
from mixbench.registry import TASKS
from mixbench.results.columns import Column
from mixbench.results.sections import section_column_list
from mixbench.results.table import filter_runs

REQUIRED = ("system", "claim", "command")
TESTED = ("metric", "ours", "baseline")
OPTIONAL = ("paper", "higher_is_better", "untested", "why")
KEYS = REQUIRED + TESTED + OPTIONAL
TEXT_KEYS = REQUIRED + ("paper", "untested")

# What a verdict is due to (``why: CAUSE: reason``); NO_CAUSE is for reproduced claims.
CAUSES = ("recipe", "scale", "method", "unknown", "none")
NO_CAUSE = "none"

REPRODUCED, NOT_REPRODUCED = "reproduced", "not reproduced"
INCONCLUSIVE = "inconclusive (within one std)"


@dataclass(frozen=True)
class Claim:
    system: str
    claim: str
    command: str
    paper: str | None = None
    untested: str | None = None  # why the claim is not tested here
    why: str | None = None  # "CAUSE: reason", CAUSE one of CAUSES
    column: Column | None = None  # the metric: its key, direction, unit and decimals
    ours: dict[str, str] = field(default_factory=dict)
    baseline: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Side:
    """The runs one filter of a claim selects: how many matched, and the metric over those
    that have it (mean and population std over seeds)."""

    matched: int
    runs: int = 0
    mean: float = float("nan")
    std: float = float("nan")


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    ours: Side | None  # None: not tested here
    baseline: Side | None
    verdict: str


def known_columns() -> list[Column]:
    """Every leaderboard column: the protocol sections', then each task's."""
    return (section_column_list()
            + [c for name in TASKS.names() for c in TASKS.get(name).columns])


def metric_column(key: str) -> Column | None:
    """The leaderboard's Column for ``key``; an after-temperature-scaling key (``ts_*``)
    without one of its own takes its base metric's."""
    known = {c.key: c for c in reversed(known_columns())}  # the first definition wins
    if key in known:
        return known[key]
    base = known.get(key.removeprefix("ts_")) if key.startswith("ts_") else None
    return replace(base, key=key, header=f"{base.header} after TS") if base else None


def load_claims(path: str | Path) -> list[Claim]:
    """The claims of a YAML spec (a list of mappings), validated."""
    path = Path(path)
    try:
        entries = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read the claims in {path}: {err}") from err
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path} must be a YAML list of claims (- system: ..., claim: ..., "
                          f"command: ..., metric: ..., ours: ..., baseline: ...); "
                          f"got {type(entries).__name__}")
    return [_claim(entry, _where(path, i, entry)) for i, entry in enumerate(entries)]


def _where(path: Path, index: int, entry) -> str:
    """How an error names a claim: its place in the file and its system."""
    system = entry.get("system") if isinstance(entry, dict) else None
    return f"{path}: claim {index + 1}" + (f" ({system})" if system else "")


def _claim(entry, where: str) -> Claim:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a claim is a mapping with keys {', '.join(KEYS)}; "
                          f"got {entry!r}")
    unknown = sorted(str(k) for k in set(entry) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; a claim's keys are "
                          f"{', '.join(KEYS)}")
    missing = [k for k in REQUIRED if entry.get(k) in (None, "")]
    if missing:
        raise ConfigError(f"{where}: add {', '.join(missing)} (required: {', '.join(REQUIRED)})")
    text = {k: _one_line(entry[k], k, where) for k in TEXT_KEYS if entry.get(k) is not None}
    if entry.get("why") is not None:
        text["why"] = _why(entry["why"], where)
    if "untested" in text:
        given = [k for k in (*TESTED, "higher_is_better") if k in entry]
        if given:
            raise ConfigError(f"{where}: an untested claim has no {', '.join(given)}; remove "
                              f"them, or remove untested to test the claim")
        return Claim(**text)
    absent = [k for k in TESTED if entry.get(k) is None]
    if absent:
        raise ConfigError(f"{where}: add {', '.join(absent)} (or untested: WHY to say why "
                          f"the claim is not tested here)")
    metric = _one_line(entry["metric"], "metric", where)
    return Claim(**text, column=_directed_column(metric, entry.get("higher_is_better"), where),
                 ours=_filter(entry["ours"], "ours", where),
                 baseline=_filter(entry["baseline"], "baseline", where))


def _one_line(value, key: str, where: str) -> str:
    if not isinstance(value, str) or "\n" in value.strip():
        raise ConfigError(f"{where}: {key} must be one line of text, got {value!r}")
    return value.strip()


def why_cause(why: str) -> str:
    """The cause of a ``why`` text: the word before its first colon."""
    return why.split(":", 1)[0].strip()


def _why(value, where: str) -> str:
    """``CAUSE: reason``, CAUSE one of CAUSES and a reason after it."""
    text = _one_line(value, "why", where)
    cause, _, reason = text.partition(":")
    if cause.strip() not in CAUSES or not reason.strip():
        raise ConfigError(f"{where}: why must read 'CAUSE: reason' with CAUSE one of "
                          f"{', '.join(CAUSES)} (none: reproduced here), e.g. 'scale: 8x8 "
                          f"digits leave one or two test images between methods'; got {text!r}")
    return f"{cause.strip()}: {reason.strip()}"


def _filter(value, key: str, where: str) -> dict[str, str]:
    """A side's filter: column → value, compared as text like ``filter_runs``."""
    scalars = (str, int, float, bool, type(None))
    if (not isinstance(value, dict) or not value
            or not all(isinstance(v, scalars) for v in value.values())):
        raise ConfigError(f"{where}: {key} must map run-table columns to values, e.g. "
                          f"{{tag: mixup}}; got {value!r}")
    return {str(k): str(v) for k, v in value.items()}


def _directed_column(metric: str, explicit, where: str) -> Column:
    """The metric's Column, with the direction the leaderboard knows or the claim gives."""
    if explicit is not None and not isinstance(explicit, bool):
        raise ConfigError(f"{where}: higher_is_better must be true or false, got {explicit!r}")
    column = metric_column(metric)
    known = column.higher_is_better if column else None
    if known is None and explicit is None:
        raise ConfigError(f"{where}: no known direction for metric '{metric}': add "
                          f"higher_is_better: true or false")
    if known is not None and explicit is not None and explicit != known:
        raise ConfigError(f"{where}: higher_is_better: {str(explicit).lower()} contradicts "
                          f"'{metric}', where {'higher' if known else 'lower'} is better; "
                          f"remove it")
    if column is None:
        return Column(metric, metric, 1.0, explicit, 3)
    return replace(column, higher_is_better=explicit if known is None else known)


def evaluate_claims(runs: pd.DataFrame, claims: list[Claim]) -> list[ClaimResult]:
    """Each claim's two sides over ``runs`` (completed runs, one row each) and its verdict."""
    return [_evaluate(runs, claim) for claim in claims]


def _evaluate(runs: pd.DataFrame, claim: Claim) -> ClaimResult:
    if claim.untested is not None:
        return ClaimResult(claim, None, None, f"not tested here: {claim.untested}")
    ours = _side(runs, claim.ours, claim)
    baseline = _side(runs, claim.baseline, claim)
    empty = [_describe(name, side, claim) for name, side in
             (("ours", ours), ("baseline", baseline)) if side.runs == 0]
    if empty:
        return ClaimResult(claim, ours, baseline, f"no runs: {'; '.join(empty)}")
    return ClaimResult(claim, ours, baseline,
                       verdict(ours, baseline, claim.column.higher_is_better))


def _side(runs: pd.DataFrame, filters: dict[str, str], claim: Claim) -> Side:
    # a column no run has (e.g. protocol.merger before any merge ran) selects nothing
    if runs.empty or any(key not in runs for key in filters):
        return Side(0)
    selected = filter_runs(runs, filters)
    key = claim.column.key
    values = (pd.to_numeric(selected[key], errors="coerce").dropna() if key in selected
              else pd.Series(dtype=float))
    if values.empty:
        return Side(len(selected))
    return Side(len(selected), len(values), float(values.mean()), float(values.std(ddof=0)))


def _describe(name: str, side: Side, claim: Claim) -> str:
    """Why a side has no numbers: its filter matched nothing, or no matched run has the
    metric."""
    filters = getattr(claim, name)
    what = f"{name} ({', '.join(f'{k}={v}' for k, v in filters.items())})"
    if side.matched == 0:
        return f"{what} matched nothing"
    return f"{what} matched {side.matched} run(s), none with {claim.column.key}"


def verdict(ours: Side, baseline: Side, higher_is_better: bool) -> str:
    """Reproduced when ours is better in the claimed direction by more than the noise (the
    larger std over seeds; with one seed each, any difference counts)."""
    better_by = (ours.mean - baseline.mean) * (1 if higher_is_better else -1)
    noise = max(ours.std, baseline.std)
    if better_by > noise:
        return REPRODUCED
    if better_by < -noise:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def why_cell(result: ClaimResult) -> str:
    """The claim's ``why``; flagged when it was written for another verdict than the runs
    give (``none`` on a claim not reproduced, a cause on one reproduced), so a stale reason
    shows. Claims without a verdict here (no runs, not tested) show it as written."""
    why = result.claim.why
    if why is None:
        return "—"
    if result.verdict not in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE):
        return why
    reproduced = result.verdict == REPRODUCED
    if (why_cause(why) == NO_CAUSE) != reproduced:
        return f"{why} (written for a{'nother' if reproduced else ' reproduced'} verdict)"
    return why


def to_markdown(results: list[ClaimResult]) -> str:
    """One row per claim: system | claim | command | ours | baseline | paper | verdict |
    why."""
    rows = [{"system": r.claim.system, "claim": _claim_text(r.claim),
             "command": f"`{r.claim.command}`",
             "ours": _side_cell(r.ours, r.claim.column),
             "baseline": _side_cell(r.baseline, r.claim.column),
             "paper": r.claim.paper or "—", "verdict": r.verdict, "why": why_cell(r)}
            for r in results]
    cells = pd.DataFrame(rows).map(lambda text: text.replace("|", "\\|"))  # a cell's own pipes
    return cells.to_markdown(index=False, disable_numparse=True)


def _claim_text(claim: Claim) -> str:
    """The claim, with the metric it is judged on (and its direction)."""
    return f"{claim.claim} ({claim.column.title})" if claim.column else claim.claim


def _side_cell(side: Side | None, column: Column | None) -> str:
    """``2.31 ± 0.12 % (3 runs)``, in the column's unit and decimals."""
    if side is None:
        return "—"
    if side.runs == 0:
        return "no runs"
    unit = " %" if "%" in column.header.split() else ""
    d = column.decimals
    return (f"{side.mean * column.scale:.{d}f} ± {side.std * column.scale:.{d}f}{unit} "
            f"({side.runs} run{'s' if side.runs != 1 else ''})")


def reproductions_page(results: list[ClaimResult], command: str, runs: int) -> str:
    """reproductions.md: a heading, how it was generated, the table."""
    return (f"# mixbench: reproductions\n\n"
            f"Generated by `{command}` from {runs} completed runs. Verdict: reproduced when "
            f"ours beats the baseline in the claimed direction by more than the larger std "
            f"over seeds, not reproduced when the baseline does, inconclusive otherwise.\n\n"
            f"{to_markdown(results)}\n")
