"""Expert trajectories on disk and the data they were trained on.

An expert is a training run that kept its weights every epoch (``protocol=experts``, or any
run with ``trainer.keep_every=1``): ``checkpoints/epoch_NNNN.pt`` beside its ``last.pt``.
The distillation reads θ*_0 … θ*_{T⁺+M} of each expert as flat vectors.
``prepared_data`` is the one place the images become what experts, students and evaluation
networks see: floats, normalised, and ZCA-whitened when the experts were."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from mixbench.config import experiment_changes
from mixbench.data import Augment, DataBundle, Split
from mixbench.distill.matching import ParamLayout
from mixbench.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from mixbench.engine.fit import KEPT_DIR
from mixbench.errors import ConfigError

log = logging.getLogger(__name__)


def kept_path(expert: Path, epoch: int) -> Path:
    return expert / KEPT_DIR / f"epoch_{epoch:04d}.pt"


@dataclass
class Experts:
    folders: list[Path]
    config: dict  # the first expert's run config (dataset, backbone, protocol options)
    trajectories: list[list[torch.Tensor]]  # per expert, θ*_0 … θ*_E as flat vectors

    @property
    def zca(self) -> bool:
        return bool((self.config.get("protocol") or {}).get("zca", False))


def find_experts(root: str | Path | None) -> list[Path]:
    """Every run folder under ``root`` (itself included) that kept its starting weights."""
    hint = ("train them with `python tools/train.py protocol=experts dataset=... "
            "backbone=...` and set protocol.experts to that run folder")
    if not root:
        raise ConfigError(f"protocol.experts is not set: it names the folder of the expert "
                          f"trajectories to match; {hint}")
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"no experts found at protocol.experts={root}: the folder does not "
                          f"exist; {hint}")
    runs = sorted({p.parent for p in root.rglob(CHECKPOINT_NAME)})
    experts = [r for r in runs if kept_path(r, 0).is_file()]
    if not experts and runs:
        raise ConfigError(f"the runs under protocol.experts={root} ({runs[0]}, ...) kept no "
                          f"epochs (trainer.keep_every=0), so they have no trajectory: train "
                          f"experts with protocol=experts (or trainer.keep_every=1)")
    if not experts:
        raise ConfigError(f"no experts found at protocol.experts={root}: {hint}")
    return experts


def load_experts(root, layout_of, epochs_needed: int, max_experts: int | None = None,
                 ) -> Experts:
    """θ*_0 … θ*_``epochs_needed`` of every expert under ``root`` (the first ``max_experts``),
    flattened with the layout ``layout_of(config)`` gives for the experts' backbone. Experts
    whose trajectory is still shorter are skipped (a run still training); none long enough
    is an error naming protocol.max_start_epoch and protocol.expert_epochs."""
    folders = find_experts(root)
    config = load_checkpoint(folders[0] / CHECKPOINT_NAME)["config"]
    for folder in folders[1:]:
        check_same_kind(root, folders[0], config, folder,
                        load_checkpoint(folder / CHECKPOINT_NAME)["config"])
    keep_every = (config.get("trainer") or {}).get("keep_every")
    if keep_every != 1:
        raise ConfigError(f"the experts under {root} kept every {keep_every} epochs; a "
                          f"trajectory needs every epoch: train them with "
                          f"trainer.keep_every=1 (protocol=experts does)")
    layout: ParamLayout = layout_of(config)
    usable, trajectories, longest = [], [], 0
    for folder in folders:
        kept = sum(1 for _ in (folder / KEPT_DIR).glob("epoch_*.pt")) - 1
        longest = max(longest, kept)
        if not kept_path(folder, epochs_needed).is_file():
            continue
        trajectories.append([layout.flat(load_checkpoint(kept_path(folder, e))["model"])
                             for e in range(epochs_needed + 1)])
        usable.append(folder)
        if max_experts and len(usable) == max_experts:
            break
    if not usable:
        raise ConfigError(f"the start epoch is beyond the experts' trajectories: "
                          f"protocol.max_start_epoch + protocol.expert_epochs = "
                          f"{epochs_needed}, but the experts under {root} kept at most "
                          f"{longest} epochs. Lower them, or train longer experts")
    log.info("loaded %d expert trajectories (epochs 0-%d) from %s", len(usable),
             epochs_needed, root)
    return Experts(usable, config, trajectories)


# What may differ between experts matched together: their seed and how many a run trained.
FREE_KEYS = {"seed", "protocol.num_experts", "tag"}


def check_same_kind(root, first: Path, config: dict, other: Path, other_config: dict) -> None:
    """Experts under one folder must be one kind (data, network, recipe, smoothness, ZCA):
    a search that mixed plain with smooth experts would match neither."""
    differ = [k for k in experiment_changes(config, other_config) if k not in FREE_KEYS]
    if differ:
        raise ConfigError(f"the experts under protocol.experts={root} are of different kinds: "
                          f"{first} and {other} differ in {', '.join(differ[:6])}. Point "
                          f"protocol.experts at the folder of one kind (e.g. "
                          f".../smooth_True)")


def as_float(bundle: DataBundle, split: Split) -> torch.Tensor:
    x = split.x.float() / 255.0 if split.x.dtype == torch.uint8 else split.x.float()
    shape = (1, -1, 1, 1)
    mean = torch.tensor(bundle.mean).view(shape)
    std = torch.tensor(bundle.std).view(shape)
    return (x - mean) / std


def prepared_data(bundle: DataBundle, zca: bool = False, keep_augment: bool = False
                  ) -> DataBundle:
    """``bundle`` with every split as normalised floats (mean 0 / std 1 left for the
    loaders), whitened with kornia's ZCA (eps 0.1, fitted on the training split, as MTT) when
    ``zca``; its flip/crop augmentation is dropped unless ``keep_augment`` (DSA replaces it)."""
    for name, split in bundle.splits().items():
        if not isinstance(split, Split) or split.x.dim() != 4:
            raise ConfigError(f"distillation needs an in-memory image dataset; "
                              f"dataset={bundle.name} has a {type(split).__name__} {name} "
                              f"split")
    splits = {name: Split(as_float(bundle, s), s.y) for name, s in bundle.splits().items()}
    if zca:
        from kornia.enhance import ZCAWhitening

        whitening = ZCAWhitening(eps=0.1, compute_inv=True).fit(splits["train"].x)
        splits = {name: Split(whitening(s.x, include_fit=False), s.y)
                  for name, s in splits.items()}
    channels = bundle.in_channels
    return dataclasses.replace(bundle, **splits, mean=(0.0,) * channels, std=(1.0,) * channels,
                               augment=bundle.augment if keep_augment else Augment())
