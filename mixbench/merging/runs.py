"""Merging runs that mixbench trained: θ₀ is a finished run, each task a run fine-tuned from it
(``trainer.init_from``) on its own dataset, with its own classifier head. The bodies merge;
each task keeps its head and is evaluated on its own data.

``merge_runs`` is what ``tools/merge.py`` does: load and check the runs, merge with one scale
λ (``search.name=grid``) or one per task (``evolution``) chosen on the tasks' validation
splits (never on test), optionally recompute BatchNorm
statistics per task, and return the results.json record with a ``merge`` section (per task:
top-1, ECE, the fine-tuned model's and θ₀'s top-1, normalised accuracy; their averages)."""
from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from mixbench.engine.context import resolve_device
from mixbench.engine.load import LoadedRun, load_run
from mixbench.errors import ConfigError
from mixbench.eval.evaluate import predict
from mixbench.merging import mergers, pcb  # noqa: F401  (registration)
from mixbench.merging import section as _section  # noqa: F401  (the merge section of the leaderboard)
from mixbench.merging.task_vectors import check_compatible
from mixbench.results.io import read_results
from mixbench.registry import MERGERS
from mixbench.results.record import evaluation_record

log = logging.getLogger(__name__)

# MERGERS: merge.name → the function (θ₀, fine-tuned, scale=..., keys=..., **options)
# (mixbench/merging/mergers.py, pcb.py). Every merge also records the reference rows: each
# fine-tuned model on its own task, and θ₀'s body under each task's head.
REFERENCES = ("individual", "base")
BN_MODES = ("recompute", "merge")


@dataclass
class FineTuned:
    """One fine-tuned run: its model (weights as trained), and those weights kept aside."""

    run: LoadedRun
    trained: dict[str, Tensor]

    @property
    def name(self) -> str:
        return str(self.run.cfg.dataset.name)

    @property
    def model(self) -> nn.Module:
        return self.run.parts.model


def body_names(model: nn.Module) -> list[str]:
    """The state-dict keys outside the classifier head: what merges."""
    head = {f"head.{k}" for k in model.head.state_dict()}
    return [k for k in model.state_dict() if k not in head]


def load_tasks(base_dir: str | Path, model_dirs: Sequence[str | Path],
               device: torch.device) -> tuple[LoadedRun, list[FineTuned], list[str]]:
    """θ₀'s run, the fine-tuned runs, and the names that merge. Refuses runs that were not
    fine-tuned from ``base_dir`` or whose bodies do not match θ₀'s, naming what differs."""
    if not model_dirs:
        raise ConfigError("models=[...] is empty: list the runs fine-tuned from base")
    base = load_run(base_dir, device)
    tasks = []
    for run_dir in model_dirs:
        run = load_run(run_dir, device)
        source = run.cfg.trainer.get("init_from")
        if source is None or Path(source).resolve() != Path(base_dir).resolve():
            raise ConfigError(f"{run_dir} was fine-tuned from {source or 'scratch'}, not from "
                              f"base={base_dir}: merging needs models that share θ₀. Train it "
                              f"with trainer.init_from={base_dir}")
        tasks.append(FineTuned(run, {k: v.detach().clone()
                                for k, v in run.parts.model.state_dict().items()}))
    names = body_names(base.parts.model)
    base_state = base.parts.model.state_dict()
    check_compatible(base_state, [t.trained for t in tasks], names)
    return base, tasks, names


def load_body(model: nn.Module, state: dict[str, Tensor], names: Sequence[str]) -> None:
    model.load_state_dict({k: state[k] for k in names}, strict=False)


@torch.no_grad()
def recompute_bn(model: nn.Module, loader, device: torch.device, batches: int) -> None:
    """BatchNorm statistics of ``model`` recomputed on ``batches`` batches of its task's
    training images (a cumulative average, as ``torch.optim.swa_utils.update_bn``)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i, (x, *_) in enumerate(loader):
        if i == batches:
            break
        model(x.to(device, non_blocking=True))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def set_body(task: FineTuned, body: dict[str, Tensor], names: Sequence[str], bn: str,
             bn_batches: int) -> None:
    """Task ``task``'s model with ``body`` under its own head (and BN statistics)."""
    load_body(task.model, body, names)
    if bn == "recompute":
        recompute_bn(task.model, task.run.loader("train"), task.run.parts.device, bn_batches)


def val_top1(task: FineTuned) -> float:
    logits, labels = predict(task.model, task.run.loader("val"), task.run.parts.device)
    return (logits.argmax(1) == labels).float().mean().item()


def mean_val_top1(body: dict[str, Tensor], names: Sequence[str], tasks: Sequence[FineTuned],
                  bn: str, bn_batches: int) -> float:
    """The validation top-1 of ``body`` under each task's head, averaged over the tasks:
    what every search maximises."""
    accuracies = []
    for task in tasks:
        set_body(task, body, names, bn, bn_batches)
        accuracies.append(val_top1(task))
    return sum(accuracies) / len(accuracies)


def scaled(base: dict[str, Tensor], merged: dict[str, Tensor], names: Sequence[str],
           scale: float) -> dict[str, Tensor]:
    """θ₀ + λ·τ_m from the merge at λ = 1 (every merger here is linear in a uniform λ)."""
    return {k: base[k] + scale * (merged[k] - base[k]) for k in names}


def choose_scale(base: dict[str, Tensor], merged: dict[str, Tensor], names: Sequence[str],
                 tasks: Sequence[FineTuned], scales: Sequence[float], bn: str,
                 bn_batches: int) -> tuple[float, list[dict[str, float]]]:
    """The λ of ``scales`` with the best mean validation top-1 over the tasks, and the table
    of every λ tried."""
    if not scales:
        raise ConfigError("search.scales is empty: give the λ values to try")
    tried = []
    for scale in scales:
        body = scaled(base, merged, names, scale)
        tried.append({"scale": float(scale),
                      "val_top1": mean_val_top1(body, names, tasks, bn, bn_batches)})
        log.info("λ = %.3g: mean validation top-1 %.4f", scale, tried[-1]["val_top1"])
    best = max(tried, key=lambda row: row["val_top1"])
    return best["scale"], tried


def evolve_scales(merge: Callable[[list[float]], dict[str, Tensor]],
                  names: Sequence[str], tasks: Sequence[FineTuned], search, bn: str,
                  bn_batches: int, seed: int) -> tuple[list[float], list[dict[str, Any]]]:
    """One λ per task found by nevergrad's NGOpt on the mean validation top-1, as the
    official PCB code searches (pcb-merging.py L48-76: init 1.0, bounds [0.8, 1.3], budget
    100; ``search.init`` / ``lower`` / ``upper`` / ``budget``)."""
    try:
        import nevergrad as ng
    except ImportError as err:
        raise ConfigError("search.name=evolution needs nevergrad: pip install nevergrad "
                          "(or pip install 'mixbench[merging]')") from err
    parametrization = ng.p.Array(init=[float(search.init)] * len(tasks),
                                 lower=float(search.lower), upper=float(search.upper))
    parametrization.random_state.seed(seed)
    optimizer = ng.optimizers.NGOpt(parametrization=parametrization, budget=int(search.budget))
    tried = []

    def loss(scales) -> float:
        scales = [float(s) for s in scales]
        tried.append({"scale": scales, "val_top1": mean_val_top1(merge(scales), names, tasks,
                                                                 bn, bn_batches)})
        return -tried[-1]["val_top1"]

    best = optimizer.minimize(loss)
    return [float(s) for s in best.value], tried


def evaluate_task(task: FineTuned, n_bins: int) -> dict[str, Any]:
    metrics = task.run.parts.task.evaluate(task.model, task.run.loader("val"),
                                           task.run.loader("test"), task.run.parts.device,
                                           n_bins=n_bins)
    return summary(metrics)


def summary(metrics: dict) -> dict[str, Any]:
    """What a merge reports of a task's evaluation."""
    return {"top1": metrics["test"]["top1"], "ece": metrics["test"]["ece"],
            "nll": metrics["test"]["nll"], "ts_ece": metrics["test_ts"]["ece"]}


def as_trained(task: FineTuned, n_bins: int) -> dict[str, Any]:
    """The fine-tuned model on its own task: the numbers its run reported when training
    ended (the same model and evaluation), or evaluated now if that run's record lacks them
    or used other bins."""
    try:
        record = read_results(task.run.run_dir)
        if record.get("status") == "completed" and task.run.cfg.eval.n_bins == n_bins:
            return summary(record)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return evaluate_task(task, n_bins)


def merger_options(cfg) -> dict[str, Any]:
    """The merger's keyword arguments from ``merge.*`` (DARE's masks also take ``seed``),
    checked against its signature so a misspelt option is named."""
    options = {k: v for k, v in OmegaConf.to_container(cfg.merge, resolve=True).items()
               if k != "name"}
    if cfg.merge.name not in MERGERS:
        return options
    if cfg.merge.name == "dare":
        options["seed"] = int(cfg.seed)
    known = [p for p in inspect.signature(MERGERS.get(cfg.merge.name)).parameters
             if p not in ("base", "finetuned", "scale", "keys")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"merge={cfg.merge.name} has no option {', '.join(unknown)}; its "
                          f"options are {', '.join(known)}")
    return options


def merge_runs(cfg) -> dict[str, Any]:
    """The results.json record of one merge (``cfg``: mixbench/configs/merge.yaml composed)."""
    name, bn = cfg.merge.name, cfg.bn
    if name in REFERENCES:
        raise ConfigError(f"merge={name} is not a merger: every merge's results hold the "
                          f"reference rows individual and base, and the leaderboard shows "
                          f"them. Choose one of {', '.join(MERGERS.names())}")
    if name not in MERGERS:
        raise ConfigError(f"unknown merge={name}; choose one of {', '.join(MERGERS.names())}")
    if bn not in BN_MODES:
        raise ConfigError(f"bn={bn!r}: choose recompute or merge")
    if cfg.search.name not in ("grid", "evolution"):
        raise ConfigError(f"search.name={cfg.search.name!r}: choose grid or evolution")
    options = merger_options(cfg)
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    base, tasks, names = load_tasks(cfg.base, list(cfg.models), device)
    base_state = {k: v.detach().clone() for k, v in base.parts.model.state_dict().items()}
    # every task's model as fine-tuned, then with θ₀'s body (the reference rows and columns)
    individual = [as_trained(task, cfg.eval.n_bins) for task in tasks]
    for task in tasks:
        set_body(task, base_state, names, bn, cfg.bn_batches)
    at_base = [evaluate_task(task, cfg.eval.n_bins) for task in tasks]

    def merge(scale):
        return MERGERS.get(name)(base_state, [t.trained for t in tasks], scale=scale,
                                 keys=names, **options)

    if cfg.search.name == "grid":
        merged = merge(1.0)
        scale, tried = choose_scale(base_state, merged, names, tasks,
                                    list(cfg.search.scales), bn, cfg.bn_batches)
        body = scaled(base_state, merged, names, scale)
    else:
        scale, tried = evolve_scales(merge, names, tasks, cfg.search, bn,
                                     cfg.bn_batches, int(cfg.seed))
        body = merge(scale)
    final = []
    for task in tasks:
        set_body(task, body, names, bn, cfg.bn_batches)
        final.append(evaluate_task(task, cfg.eval.n_bins))
    section = merge_section(tasks, final, individual, at_base)
    section.update(scale=scale, search=tried, references={
        "individual": without_tasks(merge_section(tasks, individual, individual, at_base)),
        "base": without_tasks(merge_section(tasks, at_base, individual, at_base))})
    return record_for(cfg, base, tasks, section, time.perf_counter() - start)


def merge_section(tasks: Sequence[FineTuned], final: list[dict], individual: list[dict],
                  at_base: list[dict]) -> dict[str, Any]:
    """The merge section of ``final`` (one evaluation per task): each task's row, and the
    means over the tasks, against each fine-tuned model and θ₀'s body."""
    rows = [{"dataset": task.name, "run_dir": str(task.run.run_dir), **metrics,
             "individual_top1": own["top1"], "base_top1": zero["top1"],
             "normalized": metrics["top1"] / own["top1"] if own["top1"] > 0 else None}
            for task, metrics, own, zero in zip(tasks, final, individual, at_base)]
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    return {"avg_top1": mean("top1"), "avg_normalized": mean("normalized"),
            "avg_ece": mean("ece"), "avg_ts_ece": mean("ts_ece"),
            "individual_avg_top1": mean("individual_top1"),
            "base_avg_top1": mean("base_top1"), "scale": None, "search": [], "tasks": rows}


def without_tasks(section: dict) -> dict:
    return {k: v for k, v in section.items() if k not in ("tasks", "search")}


def record_for(cfg, base: LoadedRun, tasks: Sequence[FineTuned], section: dict,
               seconds: float) -> dict[str, Any]:
    """A completed results.json for a merge. Its config names what the leaderboard groups
    by: the tasks' datasets, θ₀'s backbone, the fine-tuning method and the merger's options
    (as protocol options, so every merger and setting is a row of the merge table)."""
    methods = sorted({str(t.run.cfg.method.name) for t in tasks})
    config = {
        "dataset": {"name": "+".join(t.name for t in tasks)},
        "backbone": dict(OmegaConf.to_container(base.cfg.backbone, resolve=True)),
        "method": {"name": methods[0] if len(methods) == 1 else "+".join(methods)},
        "loss": {"name": str(tasks[0].run.cfg.loss.name)},
        "trainer": {"epochs": int(tasks[0].run.cfg.trainer.epochs)},
        "protocol": {"name": "merge", "merger": cfg.merge.name, "bn": cfg.bn,
                     **{k: v for k, v in OmegaConf.to_container(cfg.merge, resolve=True).items()
                        if k != "name"}},
        "merge": OmegaConf.to_container(cfg, resolve=True),
        "seed": int(cfg.seed), "tag": cfg.get("tag"),
    }
    return evaluation_record(config, protocol="merge", seed=int(cfg.seed), seconds=seconds,
                             merge=section,
                             test={"top1": section["avg_top1"], "ece": section["avg_ece"]},
                             test_ts={"ece": section["avg_ts_ece"]})
