"""Forward time of one model under the test-time normalisations: source BatchNorm (eval mode),
TBN (the batch's statistics) and UnMix-TNS (K = 16), at test batches of 64 and 16. The goal:
UnMix-TNS costs at most 1.5× TBN.

    python benchmarks/tta.py                         # small_cnn at 28×28 and ResNet-18 at 32×32
    python benchmarks/tta.py --models resnet18 --repeats 50
    python benchmarks/tta.py --no-cuda

The three forwards take turns within each round (source, TBN, UnMix-TNS, then the reverse),
so drift of the machine's speed hits them alike; the table reports the median over all
rounds, and the ratio of medians. On CUDA each timing waits for the device
(``torch.cuda.synchronize``); the adapted forward itself never waits (tests/test_tta.py)."""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import quiet_malloc  # noqa: E402

MODELS = {  # name → (backbone config, input shape of one image, classes)
    "small_cnn": ({"name": "small_cnn"}, (1, 28, 28), 10),
    "resnet18": ({"name": "resnet18"}, (3, 32, 32), 10),
}
ADAPTERS = ("source", "tbn", "unmix_tns")


def adapted(name: str, backbone: dict, shape, classes: int, batch: int, device):
    import torch

    from mixbench.components import BACKBONES
    from mixbench.tta.adapters import build_adapter

    torch.manual_seed(0)
    model = BACKBONES.build(backbone, num_classes=classes, in_channels=shape[0]).to(device)
    adapters = {a: build_adapter(a, copy.deepcopy(model), batch_size_max=64)
                if a == "unmix_tns" else build_adapter(a, copy.deepcopy(model))
                for a in ADAPTERS}
    x = torch.randn(batch, *shape, device=device)
    return adapters, x


def measure(adapters, x, rounds: int, sync) -> dict[str, float]:
    """Median milliseconds per forward of each adapter, turns alternating per round."""
    times = {name: [] for name in adapters}
    order = list(adapters)
    for name in order:  # warm-up
        adapters[name](x)
    sync()
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            adapters[name](x)
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 16])
    parser.add_argument("--repeats", type=int, default=30, help="rounds per setting")
    parser.add_argument("--no-cuda", action="store_true", help="CPU only, even with a GPU")
    args = parser.parse_args(argv)
    import torch

    quiet_malloc()
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_cuda:
        devices.append(torch.device("cuda"))
    print("| device | model | batch | source ms | TBN ms | UnMix-TNS ms | UnMix-TNS / TBN |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for device in devices:
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        for model in args.models:
            backbone, shape, classes = MODELS[model]
            for batch in args.batches:
                adapters, x = adapted(model, backbone, shape, classes, batch, device)
                ms = measure(adapters, x, args.repeats, sync)
                print(f"| {device.type} | {model} | {batch} | {ms['source']:.2f} | "
                      f"{ms['tbn']:.2f} | {ms['unmix_tns']:.2f} | "
                      f"{ms['unmix_tns'] / ms['tbn']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
