"""Finished runs: ``load_run`` is the one way to open one (evaluation, analysis, figures,
and later adaptation and merging), ``evaluate_run`` re-evaluates one, and ``init_from_run``
starts a new run from another run's weights (``trainer.init_from``)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mixbench.components import Components, build_components
from mixbench.data import make_loader
from mixbench.engine.checkpoint import (CHECKPOINT_NAME, load_checkpoint, load_weights,
                                        restore_model)
from mixbench.engine.context import resolve_device
from mixbench.errors import CheckpointError, ConfigError
from mixbench.results.headline import with_headline
from mixbench.results.io import RESULTS_NAME, read_results, write_json_atomic
from mixbench.results.record import completed_record, new_record

log = logging.getLogger(__name__)


# Protocols whose checkpoint is not a classifier or regressor that build_components rebuilds.
NOT_REOPENED = {
    "retrieval": "saves an embedding network with its own head and loss (re-evaluating it "
                 "is not supported yet)",
    "distill": "saves a synthetic set, not a trained model",
}


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: DictConfig  # the config the run was trained with
    parts: Components  # built from it, the model holding the checkpoint's weights
    state: dict[str, Any]  # the checkpoint: epoch, history, train_s, method and optimiser state

    def loader(self, split: str, batch_size: int | None = None):
        """An evaluation loader (no shuffling or augmentation) of one of the run's splits."""
        return make_loader(self.parts.data, split,
                           batch_size or self.cfg.trainer.eval_batch_size, train=False,
                           device=self.parts.device)


def load_run(run_dir: str | Path, device: str | torch.device = "auto") -> LoadedRun:
    """The run in ``run_dir``: its config and components rebuilt from ``last.pt``, the
    model's weights restored (the method's own state is in ``state["method"]``)."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT_NAME
    state = load_checkpoint(path)
    cfg = OmegaConf.create(state["config"])
    protocol = (cfg.get("protocol") or {}).get("name", "standard")
    if protocol in NOT_REOPENED:
        raise ConfigError(f"{run_dir} is a protocol={protocol} run, which {NOT_REOPENED[protocol]}"
                          f"; its results.json has its metrics. Runs of the other protocols "
                          f"reopen (evaluate, analyze, adapt, merge).")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    parts = build_components(cfg, device)
    restore_model(parts.model, state["model"], path)
    return LoadedRun(run_dir, cfg, parts, state)


def evaluate_run(run_dir: str | Path, device: str = "auto") -> dict:
    """Re-evaluate a saved run from its checkpoint and rewrite its results.json (history and
    training time are kept; metrics, temperature and reliability are recomputed)."""
    run = load_run(run_dir, device)
    cfg, parts, state = run.cfg, run.parts, run.state
    start = time.perf_counter()
    metrics = parts.task.evaluate(parts.model, run.loader("val"), run.loader("test"),
                                  parts.device, n_bins=cfg.eval.n_bins,
                                  figure_path=run.run_dir / "reliability.png",
                                  test_labels_clean=parts.data.test_clean_labels,
                                  temperature_split=cfg.eval.get("temperature_split", "val"))
    metrics = with_headline(metrics, state["history"], cfg.eval)
    results_path = run.run_dir / RESULTS_NAME
    try:
        record = read_results(results_path)
    except (OSError, ValueError):
        record = new_record(state["config"], protocol=cfg.get("protocol", {}).get(
            "name", "standard"), seed=cfg.seed)
    record.setdefault("protocol", "standard")  # runs written before protocols existed
    record["task"] = parts.task.name
    complete = state["epoch"] == cfg.trainer.epochs
    processes = (record.get("timings") or {}).get("processes") or state.get("processes")
    record = completed_record(record, metrics=metrics, history=state["history"],
                              train_s=state["train_s"], eval_s=time.perf_counter() - start,
                              processes=processes,
                              status="completed" if complete else "partial")
    write_json_atomic(results_path, record)
    return record


def init_from_run(model: torch.nn.Module, source: str | Path) -> list[str]:
    """Copy the weights of the run (or checkpoint) ``source`` into ``model``. The classifier
    head keeps its fresh initialisation where its shape differs (another class count); any
    other difference means another architecture and is an error. Returns the names of the
    parameters left fresh."""
    weights = load_weights(source)
    own = model.state_dict()
    head = {name for name, p in model.named_parameters()
            if any(p is q for q in model.head.parameters())}
    different = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    problems = sorted(set(own) ^ set(weights)) + [k for k in different if k not in head]
    if problems:
        shown = ", ".join(f"{k} {_shape(own.get(k))} vs {_shape(weights.get(k))}"
                          for k in problems[:6])
        raise CheckpointError(f"trainer.init_from={source}: its weights do not fit this model "
                              f"beyond the classifier head (this model vs the source: "
                              f"{shown}). Use the backbone the source run was trained with.")
    model.load_state_dict({k: v for k, v in weights.items() if k not in different},
                          strict=False)
    if different:
        log.info("init_from %s: the head (%s) starts fresh: other shape", source,
                 ", ".join(different))
    return different


def _shape(tensor) -> str:
    return "missing" if tensor is None else str(tuple(tensor.shape))
