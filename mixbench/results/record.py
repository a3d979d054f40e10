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
    out = {key: value for key, value in record.items() if key != "error"}
    out.update(metrics, history=history, status=status,
               timings=timings(train_s, eval_s, samples=sum(r["samples"] for r in history),
                               processes=processes))
    return out


def timings(train_s: float | None, eval_s: float, *, samples: int | None = None,
            processes: int | None = 1, **rates: float | None) -> dict:
    """results.json's ``timings``: seconds training and evaluating, training samples per
    second (None when nothing trained), the number of processes, and any other ``rates``
    (e.g. a distillation's iterations per second)."""
    return {"train_s": train_s, "eval_s": eval_s,
            "samples_per_s": samples / train_s if samples and train_s else None,
            "processes": processes, **rates}


def evaluation_record(config: dict, *, protocol: str, seed: int, seconds: float,
                      **sections) -> dict:
    """The completed record of a run that trains nothing (an adaptation, a merge):
    ``sections`` are its protocol section and metrics."""
    record = new_record(config, protocol=protocol, seed=seed)
    record.update(task="classification", status="completed", **sections,
                  timings=timings(None, seconds))
    return record
