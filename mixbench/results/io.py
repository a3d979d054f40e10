"""results.json: one file per run, written atomically; the single source for tables."""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

RESULTS_NAME = "results.json"


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null instead of invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json_atomic(path: str | Path, data: dict) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2, allow_nan=False))
    os.replace(tmp, path)


def read_results(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_NAME
    return json.loads(path.read_text())


def git_sha() -> str:
    """The commit of the mixbench checkout that produced a run ('unknown' outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"
