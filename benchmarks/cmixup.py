"""C-Mixup's pair-sampling cost per batch, as a ratio to a plain mixup training step.

    python benchmarks/cmixup.py [--batch 128] [--repeats 50] [--sizes 1000 10000 100000]
                                [--bandwidth 0.5]

For each training-set size N it times, in a fresh process, one batch's partner draw
(``sample_partners``: the batch's labels against all N training labels, chunk by chunk) and,
in the same process, a plain mixup training step (mix + forward + backward + SGD step of the
tabular MLP on the same batch). It also reports the process's peak memory growth while
sampling, and what the paper's precomputed N×N probability matrix (float64) would take.
Medians over ``--repeats`` calls; run it on an idle machine."""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median_ms, quiet_malloc  # noqa: E402


def measure(n: int, batch: int, repeats: int, bandwidth: float) -> dict:
    import torch

    from mixbench.losses import MeanSquaredError
    from mixbench.methods.cmixup import sample_partners
    from mixbench.components import BACKBONES, METHODS

    torch.manual_seed(0)
    pool = torch.randn(n, 1)
    index = torch.randint(0, n, (batch,))
    keys = pool[index]
    model = BACKBONES.build({"name": "mlp"}, num_classes=1, in_channels=5)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    mixup = METHODS.build({"name": "mixup", "alpha": 2.0}, num_classes=1)
    loss_fn = MeanSquaredError()
    x, y = torch.randn(batch, 5), torch.randn(batch, 1)

    def mixup_step():
        out = mixup.step(model, (x, y), loss_fn)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    def draw():
        sample_partners(keys, pool, bandwidth, exclude=index)

    step_ms = median_ms(mixup_step, repeats)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sample_ms = median_ms(draw, repeats)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {"n": n, "sample_ms": sample_ms, "mixup_step_ms": step_ms,
            "ratio": sample_ms / step_ms, "peak_mib": peak_kib / 1024,
            "paper_matrix_mib": n * n * 8 / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--bandwidth", type=float, default=0.5,
                        help="σ of the label kernel; labels are standard normal")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: one size
    args = parser.parse_args()
    quiet_malloc()
    if args.one:
        print(json.dumps(measure(args.one, args.batch, args.repeats, args.bandwidth)))
        return
    import torch

    print(f"batch {args.batch}, {args.repeats} repeats, bandwidth {args.bandwidth}, "
          f"torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| N | sampling ms / batch | mixup step ms | sampling / mixup step | "
          "peak memory growth MiB | paper's N×N matrix MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--batch",
                              str(args.batch), "--repeats", str(args.repeats),
                              "--bandwidth", str(args.bandwidth)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {n:,} | {r['sample_ms']:.3f} | {r['mixup_step_ms']:.3f} | {r['ratio']:.2f} | "
              f"{r['peak_mib']:.1f} | {r['paper_matrix_mib']:,.0f} |")


if __name__ == "__main__":
    main()
