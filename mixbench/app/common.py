"""What every command shares: a user mistake ends with its message and exit status 1, not a
traceback; a run that trains nothing (an adaptation, a merge) goes through the run folder's
lifecycle like a training run."""
from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from mixbench.engine.rundir import RunFolder
from mixbench.errors import MixbenchError
from mixbench.results.record import new_record

log = logging.getLogger("mixbench")


def exit_on_user_error(body: Callable) -> Callable:
    @functools.wraps(body)
    def wrapper(*args, **kwargs):
        try:
            return body(*args, **kwargs)
        except MixbenchError as err:  # a user mistake: say what to do, no traceback
            log.error("error: %s", err)
            sys.exit(1)
    return wrapper


def run_in_folder(cfg: DictConfig, run_dir: str | Path, work: Callable[[DictConfig], dict], *,
                  key: str, protocol: str) -> dict:
    """``work(cfg)`` through the run folder's lifecycle: skipped when the folder holds this
    run already, else a record with status "running" first (its config under ``key``) and a
    failure record if it raises."""
    config = OmegaConf.to_container(cfg, resolve=True)
    folder = RunFolder(run_dir, config, recorded=lambda r: (r.get("config") or {}).get(key))
    started = new_record({key: config}, protocol=protocol, seed=int(cfg.seed))
    return folder.run(lambda: work(cfg), started)
