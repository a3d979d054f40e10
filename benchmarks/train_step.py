"""Training throughput of the mixbench trainer against a plain hand-written PyTorch loop.

    python benchmarks/train_step.py                                   # digits, small_cnn, CPU
    python benchmarks/train_step.py --device cuda --backbone resnet18 --synthetic cifar100 \
        --batch 256 --precision bf16 --channels-last --compile --method mixup

Both loops train the same model (same initial weights) on the same in-memory uint8 data with
the same global batch, optimiser and schedule, and do the same per-batch work a user would
write by hand: shuffle, uint8 → float, normalise, forward, loss, backward, step (and, with
``--method mixup``, mixup with one λ per batch). Epochs alternate between the two loops and
the median epoch time of each is reported; the ratio trainer / plain is the trainer's
overhead (goal ≤ 1.05). ``--synthetic`` replaces the dataset by random uint8 images of
CIFAR's shape (50k training images unless ``--train-size``), for machines without the
files."""
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
from mixbench.config import CONFIG_DIR  # noqa: E402


def synthetic_cifar(num_classes: int, train_size: int):
    import torch

    from mixbench.data import DataBundle
    from mixbench.data.bundle import Augment, Split

    g = torch.Generator().manual_seed(0)

    def split(n):
        return Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                     torch.randint(0, num_classes, (n,), generator=g))

    return DataBundle(train=split(train_size), val=split(1_000), test=split(1_000),
                      num_classes=num_classes, in_channels=3, image_size=(32, 32),
                      mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                      augment=Augment(crop_padding=4, hflip=True), name="synthetic")


def build(args):
    """The trainer's own components for the composed config, plus everything the plain loop
    needs, built from the same objects."""
    import hydra.utils
    import torch
    from hydra import compose, initialize_config_dir

    from mixbench.components import SCHEDULERS, build_components
    from mixbench.data import make_loader
    from mixbench.engine.context import PRECISIONS, autocast_for
    from mixbench.engine.distributed import SINGLE
    from mixbench.engine.fit import wrap_model

    overrides = [f"backbone={args.backbone}", f"dataset={args.dataset}",
                 f"trainer.batch_size={args.batch}", f"trainer.precision={args.precision}",
                 f"trainer.channels_last={str(args.channels_last).lower()}",
                 f"trainer.compile={str(args.compile).lower()}", "trainer.progress=false",
                 f"+method={args.method}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    device = torch.device(args.device)
    torch.manual_seed(0)
    data = None
    if args.synthetic:
        data = synthetic_cifar(100 if args.synthetic == "cifar100" else 10, args.train_size)
    parts = build_components(cfg, device, data)
    loader = make_loader(parts.data, "train", args.batch, train=True, device=device)
    steps = len(loader)
    initial = copy.deepcopy(parts.model.state_dict())

    def optimiser_for(model):
        optimizer = hydra.utils.instantiate(cfg.optimizer)(model.parameters())
        scheduler = SCHEDULERS.build(cfg.scheduler, optimizer=optimizer,
                                     epochs=10 ** 6, steps_per_epoch=steps)
        return optimizer, scheduler

    plain_model = copy.deepcopy(parts.model)
    plain_model.load_state_dict(initial)
    if cfg.trainer.compile:
        plain_model = torch.compile(plain_model)
    return {
        "cfg": cfg, "parts": parts, "loader": loader, "device": device,
        "model": wrap_model(parts.model, cfg.trainer, device, SINGLE),
        "opt": optimiser_for(parts.model), "plain_model": plain_model,
        "plain_opt": optimiser_for(plain_model), "autocast": autocast_for(device, args.precision),
        "dtype": PRECISIONS[args.precision],
    }


def trainer_epoch(env, epoch: int) -> int:
    import torch

    from mixbench.engine.fit import train_one_epoch

    optimizer, scheduler = env["opt"]
    scaler = torch.amp.GradScaler(env["device"].type, enabled=False)
    stats = train_one_epoch(env["model"], env["loader"], env["parts"].method, env["parts"].loss_fn,
                            optimizer, scheduler, scaler, epoch=epoch, task=env["parts"].task,
                            device=env["device"],
                            autocast=env["autocast"], log_every=env["cfg"].trainer.log_every,
                            progress=False)
    return stats["samples"]


def plain_epoch(env, epoch: int, mixup_alpha: float | None) -> int:
    """The loop a user writes by hand, on the loader's own uint8 tensors."""
    import torch
    import torch.nn.functional as F

    from mixbench.data.loaders import random_crop_flip

    loader, model = env["loader"], env["plain_model"]
    optimizer, scheduler = env["plain_opt"]
    x_all, y_all, mean, std = loader.x, loader.y, loader.mean, loader.std
    augment = loader.augment
    memory_format = (torch.channels_last if env["cfg"].trainer.channels_last
                     else torch.contiguous_format)
    beta = torch.distributions.Beta(mixup_alpha, mixup_alpha) if mixup_alpha else None
    model.train()
    order = torch.randperm(len(y_all), device=x_all.device)
    batch, seen = loader.batch_size, 0
    for i in range(len(y_all) // batch):
        idx = order[i * batch:(i + 1) * batch]
        x = x_all[idx].float().div_(255.0)
        if augment is not None and (augment.crop_padding or augment.hflip):
            x = random_crop_flip(x, augment.crop_padding, augment.hflip)
        x = ((x - mean) / std).contiguous(memory_format=memory_format)
        y = y_all[idx]
        with env["autocast"]():
            if beta is None:
                loss = F.cross_entropy(model(x), y)
            else:
                lam = float(beta.sample())
                perm = torch.randperm(len(y), device=x.device)
                logits = model(torch.lerp(x[perm], x, lam))
                loss = lam * F.cross_entropy(logits, y) + \
                    (1 - lam) * F.cross_entropy(logits, y[perm])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        seen += len(y)
    if not torch.isfinite(loss):
        raise RuntimeError("the plain loop's loss is not finite")
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--synthetic", choices=["cifar10", "cifar100"],
                        help="random uint8 images of CIFAR's shape instead of --dataset")
    parser.add_argument("--train-size", type=int, default=50_000,
                        help="training images of --synthetic data")
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--method", default="erm", choices=["erm", "mixup"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=7, help="timed epochs per loop")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    quiet_malloc()
    import torch

    env = build(args)
    if args.method == "mixup" and env["parts"].method.lam_mode != "batch":
        raise SystemExit("the plain loop mixes with one λ per batch: use method.lam_mode=batch")
    alpha = env["parts"].method.alpha if args.method == "mixup" else None
    sync = torch.cuda.synchronize if env["device"].type == "cuda" else (lambda: None)
    times = {"trainer": [], "plain": []}
    samples = {}
    loops = [("trainer", lambda e: trainer_epoch(env, e)),
             ("plain", lambda e: plain_epoch(env, e, alpha))]
    for epoch in range(args.epochs + 1):  # epoch 0 warms both up (and compiles)
        for name, fn in loops if epoch % 2 else loops[::-1]:  # who goes first alternates
            sync()
            start = time.perf_counter()
            samples[name] = fn(epoch)
            sync()
            if epoch:
                times[name].append(time.perf_counter() - start)
    trainer_s, plain_s = (statistics.median(times[k]) for k in ("trainer", "plain"))
    device = torch.cuda.get_device_name() if env["device"].type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    options = ", ".join(o for o, on in (("bf16", args.precision == "bf16"),
                                       ("channels_last", args.channels_last),
                                       ("compile", args.compile)) if on) or "fp32"
    print(f"{args.synthetic or args.dataset}, {args.backbone}, {args.method}, batch "
          f"{args.batch}, {options}; {device}; torch {torch.__version__}; median of "
          f"{args.epochs} epochs\n")
    print("| loop | samples/epoch | epoch s | samples/s |")
    print("|---|---:|---:|---:|")
    for name, seconds in (("mixbench trainer", trainer_s), ("plain PyTorch loop", plain_s)):
        key = "trainer" if name.startswith("mixbench") else "plain"
        print(f"| {name} | {samples[key]} | {seconds:.3f} | {samples[key] / seconds:,.0f} |")
    print(f"\noverhead (trainer time / plain time): {trainer_s / plain_s:.3f}")


if __name__ == "__main__":
    main()
