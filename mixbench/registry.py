"""One registry class, one instance per component kind.

A config group's YAML is ``name:`` plus the constructor's keyword arguments; ``build(cfg)``
looks the name up and calls the registered factory with the rest.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from omegaconf import DictConfig, OmegaConf

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
        load_all()
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., Any]:
        load_all()
        if name not in self._factories:
            raise ConfigError(
                f"unknown {self.kind} '{name}'. Known {self.kind}s: {', '.join(self.names())}"
            )
        return self._factories[name]

    def build(self, cfg: Mapping[str, Any] | DictConfig, **extra: Any) -> Any:
        """Build from a dict/DictConfig with a ``name`` key; ``extra`` adds runtime arguments
        (e.g. ``num_classes``) that do not belong in the YAML."""
        if isinstance(cfg, DictConfig):
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
        load_all()
        return name in self._factories

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


BACKBONES = Registry("backbone")
DATASETS = Registry("dataset")
METHODS = Registry("method")
LOSSES = Registry("loss")
SCHEDULERS = Registry("scheduler")
LOGGERS = Registry("logger")


def load_all() -> None:
    """Import every component package so its ``@register`` decorators run.

    Called lazily on the first lookup, so ``from mixbench.registry import METHODS`` is enough
    for users; the imports are explicit (no filesystem scanning)."""
    import mixbench.data  # noqa: F401
    import mixbench.engine.schedulers  # noqa: F401
    import mixbench.losses  # noqa: F401
    import mixbench.methods  # noqa: F401
    import mixbench.models  # noqa: F401
    import mixbench.loggers  # noqa: F401
