"""Time and memory of one trajectory-matching iteration against N, the student's unrolled
steps: ours (``mixbench.distill.unroll``: ``torch.func.functional_call`` on a list of
parameter tensors) against a loop in the style of MTT's official code (one flat parameter
vector, a re-parametrised module whose weights are views into it, the gradient taken with
respect to the whole vector), in the same process, turns interleaved.

    python benchmarks/distill.py                            # ConvNet-128 at 32×32, IPC 10
    python benchmarks/distill.py --steps 10 30 50 --ipc 1 --width 64 --repeats 3   # a CPU

An iteration: N differentiable SGD steps from θ*_t on the synthetic set (no augmentation,
so both loops do the same arithmetic), the matching loss, and its backward into the pixels
and α. Memory: the bytes autograd holds for the backward (every saved tensor's storage,
counted once) at the end of the unroll, on any device; on CUDA also the peak allocated.
Both grow linearly in N: every step's activations and parameters are kept."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import quiet_malloc  # noqa: E402
from mixbench.components import BACKBONES  # noqa: E402
from mixbench.distill import ParamLayout, trajectory_matching_loss, unroll  # noqa: E402


class Reparam(torch.nn.Module):
    """The official code's ReparamModule, shortened: the module's weights become views of
    one flat vector handed to ``forward``."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module
        self.layout = ParamLayout.of(module)

    def forward(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, dict(zip(self.layout.names,
                                                     self.layout.split(flat))), (x,))


def official_style(reparam: Reparam, start, images, labels, lr, steps: int):
    params = [start.detach().requires_grad_(True)]
    for _ in range(steps):
        loss = F.cross_entropy(reparam(params[-1], images), labels)
        grad = torch.autograd.grad(loss, params[-1], create_graph=True)[0]
        params.append(params[-1] - lr * grad)
    return params[-1]


def ours(model, layout, start, images, labels, lr, steps: int):
    return unroll(model, layout, start, images, labels, lr, steps=steps)[steps]


class SavedBytes:
    """Bytes of the distinct storages autograd saves for the backward while inside."""

    def __init__(self):
        self.storages = {}

    def pack(self, tensor):
        storage = tensor.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def __enter__(self):
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)

    @property
    def mib(self) -> float:
        return sum(self.storages.values()) / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 30, 50])
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    quiet_malloc()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = BACKBONES.build({"name": "convnet", "width": args.width, "depth": 3,
                             "readout": args.size // 8}, num_classes=args.classes,
                            in_channels=3).to(device).requires_grad_(False)
    layout = ParamLayout.of(model)
    reparam = Reparam(model)
    start = torch.cat([p.flatten() for p in model.parameters()])
    target = start + 0.01 * torch.randn_like(start)
    labels = torch.arange(args.classes, device=device).repeat_interleave(args.ipc)
    images = torch.randn(len(labels), 3, args.size, args.size, device=device,
                         requires_grad=True)
    lr = torch.tensor(0.01, device=device, requires_grad=True)
    loops = {"ours": lambda n: ours(model, layout, start, images, labels, lr, n),
             "official-style": lambda n: official_style(reparam, start, images, labels, lr, n)}

    def iteration(loop, n):
        end = loops[loop](n)
        trajectory_matching_loss(end, start, target).backward()
        images.grad = lr.grad = None

    print(f"ConvNet width {args.width} depth 3, {len(labels)} images "
          f"({args.ipc} per class) of 3×{args.size}×{args.size}, {layout.numel:,} parameters, "
          f"{device}, median of {args.repeats}")
    print("| N | loop | ms / iteration | iterations / s | autograd MiB | peak CUDA MiB | "
          "time vs official-style |")
    print("|---|---|---|---|---|---|---|")
    for n in args.steps:
        memory, peak = {}, {}
        for loop in loops:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with SavedBytes() as saved:
                end = loops[loop](n)
            trajectory_matching_loss(end, start, target).backward()
            images.grad = lr.grad = None
            memory[loop] = saved.mib
            peak[loop] = (torch.cuda.max_memory_allocated(device) / 2**20
                          if device.type == "cuda" else None)
            del end
        times = {loop: [] for loop in loops}
        for turn in range(args.repeats):  # interleaved, alternating which goes first: both
            for loop in list(loops)[::1 if turn % 2 else -1]:  # see the same machine load
                sync()
                began = time.perf_counter()
                iteration(loop, n)
                sync()
                times[loop].append(1000 * (time.perf_counter() - began))
        median = {loop: statistics.median(t) for loop, t in times.items()}
        for loop in loops:
            cuda = f"{peak[loop]:.0f}" if peak[loop] is not None else "—"
            print(f"| {n} | {loop} | {median[loop]:.1f} | {1000 / median[loop]:.2f} | "
                  f"{memory[loop]:.1f} | {cuda} | "
                  f"{median[loop] / median['official-style']:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
