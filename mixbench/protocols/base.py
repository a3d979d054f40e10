"""A protocol decides what a run does with its context: which fits, which evaluations, what
goes into results.json. ``PROTOCOLS.build(cfg.protocol)`` makes one from its config group
(``mixbench/configs/protocol/NAME.yaml``: ``name`` plus the protocol's options); calling it
runs it."""
from __future__ import annotations

from mixbench.engine.context import RunContext


class Protocol:
    name: str

    def __call__(self, ctx: RunContext) -> dict:
        """Run, write results.json through ``ctx`` (with a ``task`` and this protocol's own
        section next to the usual keys) and return the final record."""
        raise NotImplementedError
