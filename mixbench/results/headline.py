"""The headline top-1 of a run: the one number a paper's table would print for it.

``eval.top1`` says how it is read off the per-epoch test top-1 in the history:
``final`` (the last epoch's model) or ``median_last_N`` (the median of the last N epochs;
OpenMixup reports ``median_last_10``). ``eval.top1_heads`` says whose: ``model`` (the trained
network) or ``best`` (the best median among the heads the method evaluates, e.g. AutoMix's
classifier and its momentum copy, as OpenMixup's AutoMix/SAMix summaries do). The run records
the result as ``headline`` in results.json; the leaderboard shows it with ``--top1 headline``.
"""
from __future__ import annotations

import re
import statistics

import pandas as pd

from mixbench.errors import ConfigError

HISTORY_KEY = "test_top1"  # the classification history's test top-1
MODEL = "model"  # the trained network's head; others are the method's eval_heads()
HEAD_CHOICES = ("model", "best")
_MEDIAN = re.compile(r"median_last_(\d+)$")


def window(rule: str) -> int | None:
    """Epochs a rule takes the median of (None: ``final``); a clear error for anything else."""
    if rule == "final":
        return None
    match = _MEDIAN.match(str(rule))
    if match is None or int(match.group(1)) < 1:
        raise ConfigError(f"eval.top1 must be 'final' or 'median_last_N' (N >= 1, e.g. "
                          f"median_last_10, OpenMixup's), got {rule!r}")
    return int(match.group(1))


def check_headline(rule: str, heads: str) -> None:
    window(rule)
    if heads not in HEAD_CHOICES:
        raise ConfigError(f"eval.top1_heads must be one of {', '.join(HEAD_CHOICES)}, "
                          f"got {heads!r}")


def head_key(head: str) -> str:
    return HISTORY_KEY if head == MODEL else f"{HISTORY_KEY}_{head}"


def heads_in(history: list[dict]) -> list[str]:
    """The heads with a test top-1 in ``history``: the model first, then the others."""
    names = {key[len(HISTORY_KEY) + 1:] for record in history for key in record
             if key.startswith(HISTORY_KEY + "_")}
    return [MODEL] + sorted(names)


def headline(history: list[dict], rule: str = "final", heads: str = MODEL) -> dict | None:
    """``{"top1", "rule", "heads", "head", "per_head", "epochs"}`` from a run's history;
    None when no epoch recorded a test top-1 (e.g. a regression run). ``epochs``: the
    epochs read (those within the last N of the run that evaluated the test set)."""
    check_headline(rule, heads)
    scored = [r for r in history if r.get(HISTORY_KEY) is not None]
    if not scored:
        return None
    last = history[-1]["epoch"]
    n = window(rule)
    if n is None:
        chosen_records = scored[-1:]
    else:
        chosen_records = [r for r in scored if r["epoch"] > last - n]
        if not chosen_records:  # eval_every larger than the window: the last evaluation
            chosen_records = scored[-1:]
    per_head = {}
    for head in heads_in(history) if heads == "best" else [MODEL]:
        values = [r[head_key(head)] for r in chosen_records if r.get(head_key(head)) is not None]
        if values:
            per_head[head] = float(statistics.median(values))
    best = max(per_head, key=lambda h: per_head[h])  # ties: the model (listed first)
    return {"top1": per_head[best], "rule": rule, "heads": heads, "head": best,
            "per_head": per_head, "epochs": [r["epoch"] for r in chosen_records]}


def with_headline(metrics: dict, history: list[dict], evaluation) -> dict:
    """``metrics`` plus ``headline`` from ``history`` under the run's ``eval`` options (left
    out when the history has no test top-1)."""
    top = headline(history, evaluation.get("top1", "final"), evaluation.get("top1_heads", MODEL))
    return metrics if top is None else {**metrics, "headline": top}


def run_headline(results: dict) -> float | None:
    """A results.json's headline top-1: as the run recorded it, or, for runs written before
    ``headline`` existed, computed from its history with its config's ``eval`` options."""
    recorded = results.get("headline")
    if isinstance(recorded, dict):
        return recorded.get("top1")
    evaluation = ((results.get("config") or {}).get("eval") or {})
    try:
        computed = headline(results.get("history") or [], evaluation.get("top1", "final"),
                            evaluation.get("top1_heads", MODEL))
    except ConfigError:
        return None
    return computed["top1"] if computed else None


TOP1_CHOICES = ("final", "last10_median", "headline")


def select_top1(runs: pd.DataFrame, which: str) -> pd.DataFrame:
    """The run table with ``top1`` as the leaderboard's ``--top1`` asks: ``final`` (the final
    evaluation), ``last10_median`` (the model's median of the last 10 epochs, whatever the
    run's config) or ``headline`` (each run's own headline: ``eval.top1``/``top1_heads``, what
    the published OpenMixup column holds for runs of experiment=cifar100_r18_openmixup)."""
    if which not in TOP1_CHOICES:
        raise ConfigError(f"--top1 must be one of {', '.join(TOP1_CHOICES)}, got {which!r}")
    if which == "final" or "top1" not in runs:
        return runs
    column = {"last10_median": "last10_median_top1", "headline": "headline_top1"}[which]
    return runs.assign(top1=runs[column])
