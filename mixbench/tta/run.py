"""What ``tools/adapt.py`` does: open a finished run (the source), corrupt its test split,
order it into a test stream, let an adapter predict it batch by batch, and score the
predictions per corruption (error as the UnMix-TNS paper reports it, and top-1, NLL, ECE,
adaptive ECE, Brier). The source run's folder is only read.

Streams (``stream.name``), each over ``corruption`` (one name, a list, or ``all``):

* ``iid``, ``dirichlet``: one episode per corruption, the adapter reset between them
  (``reset_each_shift``), the samples shuffled or Dirichlet-ordered (``stream.delta``);
* ``continual``: the corruptions one after another, no reset (shuffled, or Dirichlet-ordered
  within each corruption when ``stream.delta`` is set);
* ``mixed``: all corruptions shuffled together, no reset (then Dirichlet-ordered by label
  when ``stream.delta`` is set).
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from mixbench.data.bundle import Split, stratified_holdout
from mixbench.data.loaders import InMemoryLoader
from mixbench.engine.context import resolve_device
from mixbench.engine.load import LoadedRun, load_run
from mixbench.errors import ConfigError
from mixbench.eval.calibration import calibration_metrics
from mixbench.results.record import evaluation_record
from mixbench.shift.cifar_c import read_cifar_c
from mixbench.shift.corruptions import CORRUPTIONS
from mixbench.shift.evaluate import corrupted, require_images
from mixbench.shift.streams import continual, mixed
from mixbench.tta.adapters import build_adapter
from mixbench.tta import section as _section  # noqa: F401  (the adaptation section of the leaderboard)

log = logging.getLogger(__name__)

STREAMS = ("iid", "dirichlet", "continual", "mixed")
METRICS = ("top1", "nll", "ece", "aece", "brier")


def corruption_names(value) -> list[str]:
    """``all``, one name, or a list of names → the corruptions, checked."""
    if value == "all":
        return list(CORRUPTIONS)
    names = [value] if isinstance(value, str) else list(value)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown or not names:
        raise ConfigError(f"corruption={value}: choose all, or names among "
                          f"{', '.join(CORRUPTIONS)}")
    return names


def check_stream(stream) -> None:
    name, delta = stream.name, stream.get("delta")
    if name not in STREAMS:
        raise ConfigError(f"unknown stream={name}; choose one of {', '.join(STREAMS)}")
    if name == "iid" and delta is not None:
        raise ConfigError("stream=iid is shuffled and takes no stream.delta; use "
                          "stream=dirichlet for a label-correlated stream")
    if name == "dirichlet" and (delta is None or delta <= 0):
        raise ConfigError(f"stream=dirichlet needs stream.delta > 0 (0.1 as UnMix-TNS uses "
                          f"on CIFAR-10-C, 0.01 on CIFAR-100-C), got {delta}")


def test_subset(split: Split, max_test: int | None) -> Split:
    """A fixed, class-stratified subset of ``max_test`` test samples (all when None)."""
    if max_test is None or max_test >= len(split):
        return split
    if max_test < 1:
        raise ConfigError(f"max_test must be positive (or null: the whole test split), "
                          f"got {max_test}")
    _, kept = stratified_holdout(split.y.numpy(), max_test, seed=0)
    return split.subset(kept)


def corrupted_test_sets(run: LoadedRun, names: list[str], severity: int, seed: int,
                        root: str | None, max_test: int | None = None) -> list[Split]:
    """The source run's test split (or ``max_test`` of it) under each corruption: computed,
    or read from a CIFAR-10-C / CIFAR-100-C folder under ``root`` (the published files)."""
    data = run.parts.data
    if root is not None:
        variant = str(run.cfg.dataset.name)
        if variant not in ("cifar10", "cifar100"):
            raise ConfigError(f"corruption_root reads CIFAR-10-C / CIFAR-100-C; the source "
                              f"was trained on dataset={variant}. Leave corruption_root=null "
                              f"to compute the corruptions")
        sets = [test_subset(read_cifar_c(root, variant, name, severity), max_test)
                for name in names]
        if any(len(s) != len(sets[0]) for s in sets):
            raise ConfigError(f"the corruption files under {root} hold different numbers of "
                              f"images")
        return sets
    require_images(data, run.cfg.dataset.name, "adapt")
    test = test_subset(data.test, max_test)
    return [corrupted(test, name, severity, seed, run.parts.device) for name in names]


def episodes(stream, labels: torch.Tensor, num_domains: int, seed: int) -> list[torch.Tensor]:
    """The stream as episodes (the adapter starts fresh on each) of flat indices
    ``domain · N + sample`` into the corrupted sets stacked in order."""
    names = tuple(f"d{d}" for d in range(num_domains))  # the stream builders' labels only
    delta = stream.get("delta")
    min_chunk = int(stream.get("min_chunk", 10))
    build = mixed if stream.name == "mixed" else continual
    built = build(labels, names, seed, delta=delta, min_chunk=min_chunk)
    flat = built.domain * len(labels) + built.index
    if stream.name in ("iid", "dirichlet"):  # reset per corruption
        return [flat[built.domain == d] for d in range(num_domains)]
    return [flat]


def adapt_stream(model: torch.nn.Module, loader: InMemoryLoader, episode_list,
                 options: dict, batch_size: int, seed: int) -> torch.Tensor:
    """Logits for every stream item, in the order of ``torch.cat(episode_list)``; each episode
    adapts a fresh copy of ``model``."""
    logits = []
    for episode in episode_list:
        adapter = build_adapter(options["name"], copy.deepcopy(model), seed=seed,
                                **{k: v for k, v in options.items() if k != "name"})
        for batch in torch.split(episode.to(loader.device), batch_size):
            x, _ = loader.fetch(batch, augment=False)
            logits.append(adapter(x).float())
    return torch.cat(logits).cpu()


def adapter_options(cfg, stream_name: str) -> dict:
    """The adapter's options; ``num_components: null`` is UnMix-TNS's default for the
    stream (128 on mixed domains, 16 otherwise)."""
    options = OmegaConf.to_container(cfg.adapter, resolve=True)
    if "num_components" in options and options["num_components"] is None:
        options["num_components"] = 128 if stream_name == "mixed" else 16
    return options


def adapt_run(cfg) -> dict[str, Any]:
    """The results.json record of one adaptation (``cfg``: mixbench/configs/adapt.yaml composed)."""
    check_stream(cfg.stream)
    names = corruption_names(cfg.corruption)
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {cfg.batch_size}")
    start = time.perf_counter()
    run = load_run(cfg.source, resolve_device(cfg.device))
    if run.parts.task.name != "classification":
        raise ConfigError(f"test-time adaptation scores classifiers; {cfg.source} is a "
                          f"{run.parts.task.name} run")
    options = adapter_options(cfg, cfg.stream.name)
    sets = corrupted_test_sets(run, names, int(cfg.severity), int(cfg.seed),
                               cfg.get("corruption_root"), cfg.get("max_test"))
    labels = sets[0].y
    data = run.parts.data
    loader = InMemoryLoader(Split(torch.cat([s.x for s in sets]),
                                  torch.cat([s.y for s in sets])),
                            int(cfg.batch_size), shuffle=False, drop_last=False,
                            device=run.parts.device, mean=data.mean, std=data.std)
    episode_list = episodes(cfg.stream, labels, len(names), int(cfg.seed))
    order = torch.cat(episode_list)
    logits = adapt_stream(run.parts.model, loader, episode_list, options,
                          int(cfg.batch_size), int(cfg.seed))
    seconds = time.perf_counter() - start
    rows = []
    for d, name in enumerate(names):
        mine = (order // len(labels)) == d
        metrics = calibration_metrics(logits[mine], labels[order[mine] % len(labels)],
                                      int(cfg.eval.n_bins))
        rows.append({"corruption": name, "error": 1 - metrics["top1"],
                     **{k: metrics[k] for k in METRICS}})
    return record_for(cfg, run, options, rows, len(labels), seconds)


def record_for(cfg, run: LoadedRun, options: dict, rows: list[dict], samples: int,
               seconds: float) -> dict:
    """A completed results.json for an adaptation. Its config names what the leaderboard
    groups by: the source's dataset, backbone, method (the training method) and epochs, and
    the adapter, stream and severity as protocol options; its seed is the source's."""
    source_cfg = run.cfg
    mean = {key: sum(r[key] for r in rows) / len(rows) for key in ("error", *METRICS)}
    section = {"source": str(Path(cfg.source)), "source_method": str(source_cfg.method.name),
               "source_seed": int(source_cfg.seed), "source_tag": source_cfg.get("tag"),
               "adapter": str(cfg.adapter.name), "stream": str(cfg.stream.name),
               "delta": cfg.stream.get("delta"), "severity": int(cfg.severity),
               "batch_size": int(cfg.batch_size), "stream_seed": int(cfg.seed),
               "test_samples": samples,
               **{f"mean_{k}": v for k, v in mean.items()}, "corruptions": rows}
    config = {
        "dataset": {"name": str(source_cfg.dataset.name)},
        "backbone": dict(OmegaConf.to_container(source_cfg.backbone, resolve=True)),
        "method": {"name": str(source_cfg.method.name)},
        "loss": {"name": str(source_cfg.loss.name)},
        "trainer": {"epochs": int(source_cfg.trainer.epochs)},
        "protocol": {"name": "adaptation", "adapter": str(cfg.adapter.name),
                     "stream": str(cfg.stream.name), "delta": cfg.stream.get("delta"),
                     "severity": int(cfg.severity), "batch_size": int(cfg.batch_size),
                     "max_test": cfg.get("max_test"),
                     "corruptions": "all" if cfg.corruption == "all"
                     else corruption_names(cfg.corruption),
                     **{k: v for k, v in options.items() if k != "name"}},
        "adapt": OmegaConf.to_container(cfg, resolve=True),
        "seed": int(source_cfg.seed), "tag": cfg.get("tag"),
    }
    # the means live in the section (the leaderboard's adaptation columns), not in "test":
    # there is no single test set here
    return evaluation_record(config, protocol="adaptation", seed=int(source_cfg.seed),
                             seconds=seconds, adaptation=section)
