"""Run folders shared by sweeps: skip what is done, never let two jobs write to one folder.

A job holds ``run.lock`` (created atomically, holding its host and pid) while it trains. A
second job for the same folder stops with a clear error instead of overwriting; a lock left
by a job that died on this host is noticed (its pid is gone) and taken over."""
from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

from mixbench.errors import RunExistsError
from mixbench.results.io import RESULTS_NAME

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
