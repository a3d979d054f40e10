"""One registry class, one instance per component kind.

A config group's YAML is ``name:`` plus the constructor's keyword arguments; ``build(cfg)``
looks the name up and calls the registered factory with the rest.

This module is a leaf, as timm's ``_registry.py`` is: it imports no component package.
Components register themselves when their package is imported; ``mixbench.components``
imports every one of them, so ``from mixbench.components import METHODS`` gives the full
registry."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from mixbench.errors import ConfigError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._factories:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._factories:
            known = ", ".join(self.names()) or (
                "none yet (import mixbench.components, which registers every component)")
            raise ConfigError(f"unknown {self.kind} '{name}'. Known {self.kind}s: {known}")
        return self._factories[name]

    def build(self, cfg: Mapping[str, Any], **extra: Any) -> Any:
        """Build from a dict/DictConfig with a ``name`` key; ``extra`` adds runtime arguments
        (e.g. ``num_classes``) that do not belong in the YAML."""
        if not isinstance(cfg, dict):
            from omegaconf import DictConfig, OmegaConf

            if isinstance(cfg, DictConfig):  # plain, resolved values for the factory
                cfg = OmegaConf.to_container(cfg, resolve=True)
        kwargs = dict(cfg)
        if "name" not in kwargs:
            raise ConfigError(f"a {self.kind} config needs a 'name' key; got keys {sorted(kwargs)}")
        name = kwargs.pop("name")
        factory = self.get(name)
        try:
            inspect.signature(factory).bind(**kwargs, **extra)
        except TypeError as err:
            options = [p for p in inspect.signature(factory).parameters if p not in extra]
            raise ConfigError(f"{self.kind} '{name}': {err}. Its options are: "
                              f"{', '.join(options) or 'none'}") from err
        return factory(**kwargs, **extra)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


BACKBONES = Registry("backbone")
DATASETS = Registry("dataset")
METHODS = Registry("method")
LOSSES = Registry("loss")
SCHEDULERS = Registry("scheduler")
LOGGERS = Registry("logger")
TASKS = Registry("task")
PROTOCOLS = Registry("protocol")
ADAPTERS = Registry("adapter")  # test-time adapters (mixbench-adapt)
MERGERS = Registry("merger")  # model mergers (mixbench-merge)
SECTIONS = Registry("results section")  # protocols' parts of the leaderboard
