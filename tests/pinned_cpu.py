"""Training runs whose numbers are the same on every x86 machine, for tests that compare with
numbers written down before.

Two epochs amplify a last-bit difference into a visible one, and the last bits depend on the
CPU: torch picks AVX2 or AVX-512 kernels, MKL its own code path, oneDNN its convolutions. A
pinned run takes torch's portable kernels (``ATEN_CPU_CAPABILITY=default``), MKL's
reproducible path (``MKL_CBWR=COMPATIBLE``), no oneDNN, and one thread, in a child process
(the settings are read when torch loads).

    python tests/pinned_cpu.py CHECKOUT OUT.json   # the fixture, from CHECKOUT's trainer
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PINNED_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE",
              "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

CHILD = """
import json, sys
import torch
torch.backends.mkldnn.enabled = False
sys.path[:0] = [sys.argv[3], sys.argv[3] + "/tests"]
from conftest import make_cfg
try:
    from mixbench.app.train import train
except ImportError:  # the trainer of checkouts from before the protocol layer
    from mixbench.engine.trainer import train
train(make_cfg(*json.loads(sys.argv[1])), sys.argv[2])
"""


def train_pinned(checkout: Path, overrides: list[str], run_dir: Path) -> dict:
    """``tools/train.py``'s run of ``overrides`` with ``checkout``'s code, pinned; its
    results.json."""
    env = {**os.environ, **PINNED_ENV, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(overrides), str(run_dir),
                           str(checkout)], cwd=checkout, env=env, capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"pinned run {overrides} failed:\n{done.stderr[-3000:]}")
    return json.loads((run_dir / "results.json").read_text())


def fixture_entry(results: dict, overrides: list[str]) -> dict:
    """What a run's results.json says, less what differs from run to run (the code's commit,
    the seconds)."""
    entry = {k: v for k, v in results.items() if k not in ("git_sha", "timings", "protocol")}
    entry["history"] = [{k: v for k, v in r.items() if k != "samples_per_s"}
                        for r in results["history"]]
    return {**entry, "overrides": overrides, "timings_keys": sorted(results["timings"])}


def main(checkout: str, out: str) -> None:
    spec = json.loads(Path(out).read_text())
    common = spec["_about"]["common"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, before in spec["runs"].items():
            results = train_pinned(Path(checkout).resolve(), [*common, *before["overrides"]],
                                   Path(tmp) / name)
            spec["runs"][name] = fixture_entry(results, before["overrides"])
    spec["_about"]["pinned"] = PINNED_ENV
    Path(out).write_text(json.dumps(spec, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
