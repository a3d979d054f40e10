"""TransMix (Chen et al., CVPR 2022): for Vision Transformers, the cutmix label weight comes
from the class token's attention rather than from the pasted area alone.

Per batch, cutmix (α_cutmix) with probability ``switch_prob``, else mixup (α_mixup), as
DeiT's recipe. For a cutmix batch the class token's attention over the patches in the last
block (softmax over all tokens, mean over heads), read from the same training forward, gives
the partner's weight

    w = attention_share · A(box) / A(all patches) + (1 - attention_share) · area(box),

(the authors use 0.5/0.5), with the box mask taken to the patch grid by nearest
downsampling, as their code does. The image's own class gets 1 - w. Mixup batches keep the
area-free λ. Needs a timm ViT/DeiT with a class token (``backbone=timm
backbone.model_name=vit_*|deit_*``)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mixbench.errors import ConfigError
from mixbench.methods.base import Method, StepOutput, check_batch
from mixbench.methods.model_access import plain_backbone, require_image_classification
from mixbench.methods.sample_mixing import box_bounds, mix_targets
from mixbench.registry import METHODS


def vision_transformer(model: nn.Module) -> nn.Module:
    """The timm VisionTransformer inside the (possibly wrapped) backbone, or a ConfigError."""
    inner = getattr(plain_backbone(model, "transmix"), "model", None)
    blocks = getattr(inner, "blocks", None)
    if (blocks is None or not hasattr(blocks[-1], "attn") or not hasattr(blocks[-1].attn, "qkv")
            or not hasattr(inner, "patch_embed") or getattr(inner, "global_pool", "") != "token"):
        raise ConfigError("method=transmix weighs labels by a Vision Transformer's class-token "
                          "attention: use backbone=timm with a ViT/DeiT that has a class token, "
                          "e.g. backbone.model_name=vit_tiny_patch16_224 "
                          "+backbone.model_kwargs.img_size=32 +backbone.model_kwargs.patch_size=4")
    return inner


def class_token_attention(attn: nn.Module, tokens: torch.Tensor,
                          num_prefix_tokens: int) -> torch.Tensor:
    """B×patches: attention of the class token over the patch tokens (mean over heads),
    recomputed from the tokens entering the block's attention (timm's fused kernel does not
    return the weights)."""
    b, n, _ = tokens.shape
    qkv = attn.qkv(tokens).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    weights = ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    return weights.mean(dim=1)[:, 0, num_prefix_tokens:]


def attention_label_weight(attention: torch.Tensor, box_mask: torch.Tensor, area: float,
                           attention_share: float) -> torch.Tensor:
    """The partner's label weight per sample from the class-token ``attention`` (B×P) and
    the pasted box's patch mask (P, 1 = pasted)."""
    attention = attention.float()
    in_box = (attention * box_mask).sum(dim=1) / attention.sum(dim=1).clamp_min(1e-12)
    return attention_share * in_box + (1.0 - attention_share) * area


@METHODS.register("transmix")
class TransMix(Method):
    tasks = ("classification",)

    def __init__(self, *, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.5, prob: float = 1.0, attention_share: float = 0.5):
        super().__init__(num_classes=num_classes)
        for key, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if not value > 0:
                raise ConfigError(f"method.{key} must be > 0 (Beta(α, α)), got {value}")
        for key, value in (("switch_prob", switch_prob), ("prob", prob),
                           ("attention_share", attention_share)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"method.{key} must be in [0, 1], got {value}")
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.switch_prob, self.prob = float(switch_prob), float(prob)
        self.attention_share = float(attention_share)

    @staticmethod
    def _beta(alpha: float) -> float:
        a = torch.tensor(alpha)
        return torch.distributions.Beta(a, a).sample().item()

    def step(self, model: nn.Module, batch, loss_fn) -> StepOutput:
        x, labels = batch[0], batch[1]
        require_image_classification(x, labels, "transmix")
        vit = vision_transformer(model)
        y = self.targets(labels, x.dtype)
        check_batch(x, y, self.num_classes)
        if self.prob < 1.0 and torch.rand(()).item() >= self.prob:
            logits = model(x)
            return StepOutput(loss_fn(logits, y), logits, {"lam": 1.0})
        perm = torch.randperm(len(x), device=x.device)
        if torch.rand(()).item() >= self.switch_prob:  # a mixup batch: labels by λ
            lam = self._beta(self.mixup_alpha)
            logits = model(torch.lerp(x[perm], x, lam))
            return StepOutput(loss_fn(logits, mix_targets(y, perm, lam)), logits,
                              {"lam": lam, "cutmix": False})
        h, w = x.shape[-2:]
        top, bottom, left, right = (int(v) for v in
                                    box_bounds(torch.tensor(self._beta(self.cutmix_alpha)), h, w))
        pixel_mask = torch.zeros(1, 1, h, w, device=x.device)
        pixel_mask[..., top:bottom, left:right] = 1.0
        mixed = torch.where(pixel_mask.bool(), x[perm], x)
        area = (bottom - top) * (right - left) / (h * w)

        captured = []
        hook = vit.blocks[-1].attn.register_forward_hook(
            lambda module, args, output: captured.append(args[0].detach()))
        try:
            logits = model(mixed)
        finally:
            hook.remove()
        if not captured:
            raise ConfigError("method=transmix reads the attention through a forward hook, "
                              "which this model wrapper bypassed; set trainer.compile=false")
        with torch.no_grad():
            attention = class_token_attention(vit.blocks[-1].attn, captured[-1],
                                              vit.num_prefix_tokens)
            grid = vit.patch_embed.grid_size
            box_mask = F.interpolate(pixel_mask, size=tuple(grid), mode="nearest").flatten()
            partner_weight = attention_label_weight(attention, box_mask, area,
                                                    self.attention_share)
        lam = 1.0 - partner_weight
        return StepOutput(loss_fn(logits, mix_targets(y, perm, lam)), logits,
                          {"lam": lam, "area_lam": 1.0 - area, "cutmix": True})

    def __repr__(self) -> str:
        return (f"TransMix(num_classes={self.num_classes}, mixup_alpha={self.mixup_alpha}, "
                f"cutmix_alpha={self.cutmix_alpha}, switch_prob={self.switch_prob}, "
                f"prob={self.prob}, attention_share={self.attention_share})")
