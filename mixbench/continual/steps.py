"""What the continual protocols share: the run as a sequence of steps, resumable at any
epoch of any step, each step evaluated on every class seen so far.

Files in the run folder: ``last.pt`` is the checkpoint of the step being trained (written by
``fit`` after each epoch, with the step, the memory as it stands and the records of the
steps before); ``steps/step_NN.pt`` is written when step NN ends (the model after it, the
memory after it, the records up to it). A run resumes after the last step that ended, or
inside the step ``last.pt`` belongs to."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mixbench.continual.metrics import continual_metrics
from mixbench.continual import section as _section  # noqa: F401  (the continual section of the leaderboard)
from mixbench.config import check_same_experiment
from mixbench.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from mixbench.engine.context import RunContext
from mixbench.eval.evaluate import predict
from mixbench.results.record import completed_record

STEPS_DIR = "steps"


def step_file(run_dir: Path, step: int) -> Path:
    return run_dir / STEPS_DIR / f"step_{step:02d}.pt"


@dataclass
class StepStart:
    """Where a run starts: ``step``, with the model, memory, records and history as the
    previous step left them (``model`` None: a fresh model), and ``inside`` the checkpoint
    of ``step`` itself when the run stopped during it."""

    step: int = 0
    model: dict | None = None
    memory: dict | None = None
    records: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    inside: dict[str, Any] | None = None
    metrics: dict | None = None  # the task's evaluation after the previous step


def resume_point(ctx: RunContext) -> StepStart:
    path = ctx.run_dir / CHECKPOINT_NAME
    if not path.exists():
        return StepStart()
    last = load_checkpoint(path)
    check_same_experiment(last["config"], ctx.config, path)
    step = last["step"]
    if step_file(ctx.run_dir, step).exists():  # that step ended after its last epoch
        ended = load_checkpoint(step_file(ctx.run_dir, step))
        return StepStart(step + 1, ended["model"], ended["memory"], ended["records"],
                         ended["history"], metrics=ended["metrics"])
    before = load_checkpoint(step_file(ctx.run_dir, step - 1)) if step > 0 else {}
    return StepStart(step, before.get("model"), last["memory"], last["records"],
                     last["past_history"], inside=last)


def save_step_end(ctx: RunContext, step: int, model: torch.nn.Module, memory: dict | None,
                  records: list[dict], history: list[dict], metrics: dict) -> None:
    path = step_file(ctx.run_dir, step)
    if ctx.main:
        path.parent.mkdir(exist_ok=True)
    ctx.save_checkpoint(path, {"step": step, "model": model.state_dict(), "memory": memory,
                               "records": records, "history": history, "metrics": metrics,
                               "config": ctx.config})


def evaluate_step(ctx: RunContext, task, model, val_loader, test_loader,
                  ranges: list[tuple[int, int]], last: bool) -> tuple[dict, dict]:
    """After a step: the task's evaluation on the seen classes (the reliability diagram of
    the last step), and the step's record of it."""
    start = time.perf_counter()
    metrics = task.evaluate(model, val_loader, test_loader, ctx.device, n_bins=ctx.cfg.eval.n_bins,
                            autocast=ctx.autocast, info=ctx.info,
                            figure_path=ctx.run_dir / "reliability.png"
                            if last and ctx.main else None)
    record = {**step_accuracies(model, test_loader, ranges, ctx.device, ctx.autocast, ctx.info),
              "top1": metrics["test"]["top1"], "ece": metrics["test"]["ece"],
              "nll": metrics["test"]["nll"], "ts_ece": metrics["test_ts"]["ece"],
              "temperature": metrics["temperature"], "eval_s": time.perf_counter() - start}
    return metrics, record


def finish(ctx: RunContext, metrics: dict, records: list[dict], history: list[dict],
           class_order: list[int]) -> dict:
    """The completed results.json: the last step's evaluation, every step's history and
    timings (the one record builder), and the ``continual`` section."""
    ctx.record = completed_record(ctx.record, metrics=metrics, history=history,
                                  train_s=sum(r["train_s"] for r in records),
                                  eval_s=sum(r["eval_s"] for r in records),
                                  processes=ctx.info.world_size)
    results = ctx.write_results(continual=continual_section(records, class_order))
    ctx.logger.log_results(results, None)
    return results


def log_step(log, step: int, steps: int, classes: list[int], record: dict) -> None:
    log.info("step %d/%d: classes %s, top-1 on %d seen classes %.4f, ECE %.4f", step + 1,
             steps, classes, record["seen"], record["top1"], record["ece"])


def step_accuracies(model, test_loader, ranges: list[tuple[int, int]], device, autocast,
                    info) -> dict:
    """From one pass over the test samples of the seen classes: the accuracy on each step's
    classes (a row of the accuracy matrix), on old and on new classes, and the share of
    predictions that fall in the newest step's classes (the bias toward them)."""
    logits, labels = predict(model, test_loader, device, autocast, info)
    right = logits.argmax(1) == labels
    low, high = ranges[-1]
    predicted = logits.argmax(1)
    old = labels < low

    def accuracy(mask):
        return right[mask].float().mean().item() if mask.any() else None

    return {"acc_row": [accuracy((labels >= a) & (labels < b)) for a, b in ranges],
            "acc_old": accuracy(old), "acc_new": accuracy(~old),
            "newest_share": ((predicted >= low) & (predicted < high)).float().mean().item(),
            "test_sizes": [int(((labels >= a) & (labels < b)).sum()) for a, b in ranges]}


def continual_section(records: list[dict], class_order: list[int]) -> dict:
    """results.json's ``continual``: the accuracy matrix, its summary numbers (weighted by
    each step's test samples), and the per-step records."""
    steps = len(records)
    matrix = [[row[j] if j < len(row) else None for j in range(steps)]
              for row in (r["acc_row"] for r in records)]
    filled = [[v if v is not None else 0.0 for v in row] for row in matrix]
    return {"acc_matrix": matrix,
            **continual_metrics(filled, sizes=records[-1]["test_sizes"]),
            "step_acc": [r["top1"] for r in records],
            "class_order": class_order,
            "steps": records}
