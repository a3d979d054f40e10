"""A run folder's lifecycle, the same for training, experts, adaptation and merging: skip a
run that already completed with this experiment, hold the folder's lock, refuse to overwrite
a started run unless asked to resume, and leave a failure record when the work raises.

A job holds ``run.lock`` (created atomically, holding its host and pid) while it works. A
second job for the same folder stops with a clear error instead of overwriting; a lock left
by a job that died on this host is noticed (its pid is gone) and taken over."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Callable, ContextManager

from mixbench.config import experiment_changes
from mixbench.errors import RunExistsError
from mixbench.results.io import RESULTS_NAME, write_json_atomic

log = logging.getLogger(__name__)
LOCK_NAME = "run.lock"


def completed_results(run_dir: Path) -> dict | None:
    """The run's results if it already completed, else None (missing or unreadable files
    count as not completed)."""
    try:
        results = json.loads((run_dir / RESULTS_NAME).read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) and results.get("status") == "completed" else None


def refuse_overwrite(started: Path, *, resume: bool) -> None:
    """``started`` (a checkpoint, or a protocol's own state file) exists: continue it only
    when asked to (``trainer.resume=true``)."""
    if Path(started).exists() and not resume:
        raise RunExistsError(f"{Path(started).parent} already holds a run ({Path(started).name}). "
                             f"Pass trainer.resume=true to continue it, or choose another "
                             f"hydra.run.dir for a new run.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``with RunLock(run_dir):`` holds the folder for this process."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.owner = {"host": socket.gethostname(), "pid": os.getpid()}

    def __enter__(self) -> "RunLock":
        for _ in range(2):  # a second try after clearing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._holder()
                if holder.get("host") == self.owner["host"] and \
                        not _alive(int(holder.get("pid", -1))):
                    log.warning("removing a stale lock of a job that no longer runs: %s",
                                self.path)
                    self.path.unlink(missing_ok=True)
                    continue
                raise RunExistsError(
                    f"another job (pid {holder.get('pid')} on {holder.get('host')}) is "
                    f"training in {self.path.parent}. Wait for it, or use another "
                    f"hydra.run.dir; if no such job runs, delete {self.path}.") from None
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner, f)
            return self
        raise RunExistsError(f"cannot take the lock {self.path}")

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def __exit__(self, *exc) -> None:
        if self._holder() == self.owner:
            self.path.unlink(missing_ok=True)


class RunFolder:
    """One run's folder. ``config`` is the resolved config of the run about to be written
    here; ``recorded`` finds the comparable config in a results.json (the whole config for a
    training run, its ``adapt`` or ``merge`` part for the tools). Only the ``main`` process
    (rank 0) locks and writes."""

    def __init__(self, path: str | Path, config: dict, *,
                 recorded: Callable[[dict], dict] = lambda record: record.get("config") or {},
                 main: bool = True):
        self.path = Path(path)
        self.config = config
        self.recorded = recorded
        self.main = main

    def results(self) -> dict | None:
        """The folder's results.json if it completed, whatever its experiment."""
        return completed_results(self.path)

    def completed(self) -> dict | None:
        """The completed results of this same experiment (execution keys may differ), else
        None: what a re-run sweep skips."""
        done = self.results()
        if done is None or experiment_changes(self.recorded(done), self.config):
            return None
        return done

    def lock(self) -> ContextManager:
        self.path.mkdir(parents=True, exist_ok=True)
        return RunLock(self.path) if self.main else contextlib.nullcontext()


    def refuse_other_experiment(self) -> None:
        """A completed run of another experiment is here: never overwrite it silently."""
        done = self.results()
        if done is not None:
            differ = experiment_changes(self.recorded(done), self.config)
            raise RunExistsError(f"{self.path} already holds a completed run of another "
                                 f"experiment (it differs in {', '.join(differ[:8])}). Choose "
                                 f"another hydra.run.dir, or delete {self.path / RESULTS_NAME}.")

    def write(self, record: dict) -> dict:
        if self.main:
            write_json_atomic(self.path / RESULTS_NAME, record)
        return record

    def write_failure(self, record: dict, err: BaseException) -> dict:
        """``record`` marked failed (or interrupted, for Ctrl-C) with the error, so the folder
        says what happened; what was written before (checkpoints, kept epochs) stays."""
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        return self.write({**record, "status": status, "error": f"{type(err).__name__}: {err}"})

    def run(self, work: Callable[[], dict], started: dict) -> dict:
        """The lifecycle of a run whose work returns its completed record at the end (an
        adaptation, a merge): skip it if done, else hold the lock, write ``started`` (a
        record with status "running"), do the work, write its record, or a failure record
        if it raises."""
        done = self.completed()
        if done is not None:
            log.info("%s already holds this run: skipped", self.path)
            return done
        with self.lock():
            self.refuse_other_experiment()
            self.write(started)
            try:
                record = work()
            except BaseException as err:
                self.write_failure(started, err)
                raise
            return self.write(record)
