"""The cost of one training step per method, as a ratio to an ERM step.

    python benchmarks/step_overhead.py [--backbone small_cnn] [--shape 1 28 28] [--batch 128]
    python benchmarks/step_overhead.py --backbone resnet18 --shape 3 32 32 --batch 64

A step is what the trainer does per batch: ``method.step`` + backward + SGD step, on the same
backbone, batch and device for every method. Methods run round-robin (one step each per
round, after a warm-up round) so drifting load on a shared machine hits them alike; the
table gives the median per method and its ratios to ERM's and mixup's medians. AttentiveMix's frozen
network is a randomly initialised copy of the backbone (its speed does not depend on the
weights). The learned policies (automix, samix, adautomix, adamixup) build their extra
modules in the warm-up round: the timed steps include their generator update, not its
construction. Run it on an idle machine for numbers worth quoting."""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import quiet_malloc  # noqa: E402

# TransMix needs a ViT backbone, so it is not timed here.
METHODS_TIMED = ["erm", "mixup", "cutmix", "manifoldmix", "regmixup", "snapmix", "puzzlemix",
                 "attentivemix", "alignmix", "automix", "samix", "adautomix", "adamixup"]


def build_methods(names, backbone_cfg, num_classes, in_channels, folder: Path):
    import torch

    from mixbench.engine.checkpoint import save_checkpoint
    from mixbench.components import BACKBONES, METHODS

    frozen = BACKBONES.build(backbone_cfg, num_classes=num_classes, in_channels=in_channels)
    ckpt = folder / "last.pt"
    save_checkpoint(ckpt, {"model": frozen.state_dict(), "config": {"backbone": backbone_cfg}})
    extra = {"attentivemix": {"feature_ckpt": str(ckpt), "top_k": 1}}
    torch.manual_seed(0)
    return {name: METHODS.build({"name": name, **extra.get(name, {})}, num_classes=num_classes)
            for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--shape", type=int, nargs=3, default=[1, 28, 28], metavar=("C", "H", "W"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="+", default=METHODS_TIMED)
    args = parser.parse_args()
    quiet_malloc()
    import torch

    from mixbench.losses import CrossEntropy
    from mixbench.components import BACKBONES

    device = torch.device(args.device)
    backbone_cfg = {"name": args.backbone}
    channels = args.shape[0]
    torch.manual_seed(0)
    model = BACKBONES.build(backbone_cfg, num_classes=args.classes,
                            in_channels=channels).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = CrossEntropy()
    x = torch.randn(args.batch, *args.shape, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    with tempfile.TemporaryDirectory() as folder:
        methods = build_methods(args.methods, backbone_cfg, args.classes, channels, Path(folder))

        def step(method) -> float:
            synchronize()
            start = time.perf_counter()
            out = method.step(model, (x, labels), loss_fn)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            synchronize()
            return time.perf_counter() - start

        times = {name: [] for name in methods}
        for round_ in range(args.repeats + 1):
            for name, method in methods.items():
                elapsed = step(method)
                if round_ > 0:  # round 0 warms up
                    times[name].append(elapsed)

    medians = {name: 1000 * statistics.median(t) for name, t in times.items()}
    print(f"{args.backbone}, batch {args.batch}×{'×'.join(map(str, args.shape))}, "
          f"{args.device}, {args.repeats} rounds, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    # the dynamic methods' cost against ERM and, for the learned policies, against mixup
    print("| method | ms / step (median) | × ERM | × mixup |")
    print("|---|---:|---:|---:|")
    for name, ms in medians.items():
        ratios = [f"{ms / medians[ref]:.2f}" if ref in medians else "—"
                  for ref in ("erm", "mixup")]
        print(f"| {name} | {ms:.1f} | {' | '.join(ratios)} |")


if __name__ == "__main__":
    main()
