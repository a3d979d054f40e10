"""Time mixbench's input mixers against timm's and torchvision's on one batch.

    python benchmarks/mixing.py [--batch 256] [--classes 100] [--min-time 0.5] [--no-cuda]
                                [--threads N] [--rounds R] [--interleave N]

Each mixer mixes a B×3×32×32 float batch with integer labels (one-hot targets included in
every library's time, as each needs them), per-batch and per-sample λ. References: timm's
``timm.data.Mixup`` (mixup or cutmix alone, mode ``batch`` and ``elem``) and torchvision's
``transforms.v2.MixUp`` / ``v2.CutMix`` (per-batch λ only). Each library runs in a fresh
process (numpy's spinning thread pool, which timm wakes, would slow later torch ops), on the
CPU and, when there is one, on CUDA. Times are medians from ``torch.utils.benchmark``; with
``--rounds R`` every process runs R times, in turn, and the table shows the median of rounds
(a shared machine's load then hits every library alike). With ``--interleave N`` ours and
torchvision's run in one process, taking turns N times (timm keeps its own process): on a
machine whose speed drifts within seconds, the ratios to torchvision are then paired, and the
table adds, in brackets, the quartiles of each target's ratio over all turns (mixup and cutmix
over torchvision's time in the same turn, the other mixers over our mixup's).
Every process raises glibc's malloc thresholds first (unless ``--plain-malloc``), so that a
fresh batch-sized buffer is not a round trip to the OS; it applies to all libraries alike.

Each row also gives the effective memory bandwidth, GB/s = 2 × batch bytes / time: the least
traffic any input mixer moves (every input pixel read once, every mixed pixel written once).
On CUDA it is followed by its share of the card's theoretical bandwidth (double data rate ×
memory clock × bus width, from the device properties).

Targets (CPU): mixup and cutmix ≤ 0.5× torchvision's time with per-batch λ, ≤ 0.6× with
per-sample λ; every other mask mixer ≤ 2× our mixup in the same λ mode."""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import quiet_malloc  # noqa: E402

OURS = ["mixup", "cutmix", "mixup_cutmix", "fmix", "gridmix", "smoothmix", "resizemix",
        "saliencymix"]
MODES = ["batch", "sample"]
IMAGE = (3, 32, 32)  # CIFAR-shaped float32 images


def timer_median_ms(fn, device: str, min_time: float) -> float:
    import torch
    from torch.utils import benchmark

    for _ in range(10):  # warm-up
        fn()
    # The Timer synchronises CUDA around its measurements itself.
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn},
                            num_threads=torch.get_num_threads())
    return 1000 * timer.blocked_autorange(min_run_time=min_time).median


def batch(args, device: str):
    import torch

    torch.manual_seed(0)
    x = torch.randn(args.batch, *IMAGE, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    return x, labels


def mix_ours(method, x, labels):
    return method.mix_batch(x, method.targets(labels, x.dtype))


def mixers_ours(args, device: str) -> dict:
    from mixbench.components import METHODS

    x, labels = batch(args, device)
    return {f"{name}/{mode}": functools.partial(
        mix_ours, METHODS.build({"name": name, "alpha": 1.0, "lam_mode": mode},
                                num_classes=args.classes), x, labels)
        for name in OURS for mode in MODES}


def mixers_torchvision(args, device: str) -> dict:
    from torchvision.transforms import v2

    x, labels = batch(args, device)
    return {f"{name}/batch": functools.partial(cls(alpha=1.0, num_classes=args.classes), x,
                                               labels)
            for name, cls in [("mixup", v2.MixUp), ("cutmix", v2.CutMix)]}


def time_ours(args, device: str) -> dict[str, float]:
    return {key: timer_median_ms(fn, device, args.min_time)
            for key, fn in mixers_ours(args, device).items()}


def time_timm(args, device: str) -> dict[str, float]:
    from timm.data import Mixup

    x, labels = batch(args, device)
    out = {}
    for name, alphas in [("mixup", dict(mixup_alpha=1.0, cutmix_alpha=0.0)),
                         ("cutmix", dict(mixup_alpha=0.0, cutmix_alpha=1.0))]:
        for mode, timm_mode in [("batch", "batch"), ("sample", "elem")]:
            # CIFAR settings: timm's defaults are ImageNet's (smoothing 0.1, 1000 classes).
            mixer = Mixup(**alphas, mode=timm_mode, label_smoothing=0.0,
                          num_classes=args.classes)
            # timm mixes x in place; mixing an already mixed batch costs the same.
            out[f"{name}/{mode}"] = timer_median_ms(lambda: mixer(x, labels), device, args.min_time)
    return out


def time_torchvision(args, device: str) -> dict[str, float]:
    return {key: timer_median_ms(fn, device, args.min_time)
            for key, fn in mixers_torchvision(args, device).items()}


def time_interleaved(args, device: str) -> dict[str, dict[str, float]]:
    """Ours and torchvision's in one process, in turn: ``--interleave`` rounds, each timing
    every mixer for min_time / rounds seconds; per mixer the median over rounds. A slow
    phase of a shared machine then hits every mixer alike (timm, which wakes numpy's
    thread pool, keeps its own process)."""
    fns = {("ours", key): fn for key, fn in mixers_ours(args, device).items()}
    fns |= {("torchvision", key): fn for key, fn in mixers_torchvision(args, device).items()}
    samples = {key: [] for key in fns}
    for _ in range(args.interleave):
        for key, fn in fns.items():
            samples[key].append(timer_median_ms(fn, device, args.min_time / args.interleave))
    out = {library: {key: statistics.median(t) for (lib, key), t in samples.items()
                     if lib == library} for library in ("ours", "torchvision")}
    # Per turn, each of ours over its reference in that same turn (see paired_reference)
    out["paired"] = {}
    for key in out["ours"]:
        ref = paired_reference(key)
        out["paired"][key] = [a / b for a, b in zip(samples[("ours", key)], samples[ref])]
    return out


def paired_reference(key: str) -> tuple[str, str]:
    """What a mixer's target compares it with: torchvision's per-batch mixer of the same name
    for mixup and cutmix (torchvision has no per-sample λ), else our mixup in the same mode."""
    name, mode = key.split("/")
    if name in ("mixup", "cutmix"):
        return "torchvision", f"{name}/batch"
    return "ours", f"mixup/{mode}"


LIBRARIES = {"ours": time_ours, "timm": time_timm, "torchvision": time_torchvision,
             "interleaved": time_interleaved}


def run_child(args, library: str, device: str) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", library, "--device", device,
               "--batch", str(args.batch), "--classes", str(args.classes),
               "--min-time", str(args.min_time), "--threads", str(args.threads),
               "--interleave", str(args.interleave)]
    if args.plain_malloc:
        command.append("--plain-malloc")
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"warning: {library} on {device} failed:\n{out.stderr.strip()[-2000:]}",
              file=sys.stderr)
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of_rounds(rounds: list[dict[str, float]]) -> dict[str, float]:
    keys = {key for times in rounds for key in times}
    return {key: statistics.median(t[key] for t in rounds if key in t) for key in sorted(keys)}


def quartiles_of_rounds(rounds: list[dict[str, list[float]]]) -> dict[str, tuple[float, float]]:
    """Per mixer, the 25th and 75th percentiles of its paired ratios over every turn of every
    round: how far the ratio moves on this machine. The "inclusive" method interpolates
    between the measured ratios, so a quartile never leaves their range (the default
    "exclusive" one extrapolates from a few samples, even below zero)."""
    pooled: dict[str, list[float]] = {}
    for paired in rounds:
        for key, ratios in paired.items():
            pooled.setdefault(key, []).extend(ratios)
    return {key: tuple(statistics.quantiles(r, n=4, method="inclusive")[::2])
            for key, r in pooled.items() if len(r) >= 2}


def traffic_bytes(batch_size: int) -> int:
    """The least any mixer moves for a float32 batch: read it once, write the mix once."""
    return 2 * batch_size * 4 * IMAGE[0] * IMAGE[1] * IMAGE[2]


def gbps(ms: float | None, nbytes: int) -> float | None:
    return None if ms is None else nbytes / (ms * 1e-3) / 1e9


def peak_gbps(props) -> float:
    """A CUDA card's theoretical memory bandwidth in GB/s from its device properties: two
    transfers per clock (``memory_clock_rate`` is in kHz) × bus width in bytes."""
    return 2 * props.memory_clock_rate * 1e3 * props.memory_bus_width / 8 / 1e9


def bandwidth(ms: float | None, nbytes: int, peak: float | None) -> str:
    """Effective GB/s, with its share of ``peak`` when the device has one."""
    rate = gbps(ms, nbytes)
    if rate is None:
        return "—"
    return f"{rate:.1f}" + (f" ({rate / peak:.0%} of peak)" if peak else "")


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None else f"{a / b:.2f}×"


def print_table(device: str, ours: dict, timm: dict, tv: dict, spread: dict, nbytes: int,
                peak: float | None = None) -> None:
    """The table; with ``spread`` (interleaved runs) the ratio a target is about is followed by
    the quartiles of its per-turn paired ratios. ``nbytes``: the traffic the GB/s count;
    ``peak``: the device's memory bandwidth in GB/s, if known."""
    print(f"\n### {device}\n")
    print("| mixer | λ | ms / batch | / torchvision v2 | / timm | / our mixup | GB/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in OURS:
        for mode in MODES:
            key = f"{name}/{mode}"
            ms = ours.get(key)
            # torchvision has per-batch λ only: per-sample rows compare with its batch time
            ref = name if name in ("mixup", "cutmix") else None
            tv_ms = tv.get(f"{ref}/batch") if ref else None
            timm_ms = timm.get(f"{ref}/{mode}") if ref else None
            to_tv, to_mixup = ratio(ms, tv_ms), ratio(ms, ours.get(f"mixup/{mode}"))
            if key in spread:  # next to the ratio of the reference the target names
                quartiles = f" ({spread[key][0]:.2f}–{spread[key][1]:.2f})"
                if paired_reference(key)[0] == "torchvision":
                    to_tv += quartiles
                else:
                    to_mixup += quartiles
            print(f"| {name} | {mode} | {fmt(ms)} | {to_tv} | {ratio(ms, timm_ms)} "
                  f"| {to_mixup} | {bandwidth(ms, nbytes, peak)} |")
    print("\n| reference | λ | ms / batch | GB/s |")
    print("|---|---|---:|---:|")
    for library, times in [("torchvision v2", tv), ("timm Mixup", timm)]:
        for key, ms in times.items():
            name, mode = key.split("/")
            print(f"| {library} {name} | {mode} | {fmt(ms)} | {bandwidth(ms, nbytes, peak)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--min-time", type=float, default=0.5,
                        help="seconds of timing per mixer (torch.utils.benchmark)")
    parser.add_argument("--no-cuda", action="store_true")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per process (default: torch's choice)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every process this many times, in turn; report medians")
    parser.add_argument("--interleave", type=int, default=0, metavar="N",
                        help="time ours and torchvision's in one process, in turn, N rounds")
    parser.add_argument("--plain-malloc", action="store_true",
                        help="leave glibc's malloc thresholds alone")
    parser.add_argument("--child", choices=sorted(LIBRARIES), help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.plain_malloc:
        quiet_malloc()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    if args.child:
        print(json.dumps(LIBRARIES[args.child](args, args.device)))
        return
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_cuda else [])
    print(f"batch {args.batch}×{'×'.join(map(str, IMAGE))} float32, {args.classes} classes; torch "
          f"{torch.__version__}, torchvision {version('torchvision')}, timm {version('timm')};"
          f" {args.threads} CPU threads; malloc thresholds "
          f"{'default' if args.plain_malloc else 'raised'}; medians of torch.utils.benchmark"
          f"{f', median of {args.rounds} rounds' if args.rounds > 1 else ''}"
          f"{f'; ours and torchvision in turn, {args.interleave}×' if args.interleave else ''}")
    libraries = ["interleaved", "timm"] if args.interleave else ["ours", "timm", "torchvision"]
    for device in devices:
        rounds = []
        for _ in range(args.rounds):
            times = {library: run_child(args, library, device) for library in libraries}
            rounds.append({**times.pop("interleaved", {}), **times})
        times = {library: median_of_rounds([r.get(library, {}) for r in rounds])
                 for library in ("ours", "timm", "torchvision")}
        spread = quartiles_of_rounds([r.get("paired", {}) for r in rounds])
        peak, title = None, device
        if device == "cuda":
            props = torch.cuda.get_device_properties(device)
            peak = peak_gbps(props)
            title = f"cuda: {props.name}, {peak:.0f} GB/s theoretical"
        print_table(title, times["ours"], times["timm"], times["torchvision"], spread,
                    traffic_bytes(args.batch), peak)


if __name__ == "__main__":
    main()
