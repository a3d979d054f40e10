"""The results.json record, built in one place: a run's identity when it starts, and what a
completed training adds (metrics, history, timings). Training and re-evaluation both use it,
so the two cannot drift apart. The schema is in docs/results.md."""
from __future__ import annotations

from mixbench.results.io import git_sha


def new_record(config: dict, *, protocol: str, seed: int) -> dict:
    """A run that has started: what it is, and the code that runs it."""
    return {"config": config, "task": None, "protocol": protocol, "seed": seed,
            "git_sha": git_sha(), "status": "running"}


def completed_record(record: dict, *, metrics: dict, history: list[dict], train_s: float,
                     eval_s: float, processes: int | None, status: str = "completed") -> dict:
    """``record`` with a finished training's metrics, per-epoch history and timings (the
    samples of every epoch over the training time; ``processes`` under DDP)."""
    samples = sum(r["samples"] for r in history)
    out = {key: value for key, value in record.items() if key != "error"}
    out.update(metrics, history=history, status=status, timings={
        "train_s": train_s, "eval_s": eval_s,
        "samples_per_s": samples / train_s if train_s > 0 else None,
        "processes": processes})
    return out
