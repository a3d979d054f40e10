"""Evaluating a small training set (a distilled one, or a real subset of the same size) as
MTT does: train ``num_eval`` fresh networks on it (SGD with momentum, lr = the learned α,
× 0.1 at half of the epochs, DSA) and report the final epoch's test metrics, mean ± std.
The best test accuracy seen during training is kept too, labelled: it is what the papers'
code reports, and it selects on the test set."""
from __future__ import annotations

import dataclasses
import logging
import statistics
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mixbench.components import BACKBONES, METHODS, Components
from mixbench.data import DataBundle, Split, make_loader
from mixbench.distill.augment import DSA
from mixbench.distill.smooth import AugmentedStep
from mixbench.engine.checkpoint import CHECKPOINT_NAME
from mixbench.engine.context import RunContext
from mixbench.engine.fit import Training, fit, resume
from mixbench.engine.seeding import derive_seed, seed_everything

log = logging.getLogger(__name__)


def evaluate_set(ctx: RunContext, parts: Components, data: DataBundle, images: torch.Tensor,
                 labels: torch.Tensor, lr: float, *, name: str, num_eval: int,
                 backbone, dsa: DSA | None) -> dict:
    """Train ``num_eval`` networks (``backbone``) on (``images``, ``labels``) and test them on
    ``data``'s test split. Each has its checkpoint under eval/NAME_K/, so a killed evaluation
    resumes. Returns the mean, std and per-network records of the final-epoch metrics."""
    cfg, t = ctx.cfg, ctx.cfg.trainer
    bundle = dataclasses.replace(data, train=Split(images.detach().cpu(), labels.cpu()))
    train = make_loader(bundle, "train", t.batch_size, train=True, device=ctx.device)
    val, test = (make_loader(data, split, t.eval_batch_size, train=False, device=ctx.device)
                 for split in ("val", "test"))
    optimizer = OmegaConf.merge(cfg.optimizer, {"lr": float(lr)})
    scheduler = OmegaConf.create({"name": "step", "milestones": [t.epochs // 2], "gamma": 0.1})
    nets = []
    for k in range(num_eval):
        seed = derive_seed(cfg.seed, "eval", k)
        seed_everything(seed)
        model = BACKBONES.build(backbone, num_classes=data.num_classes,
                                in_channels=data.in_channels).to(ctx.device)
        method = AugmentedStep(METHODS.build(cfg.method, num_classes=data.num_classes), dsa)
        net = dataclasses.replace(parts, model=model, method=method, data=bundle)
        training = Training.build(ctx, net, len(train), t.epochs, optimizer=optimizer,
                                  scheduler=scheduler)
        folder = ctx.run_dir / "eval" / f"{name}_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint = folder / CHECKPOINT_NAME
        state, _ = resume(training, checkpoint, ctx.config)
        training.wrap(ctx)
        state = fit(ctx, training, parts.task, train, test, epochs=t.epochs, seed=seed,
                    state=state, checkpoint=checkpoint)
        metrics = parts.task.evaluate(model, val, test, ctx.device, n_bins=cfg.eval.n_bins)
        tops = [r["test_top1"] for r in state.history if "test_top1" in r]
        nets.append({"top1": metrics["test"]["top1"], "ece": metrics["test"]["ece"],
                     "nll": metrics["test"]["nll"], "best_top1": max(tops),
                     "test": metrics["test"], "train_s": state.train_s})
        log.info("%s: evaluation network %d/%d: top-1 %.4f (best epoch %.4f)", name, k + 1,
                 num_eval, nets[-1]["top1"], nets[-1]["best_top1"])
    summary = {key: statistics.fmean(n[key] for n in nets) for key in ("top1", "ece", "nll",
                                                                        "best_top1")}
    summary.update({f"{key}_std": statistics.pstdev([n[key] for n in nets])
                    for key in ("top1", "ece", "best_top1")})
    summary["test"] = {key: statistics.fmean(n["test"][key] for n in nets)
                       for key in nets[0]["test"]
                       if isinstance(nets[0]["test"][key], (int, float))}
    summary["nets"] = [{k: v for k, v in n.items() if k != "test"} for n in nets]
    return summary


def save_grid(images: torch.Tensor, ipc: int, path: Path) -> None:
    """The synthetic set as one image: a row per class, its ``ipc`` images side by side, each
    scaled to its own min-max (the images are normalised, possibly whitened, values)."""
    from torchvision.utils import save_image

    x = images.detach().float().cpu()
    low = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
    high = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    save_image((x - low) / (high - low).clamp_min(1e-8), path, nrow=ipc, padding=1)
