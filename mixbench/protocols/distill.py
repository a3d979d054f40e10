"""Dataset distillation by trajectory matching (``protocol=distill``): MTT (Cazenavette et
al. 2022) with AST's student options (Shen et al. 2023), on experts from
``protocol=experts``.

Each iteration picks an expert and a start epoch t < T⁺ (``max_start_epoch``), unrolls a
student from θ*_t for N (``syn_steps``) SGD steps on the synthetic set with the learnable rate
α, and steps the images and α (SGD, momentum 0.5) on ‖θ̂_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖².
An iteration's draws (expert, t, minibatches, DSA, perturbation) come from (seed, iteration),
and the synthetic set is checkpointed every ``checkpoint_every`` iterations, so a killed run
resumes to the same images. Then ``num_eval`` fresh networks train on the synthetic set
(lr = α, × 0.1 at half, the run's optimiser and ``+method=``) and on the ``baselines`` (real
subsets of the same size), and results.json gets their final-epoch test numbers in its
``distill`` section, with the best test epoch beside them, labelled."""
from __future__ import annotations

import logging
import math
import time

import torch
from omegaconf import OmegaConf

from mixbench.components import BACKBONES
from mixbench.config import check_same_experiment
from mixbench.distill.augment import DSA
from mixbench.distill.evaluate import evaluate_set, save_grid
from mixbench.distill.init import INITS, check_ipc, kmeans_real, random_real, representative
from mixbench.distill.matching import ParamLayout, StudentOptions, match_trajectory
from mixbench.distill.synthetic import SyntheticSet
from mixbench.distill.trajectories import load_experts, prepared_data
from mixbench.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from mixbench.engine.context import RunContext, run_protocol, validate_config
from mixbench.engine.rundir import refuse_overwrite
from mixbench.engine.seeding import derive_seed
from mixbench.errors import ConfigError, NonFiniteLossError
from mixbench.protocols.base import Protocol
from mixbench.results.record import timings
from mixbench.registry import PROTOCOLS
from mixbench.results.columns import Column
from mixbench.results.sections import Section, register_section

log = logging.getLogger(__name__)
STATE_NAME = "distill.pt"  # the synthetic set and its optimisers, for resume
SYNTHETIC_NAME = "synthetic.pt"  # the final synthetic set: images, labels, α
BASELINES = ("random", "kmeans")
MAKE_EXPERTS_KEYS = {"protocol", "trainer", "optimizer", "scheduler", "seed"}


def _positive(key: str, value, kind=int) -> None:
    if not isinstance(value, kind) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"protocol.{key} must be a positive {kind.__name__}, got {value!r}")


@PROTOCOLS.register("distill")
class Distill(Protocol):
    name = "distill"
    task = "classification"
    one_process = "runs in one process"

    def __init__(self, *, experts: str | None = None, ipc: int = 10, syn_steps: int = 20,
                 expert_epochs: int = 2, max_start_epoch: int = 20, iterations: int = 5000,
                 lr_img: float = 1000.0, lr_lr: float = 1e-5, lr_teacher: float = 0.01,
                 momentum: float = 0.5, batch_syn: int | None = None, init: str = "real",
                 dsa: bool = True, dsa_strategy: str = "color_crop_cutout_flip_scale_rotate",
                 student_momentum: float = 0.0, balanced_loss: bool = False,
                 intermediate: str = "off", weight_perturb: bool = False,
                 max_experts: int | None = None, checkpoint_every: int = 10,
                 log_every: int = 10, num_eval: int = 5,
                 baselines: list[str] | tuple[str, ...] = BASELINES,
                 make_experts: dict | None = None):
        if not isinstance(ipc, int) or isinstance(ipc, bool) or ipc < 1:
            raise ConfigError(f"protocol.ipc (images per class) must be an integer >= 1, "
                              f"got {ipc!r}")
        for key, value in (("syn_steps", syn_steps), ("expert_epochs", expert_epochs),
                           ("max_start_epoch", max_start_epoch), ("iterations", iterations),
                           ("checkpoint_every", checkpoint_every), ("log_every", log_every)):
            _positive(key, value)
        if not isinstance(num_eval, int) or num_eval < 0:
            raise ConfigError(f"protocol.num_eval must be an integer >= 0, got {num_eval!r}")
        for key, value in (("lr_img", lr_img), ("lr_lr", lr_lr), ("lr_teacher", lr_teacher)):
            _positive(key, float(value), float)
        if batch_syn is not None:
            _positive("batch_syn", batch_syn)
        if init not in INITS:
            raise ConfigError(f"protocol.init must be one of {INITS}, got {init!r}")
        unknown = [b for b in baselines if b not in BASELINES]
        if unknown:
            raise ConfigError(f"protocol.baselines takes {BASELINES}, got {list(baselines)}")
        self.experts, self.ipc, self.init = experts, ipc, init
        self.syn_steps, self.expert_epochs = syn_steps, expert_epochs
        self.max_start_epoch, self.iterations = max_start_epoch, iterations
        self.lr_img, self.lr_lr, self.lr_teacher = float(lr_img), float(lr_lr), float(lr_teacher)
        self.momentum, self.batch_syn = momentum, batch_syn
        self.dsa = DSA(dsa_strategy) if dsa else None
        self.student = StudentOptions(student_momentum, balanced_loss, intermediate,
                                      weight_perturb)
        self.max_experts, self.checkpoint_every, self.log_every = (max_experts,
                                                                   checkpoint_every, log_every)
        self.num_eval, self.baselines = num_eval, tuple(baselines)
        if make_experts is not None and set(make_experts) - MAKE_EXPERTS_KEYS:
            raise ConfigError(f"protocol.make_experts takes {sorted(MAKE_EXPERTS_KEYS)}, got "
                              f"{sorted(make_experts)}")
        self.make_experts = make_experts

    def __call__(self, ctx: RunContext) -> dict:
        parts = self.components(ctx)
        experts, data = self.experts_and_data(ctx, parts)
        model = BACKBONES.build(ctx.cfg.backbone, num_classes=data.num_classes,
                                in_channels=data.in_channels).to(ctx.device)
        model.requires_grad_(False)  # the student's parameters are functional_call's
        trajectories = [[p.to(ctx.device) for p in tr] for tr in experts.trajectories]
        labels = torch.arange(data.num_classes).repeat_interleave(self.ipc).to(ctx.device)
        synthetic = self.synthetic_set(ctx, parts, data, experts)
        log.info("run %s: %d images per class of %s from %d experts, N=%d, M=%d, T+=%d",
                 ctx.run_dir, self.ipc, ctx.cfg.dataset.name, len(trajectories),
                 self.syn_steps, self.expert_epochs, self.max_start_epoch)
        self.distill(ctx, synthetic, model, trajectories, labels)
        return self.evaluate(ctx, parts, data, synthetic, labels.cpu(), len(trajectories))

    def experts_and_data(self, ctx: RunContext, parts):
        """The experts (trained first with ``make_experts``; their network and data must be
        this run's) and the run's data as they saw it (ZCA-whitened where they were)."""
        num_classes, channels = parts.data.num_classes, parts.data.in_channels

        def layout_of(config):
            self.check_experts_match(config, ctx.config)
            return ParamLayout.of(BACKBONES.build(config["backbone"], num_classes=num_classes,
                                                  in_channels=channels))

        if self.make_experts is not None:
            self.train_experts(ctx.cfg)
        experts = load_experts(self.experts, layout_of,
                               self.max_start_epoch + self.expert_epochs - 1, self.max_experts)
        data = prepared_data(parts.data, experts.zca)
        check_ipc(self.ipc, data.train.y, num_classes)
        return experts, data

    def synthetic_set(self, ctx: RunContext, parts, data, experts) -> SyntheticSet:
        """The set to distill: resumed from its checkpoint (only with trainer.resume, and only
        for the same experiment), or initialised (``init``) with α = ``lr_teacher``."""
        state_path = ctx.run_dir / STATE_NAME
        refuse_overwrite(state_path, resume=ctx.cfg.trainer.resume)
        ctx.write_results(task=parts.task.name)
        optimisers = dict(lr_img=self.lr_img, lr_lr=self.lr_lr, momentum=self.momentum,
                          device=ctx.device)
        if state_path.exists():
            saved = load_checkpoint(state_path)
            check_same_experiment(saved["config"], ctx.config, state_path)
            log.info("resuming the distillation at iteration %d/%d", saved["iteration"],
                     self.iterations)
            return SyntheticSet.restore(saved, **optimisers)
        start = self.initial_images(data.train.x, data.train.y, data.num_classes, experts,
                                    ctx.cfg.seed, ctx.device)
        return SyntheticSet.create(start, self.lr_teacher, **optimisers)

    def distill(self, ctx: RunContext, synthetic: SyntheticSet, model, trajectories,
                labels) -> None:
        """The iterations left: each from (seed, iteration) picks an expert and a start epoch
        and steps the set on the matching loss; a checkpoint every ``checkpoint_every``."""
        layout = ParamLayout.of(model)
        for it in range(synthetic.done, self.iterations):
            began = time.perf_counter()
            generator = torch.Generator().manual_seed(derive_seed(ctx.cfg.seed, it))
            expert = int(torch.randint(len(trajectories), (), generator=generator))
            start_epoch = int(torch.randint(self.max_start_epoch, (), generator=generator))
            loss = match_trajectory(model, layout, trajectories[expert], start_epoch,
                                    synthetic.images, labels, synthetic.lr,
                                    syn_steps=self.syn_steps, expert_epochs=self.expert_epochs,
                                    max_start_epoch=self.max_start_epoch,
                                    options=self.student, generator=generator,
                                    batch_size=self.batch_syn, augment=self.dsa)
            value = synthetic.update(loss)
            synthetic.distill_s += time.perf_counter() - began
            if not math.isfinite(value):
                raise NonFiniteLossError(f"the matching loss became {value} at iteration "
                                         f"{it + 1}: lower protocol.lr_img or protocol.lr_lr")
            synthetic.losses.append(value)
            synthetic.done = it + 1
            if (it + 1) % self.log_every == 0 or it + 1 == self.iterations:
                window = synthetic.losses
                synthetic.history.append({"iteration": it + 1, "loss": sum(window) / len(window),
                                          "lr": synthetic.alpha})
                log.info("iteration %d/%d: matching loss %.4f, α %.5f", it + 1,
                         self.iterations, synthetic.history[-1]["loss"], synthetic.alpha)
                window.clear()  # (the list the checkpoint holds: a window in progress)
            if (it + 1) % self.checkpoint_every == 0 or it + 1 == self.iterations:
                ctx.save_checkpoint(ctx.run_dir / STATE_NAME, synthetic.state_dict(ctx.config))

    def evaluate(self, ctx: RunContext, parts, data, synthetic: SyntheticSet, labels,
                 experts: int) -> dict:
        """The final set saved (and drawn), then ``num_eval`` fresh networks trained on it
        and on each real-subset baseline; results.json with the distill section."""
        cfg, alpha = ctx.cfg, synthetic.alpha
        images = synthetic.images.detach().cpu()
        if ctx.main:
            save_checkpoint(ctx.run_dir / SYNTHETIC_NAME, {
                "images": images, "labels": labels, "lr": alpha, "config": ctx.config})
            save_grid(images, self.ipc, ctx.run_dir / "synthetic.png")

        began = time.perf_counter()
        real_x, real_y = data.train.x, data.train.y
        sets = {"distilled": (images, alpha)}
        for name in self.baselines:
            sets[name] = (real_x[self.real_subset(name, real_x, real_y, data.num_classes,
                                                  cfg.seed)], self.lr_teacher)
        evaluations = {}
        for name, (x, rate) in sets.items() if self.num_eval else ():
            evaluations[name] = evaluate_set(ctx, parts, data, x, labels, rate, name=name,
                                             num_eval=self.num_eval, backbone=cfg.backbone,
                                             dsa=self.dsa)
        history = synthetic.history
        section = {"ipc": self.ipc, "init": self.init, "iterations": self.iterations,
                   "experts": experts, "syn_lr": alpha,
                   "final_loss": history[-1]["loss"] if history else None}
        for name, summary in evaluations.items():
            prefix = "syn" if name == "distilled" else name
            for key in ("top1", "top1_std", "ece", "ece_std", "best_top1", "best_top1_std"):
                section[f"{prefix}_{key}"] = summary[key]
        section["evaluations"] = {name: {k: v for k, v in s.items() if k != "test"}
                                  for name, s in evaluations.items()}
        test = evaluations["distilled"]["test"] if evaluations else {}
        distill_s = synthetic.distill_s
        return ctx.write_results(
            test=test, distill=section, history=history, status="completed",
            timings=timings(distill_s, time.perf_counter() - began, iterations_per_s=(
                self.iterations / distill_s if distill_s else None)))

    def train_experts(self, cfg) -> None:
        """``protocol.make_experts``: train the experts into ``protocol.experts`` first (a
        run of protocol=experts on this run's dataset and backbone with these settings;
        experts already there are kept, a finished run is not repeated), so that one command
        goes from data to a distilled set."""
        if not self.experts:
            raise ConfigError("protocol.make_experts needs protocol.experts: the folder to "
                              "train the experts into")
        make = self.make_experts
        config = OmegaConf.to_container(cfg, resolve=True)
        config["protocol"] = {"name": "experts", **(make.get("protocol") or {})}
        config["trainer"].update({**(make.get("trainer") or {}), "keep_every": 1,
                                  "resume": True})
        config["optimizer"].update(make.get("optimizer") or {})
        config["scheduler"] = make.get("scheduler") or {"name": "constant"}
        config["method"] = {"name": "erm"}
        # the experts are shared by every seed and study label of the distillation
        config["seed"], config["tag"] = make.get("seed", 0), None
        experts_cfg = OmegaConf.create(config)
        validate_config(experts_cfg)
        log.info("the experts in %s first (protocol.make_experts)", self.experts)
        run_protocol(PROTOCOLS.build(experts_cfg.protocol), experts_cfg, self.experts)

    @staticmethod
    def check_experts_match(expert_config: dict, config: dict) -> None:
        """The student must be the experts' network on the experts' data."""
        for key in ("dataset", "backbone"):
            theirs, ours = expert_config.get(key) or {}, config.get(key) or {}
            fields = ("name",) if key == "dataset" else tuple(set(theirs) | set(ours))
            differ = [f for f in fields if theirs.get(f) != ours.get(f)]
            if differ:
                raise ConfigError(
                    f"the experts were trained with {key} "
                    f"{ {f: theirs.get(f) for f in differ} }, this run has "
                    f"{ {f: ours.get(f) for f in differ} }: run protocol=distill with the "
                    f"experts' {key} (e.g. {key}={theirs.get('name')}), or point "
                    f"protocol.experts at experts of this {key}")

    def initial_images(self, real_x, real_y, num_classes, experts, seed, device):
        """``ipc`` images per class, class by class: real ones (random, K-means centres of the
        pixels, or AST's representative ones from the first expert's final weights) or
        Gaussian noise."""
        generator = torch.Generator().manual_seed(derive_seed(seed, -1))
        if self.init == "noise":
            return torch.randn((num_classes * self.ipc, *real_x.shape[1:]), generator=generator)
        if self.init == "representative":
            model = BACKBONES.build(experts.config["backbone"], num_classes=num_classes,
                                    in_channels=real_x.shape[1]).to(device).eval()
            weights = load_checkpoint(experts.folders[0] / CHECKPOINT_NAME)["model"]
            model.load_state_dict(weights)
            rows = representative(lambda x: model(x.to(device)).cpu(), real_x, real_y,
                                  self.ipc, num_classes, seed)
            return real_x[rows]
        return real_x[self.real_subset("random" if self.init == "real" else "kmeans", real_x,
                                       real_y, num_classes, seed)]

    def real_subset(self, name, real_x, real_y, num_classes, seed) -> torch.Tensor:
        if name == "random":
            generator = torch.Generator().manual_seed(derive_seed(seed, -2))
            return random_real(real_y, self.ipc, num_classes, generator)
        return kmeans_real(real_x, real_y, self.ipc, num_classes, seed)


# Networks trained on the synthetic set, final epoch (mean over protocol.num_eval nets); the
# best epoch on the test set is what MTT/AST's code reports (test-set selection, not ranked);
# real subsets of the same size as baselines.
register_section(Section(
    "distill",
    columns=(Column("syn_top1", "distilled top-1 %", 100, True, 2),
             Column("syn_best_top1", "best test epoch % (test-selected)", 100, None, 2),
             Column("random_top1", "random real %", 100, None, 2),
             Column("kmeans_top1", "K-means real %", 100, None, 2),
             Column("syn_lr", "learned α", 1, None, 4))))
