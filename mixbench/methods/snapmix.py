"""SnapMix (Huang et al., AAAI 2021): cutmix with label weights from class activation maps.

A box of the partner (area ratio 1-λ₂) is resized into a box of the image (area 1-λ₁),
λ₁, λ₂ ~ Beta(α, α), one pair of boxes per batch as in the authors' code. The label weights
are the share of each image's class activation map (CAM) that ends up in the result:

    w_a = 1 − CAM_a(target box) / CAM_a(all),   w_b = CAM_b(source box) / CAM_b(all),

where CAM_i is the map of sample i's own class, from the model being trained (the head's
weights over the last feature map, upsampled to the image, shifted to min 0), computed under
no_grad on the clean batch. ``w_a + w_b`` is not 1 in general: the target is
``w_a·y_a + w_b·y_b`` as in the paper's loss ``w_a·CE(y_a) + w_b·CE(y_b)``. (For a pair of the
same class the official code adds both weights to both terms, doubling them; the soft target
here gives that class ``w_a + w_b``, counted once.) A map with no mass falls back to the
area weights."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mixbench.methods.base import MixResult, StepOutput, check_batch
from mixbench.methods.model_access import (plain_backbone, require_image_classification,
                                           spatial_feature_map)
from mixbench.methods.sample_mixing import SampleMixer, box_bounds
from mixbench.registry import METHODS


def class_activation_maps(backbone: nn.Module, x: torch.Tensor,
                          labels: torch.Tensor) -> torch.Tensor:
    """B×H×W: each sample's CAM for its own class at the input's resolution, shifted to
    min 0 and normalised to sum 1 (all zeros where the map is flat)."""
    fmap = spatial_feature_map(backbone, x, "snapmix").float()
    weight = backbone.head.weight[labels].float()  # B×D
    cam = torch.einsum("bd,bdhw->bhw", weight, fmap)
    cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear",
                        align_corners=False)[:, 0]
    cam = cam - cam.amin(dim=(1, 2), keepdim=True)
    total = cam.sum(dim=(1, 2), keepdim=True)
    return torch.where(total > 0, cam / total.clamp_min(1e-12), torch.zeros_like(cam))


def snapmix_batch(x: torch.Tensor, y: torch.Tensor, cams: torch.Tensor, lam_target: float,
                  lam_source: float) -> MixResult:
    """Paste the partner's source box (area 1-``lam_source``), resized, into the target box
    (area 1-``lam_target``) of every image; targets weighted by CAM mass (see the module).
    ``lam`` reported is the area share of the image's own pixels."""
    b, _, h, w = x.shape
    top, bottom, left, right = (int(v) for v in box_bounds(torch.tensor(lam_target), h, w))
    s_top, s_bottom, s_left, s_right = (int(v) for v in
                                        box_bounds(torch.tensor(lam_source), h, w))
    if (bottom - top) * (right - left) == 0 or (s_bottom - s_top) * (s_right - s_left) == 0:
        return MixResult(x, y, 1.0)  # an empty box: nothing to paste (as the authors' code)
    perm = torch.randperm(b, device=x.device)
    patch = F.interpolate(x[perm, :, s_top:s_bottom, s_left:s_right].float(),
                          size=(bottom - top, right - left), mode="bilinear", align_corners=True)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = patch.to(x.dtype)
    lam = 1.0 - (bottom - top) * (right - left) / (h * w)

    has_mass = cams.sum(dim=(1, 2)) > 0
    own = 1.0 - cams[:, top:bottom, left:right].sum(dim=(1, 2))
    pasted = cams[:, s_top:s_bottom, s_left:s_right].sum(dim=(1, 2))[perm]
    own = torch.where(has_mass, own, torch.full_like(own, lam))
    pasted = torch.where(has_mass[perm], pasted, torch.full_like(pasted, 1.0 - lam))
    targets = own.to(y.dtype)[:, None] * y + pasted.to(y.dtype)[:, None] * y[perm]
    return MixResult(mixed, targets, lam)


@METHODS.register("snapmix")
class SnapMix(SampleMixer):
    """CAM-weighted cutmix labels; see the module docstring. One box pair per batch."""

    tasks = ("classification",)

    def __init__(self, *, num_classes: int, alpha: float = 5.0, prob: float = 1.0):
        super().__init__(num_classes=num_classes, alpha=alpha, prob=prob)

    def step(self, model: nn.Module, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        require_image_classification(x, labels, "snapmix")
        y = self.targets(labels, x.dtype)
        check_batch(x, y, self.num_classes)
        backbone = plain_backbone(model, "snapmix", "feature_map")
        if self.prob < 1.0 and torch.rand(()).item() >= self.prob:
            logits = model(x)
            return StepOutput(loss_fn(logits, y), logits, {"lam": 1.0})
        lam_target, lam_source = self._beta.one(), self._beta.one()
        # A gradient-free read of the plain backbone: DDP must not track this pass.
        with torch.no_grad():
            cams = class_activation_maps(backbone, x, labels)
        mixed = snapmix_batch(x, y, cams, lam_target, lam_source)
        logits = model(mixed.x)
        return StepOutput(loss_fn(logits, mixed.y), logits, {"lam": mixed.lam})
