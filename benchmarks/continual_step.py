"""The cost of class-incremental learning's extras: an epoch of a distilling step against a
standard epoch over the same samples and model, the teacher's forward alone, and herding.

    python benchmarks/continual_step.py                       # digits-sized, small_cnn, CPU
    python benchmarks/continual_step.py --synthetic cifar100 --backbone resnet32 --train-size 10000
    python benchmarks/continual_step.py --herding-only        # 50k CIFAR-shape features

Epochs alternate between the two loops (standard first, then distilling, then the reverse);
medians are reported. The goal: a distilling epoch costs at most 10% more than a standard
epoch plus the teacher's forward. Herding: 100 classes of 500 ResNet-32-sized features (64),
20 exemplars each (PyCIL's 2000 over 100 classes), after the model's forward over the 50k
images, timed apart."""
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


def build(args):
    import torch

    from benchmarks.train_step import synthetic_cifar
    from mixbench.components import BACKBONES, LOSSES, METHODS
    from mixbench.data import make_loader
    from mixbench.registry import DATASETS

    torch.manual_seed(0)
    if args.synthetic:
        data = synthetic_cifar(100 if args.synthetic == "cifar100" else 10, args.train_size)
    else:
        data = DATASETS.build({"name": "digits"})
    model = BACKBONES.build({"name": args.backbone}, num_classes=data.num_classes,
                            in_channels=data.in_channels)
    old = data.num_classes // 2
    teacher = copy.deepcopy(model)
    loader = make_loader(data, "train", args.batch, train=True, device="cpu")
    return {"data": data, "model": model, "teacher": teacher, "old": old, "loader": loader,
            "method": METHODS.build({"name": args.method}, num_classes=data.num_classes),
            "loss": LOSSES.build({"name": "soft_ce"})}


def epoch(env, method, model) -> float:
    import torch

    from mixbench.engine.fit import train_one_epoch
    from mixbench.tasks import task_for

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    start = time.perf_counter()
    train_one_epoch(model, env["loader"], method, env["loss"], optimizer, scheduler, scaler,
                    epoch=0, task=task_for(env["data"]), device=torch.device("cpu"),
                    progress=False)
    return time.perf_counter() - start


def teacher_pass(env) -> float:
    """The teacher's forwards over the same batches (eval mode, no gradients)."""
    import torch

    teacher = env["teacher"].eval()
    start = time.perf_counter()
    with torch.no_grad():
        for x, *_ in env["loader"]:
            teacher(x)
    return time.perf_counter() - start


def herding_time(classes: int, per_class: int, dim: int, m: int) -> float:
    import torch

    from mixbench.continual.memory import herding

    torch.manual_seed(0)
    features = torch.randn(classes, per_class, dim)
    start = time.perf_counter()
    for c in range(classes):
        herding(features[c], m)
    return time.perf_counter() - start


def feature_pass(backbone: str, images: int, batch: int = 256) -> float:
    import torch

    from mixbench.components import BACKBONES

    model = BACKBONES.build({"name": backbone}, num_classes=100).eval()
    x = torch.randn(batch, 3, 32, 32)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(images // batch):
            model.forward_features(x)
    return (time.perf_counter() - start) * images / (images // batch * batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--synthetic", choices=["cifar10", "cifar100"])
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--method", default="erm")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs of each loop")
    parser.add_argument("--herding-only", action="store_true")
    parser.add_argument("--feature-backbone", default="resnet32",
                        help="the model whose forward over the images precedes herding")
    parser.add_argument("--feature-images", type=int, default=5_120,
                        help="images of that forward, timed and scaled to 50k")
    args = parser.parse_args()
    quiet_malloc()
    import torch

    from mixbench.continual.kd import Distilled

    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads")
    if not args.herding_only:
        env = build(args)
        standard_model = env["model"]
        distilled_model = copy.deepcopy(standard_model)
        distilled = Distilled(env["method"], env["teacher"], env["old"], 2.0)
        times = {"standard": [], "distilling": [], "teacher": []}
        loops = [("standard", lambda: epoch(env, env["method"], standard_model)),
                 ("distilling", lambda: epoch(env, distilled, distilled_model)),
                 ("teacher", lambda: teacher_pass(env))]
        for turn in range(args.epochs + 1):  # turn 0 warms up
            for name, run in loops if turn % 2 else loops[::-1]:
                seconds = run()
                if turn:
                    times[name].append(seconds)
        median = {k: statistics.median(v) for k, v in times.items()}
        extra = median["distilling"] / (median["standard"] + median["teacher"]) - 1
        print(f"\n{args.synthetic or 'digits'}, {args.backbone}, {args.method}, batch "
              f"{args.batch}, {len(env['loader'])} batches; median of {args.epochs} epochs\n")
        print("| loop | s / epoch |")
        print("|---|---:|")
        for name in ("standard", "distilling", "teacher"):
            label = {"standard": "standard epoch", "distilling": "distilling epoch (kd, wa)",
                     "teacher": "teacher forward alone"}[name]
            print(f"| {label} | {median[name]:.3f} |")
        print(f"\ndistilling / (standard + teacher) - 1: {extra:+.1%} (goal ≤ +10%)")
    features = feature_pass(args.feature_backbone, args.feature_images) * 50_000 / \
        args.feature_images
    selection = herding_time(100, 500, 64, 20)
    print(f"\nherding over 50k CIFAR-shape images (100 classes × 500, 20 exemplars each): "
          f"selection {selection:.2f} s (goal < 2 s); before it, the {args.feature_backbone} "
          f"features of the 50k images {features:.1f} s (from {args.feature_images})")


if __name__ == "__main__":
    main()
