"""Every component package, and the one function that builds a run's components from its
config. Importing this module registers everything (the registry itself imports nothing):
the engine and the tools import it, and users can too::

    from mixbench.components import METHODS
    METHODS.names()
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from omegaconf import DictConfig
from torch import nn

# (registration: each package's modules register what they define)
from mixbench import loggers, losses, methods, models, tasks  # noqa: F401
from mixbench.data import DataBundle  # (and every dataset)
from mixbench.engine import schedulers  # noqa: F401
from mixbench.methods import Method
from mixbench.registry import (BACKBONES, DATASETS, LOGGERS, LOSSES, METHODS,  # noqa: F401
                               SCHEDULERS, TASKS)
from mixbench.tasks import Task, task_for


@dataclass
class Components:
    data: DataBundle
    task: Task
    model: torch.nn.Module
    method: Method
    loss_fn: torch.nn.Module
    device: torch.device


def build_components(cfg: DictConfig, device: torch.device, data: DataBundle | None = None, *,
                     task: Task | None = None,
                     head: Callable[[nn.Module], nn.Module] | None = None,
                     loss_options: dict | None = None) -> Components:
    """Everything a run needs, from the config groups, via the registries. A protocol that
    builds a part its own way passes it: ``data`` (that dataset instead of the configured
    one, e.g. a class split or synthetic data in benchmarks), ``task`` (e.g. retrieval with
    its Ks), ``head`` (wraps the backbone, e.g. an embedding head) and ``loss_options`` (the
    loss's runtime arguments, e.g. a proxy loss's class count). The task rejects a loss or
    method made for another task here, before anything runs."""
    if data is None:
        data = dataclasses.replace(DATASETS.build(cfg.dataset), name=cfg.dataset.name)
    model = BACKBONES.build(cfg.backbone, num_classes=data.num_classes,
                            in_channels=data.in_channels)
    model = (head(model) if head is not None else model).to(device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    method = METHODS.build(cfg.method, num_classes=data.num_classes)
    # the runtime arguments the loss takes (a proxy loss its class count; a loss made for
    # another task none of them, so that the task's check names the fix)
    accepted = inspect.signature(LOSSES.get(cfg.loss.name)).parameters
    loss_fn = LOSSES.build(cfg.loss, **{k: v for k, v in (loss_options or {}).items()
                                        if k in accepted})
    task = task if task is not None else task_for(data)
    task.check(loss_fn=loss_fn, method=method, loss_name=cfg.loss.name,
               method_name=cfg.method.name)
    return Components(data, task, model, method, loss_fn, device)
