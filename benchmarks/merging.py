"""Time and peak memory of each merger on ResNet-50-sized state dicts (torchvision's
``resnet50()``, 25.6M parameters, about 98 MiB in float32), N fine-tuned copies
θ_i = θ₀ + 1e-3·noise.

    python benchmarks/merging.py                       # N = 2, 4, 8
    python benchmarks/merging.py --n 2 --repeats 3
    python benchmarks/merging.py --n 2 --mergers ties pcb pcb_paper

Each (merger, N) runs in a fresh subprocess, so that no merger inherits another's heap.

Memory is the resident set, which counts the bytes really touched (tracemalloc does not see
torch's allocations). For the first merge glibc is told to give every allocation above 1 MiB
its own mapping, so that a freed tensor leaves the resident set at once and a new one enters
it; the kernel's peak mark (VmHWM) is reset just before that merge and read after it. The
table's peak is that mark minus the resident set before the merge (base and fine-tuned dicts
built) minus the bytes of the merged state dict: the work memory beyond the N + 2 dicts.

Time is then taken as the other benchmarks take it (freed memory kept for reuse, so page
faults do not swamp the arithmetic): one warm-up merge, then the median of ``--repeats``."""
from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import median_ms, quiet_malloc  # noqa: E402

MERGERS = {
    "task_arithmetic": ("task_arithmetic", {}),
    "ties": ("ties_merging", {}),
    "dare_ta": ("dare", {"then": "ta"}),
    "dare_ties": ("dare", {"then": "ties"}),
    "pcb": ("pcb_merging", {}),
    "pcb_paper": ("pcb_merging", {"form": "paper"}),
}
DEFAULT_MERGERS = ["task_arithmetic", "ties", "dare_ta", "dare_ties", "pcb"]
MMAP_ABOVE = 1 << 20


def map_every_large_allocation() -> None:
    """Serve allocations above 1 MiB from their own mappings (M_MMAP_THRESHOLD fixed, which
    also stops glibc raising it): freed tensors go back to the OS, so RSS follows live bytes."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_ABOVE)
    except OSError:
        pass


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
    """Set VmHWM to the current RSS (Linux ≥ 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def resnet50_models(tasks: int):
    import torch
    import torchvision

    torch.manual_seed(0)
    base = torchvision.models.resnet50().state_dict()
    finetuned = []
    for task in range(tasks):
        gen = torch.Generator().manual_seed(task + 1)
        finetuned.append({name: value + 1e-3 * torch.randn(value.shape, generator=gen)
                          if value.is_floating_point() else value.clone()
                          for name, value in base.items()})
    return base, finetuned


def state_bytes(state) -> int:
    return sum(value.numel() * value.element_size() for value in state.values())


def measure(merger: str, tasks: int, repeats: int, threads: int | None) -> dict:
    """Run in the worker subprocess: build the inputs, take one merge's peak memory, then time
    the merges."""
    map_every_large_allocation()
    import torch

    import mixbench.merging as merging

    if threads:
        torch.set_num_threads(threads)
    function, options = MERGERS[merger]
    base, finetuned = resnet50_models(tasks)

    def merge():
        return getattr(merging, function)(base, finetuned, **options)

    before = status_kib("VmRSS") * 1024
    reset_peak()
    merged = merge()
    above = status_kib("VmHWM") * 1024 - before - state_bytes(merged)
    del merged
    quiet_malloc()
    seconds = median_ms(merge, repeats) / 1000
    return {"seconds": seconds, "peak_mib": above / 2**20, "model_mib": state_bytes(base) / 2**20,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def run_worker(merger: str, tasks: int, repeats: int, threads: int | None) -> dict:
    command = [sys.executable, __file__, "--worker", merger, "--n", str(tasks),
               "--repeats", str(repeats)] + (["--threads", str(threads)] if threads else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{merger} N={tasks} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(rows: dict[tuple[str, int], dict], mergers: list[str], counts: list[int]):
    print("| merger | N | s | peak MiB above the N + 2 state dicts | time / TIES time |")
    print("|---|---:|---:|---:|---:|")
    for tasks in counts:
        ties = rows.get(("ties", tasks))
        for merger in mergers:
            row = rows[(merger, tasks)]
            ratio = f"{row['seconds'] / ties['seconds']:.2f}" \
                if ties and merger.startswith("pcb") else "—"
            print(f"| {merger} | {tasks} | {row['seconds']:.2f} | {row['peak_mib']:.0f} "
                  f"| {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2, 4, 8],
                        help="numbers of fine-tuned models")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed merges per cell, after one warm-up")
    parser.add_argument("--mergers", nargs="+", default=DEFAULT_MERGERS, choices=list(MERGERS))
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's)")
    parser.add_argument("--worker", choices=list(MERGERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.n[0], args.repeats, args.threads)))
        return
    rows = {}
    for tasks in args.n:
        for merger in args.mergers:
            rows[(merger, tasks)] = run_worker(merger, tasks, args.repeats, args.threads)
    first = next(iter(rows.values()))
    print(f"torch {first['torch']}, CPU, {first['threads']} threads; ResNet-50 state dict "
          f"{first['model_mib']:.0f} MiB; median of {args.repeats} merge(s) after a warm-up\n")
    print_table(rows, args.mergers, args.n)


if __name__ == "__main__":
    main()
