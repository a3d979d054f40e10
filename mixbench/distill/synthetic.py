"""The set being distilled: its images, the learnable student step size α, the optimiser of
each (SGD with the protocol's momentum), and the record of the loop so far. It is what the
distillation's checkpoint holds, so a killed run resumes to the same images."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class SyntheticSet:
    images: torch.Tensor  # requires grad: the distilled images
    lr: torch.Tensor  # requires grad: α, the student's learning rate
    opt_img: torch.optim.Optimizer
    opt_lr: torch.optim.Optimizer
    history: list[dict] = field(default_factory=list)  # a record per logging window
    losses: list[float] = field(default_factory=list)  # the window in progress
    done: int = 0  # iterations completed
    distill_s: float = 0.0  # seconds spent in iterations

    @classmethod
    def create(cls, start: torch.Tensor, lr: float, *, lr_img: float, lr_lr: float,
               momentum: float, device: torch.device) -> "SyntheticSet":
        images = start.to(device).clone().requires_grad_(True)
        rate = torch.tensor(lr, device=device).requires_grad_(True)
        return cls(images, rate, torch.optim.SGD([images], lr=lr_img, momentum=momentum),
                   torch.optim.SGD([rate], lr=lr_lr, momentum=momentum))

    @classmethod
    def restore(cls, saved: dict, *, lr_img: float, lr_lr: float, momentum: float,
                device: torch.device) -> "SyntheticSet":
        """The set as ``state_dict`` saved it."""
        out = cls.create(saved["images"], saved["lr"], lr_img=lr_img, lr_lr=lr_lr,
                         momentum=momentum, device=device)
        out.opt_img.load_state_dict(saved["opt_img"])
        out.opt_lr.load_state_dict(saved["opt_lr"])
        out.history, out.losses = saved["history"], saved["losses"]
        out.done, out.distill_s = saved["iteration"], saved["distill_s"]
        return out

    def update(self, loss: torch.Tensor) -> float:
        """One step of the images and α on the matching loss; the loss's value."""
        self.opt_img.zero_grad(set_to_none=True)
        self.opt_lr.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_img.step()
        self.opt_lr.step()
        return loss.item()

    @property
    def alpha(self) -> float:
        return float(self.lr.detach())

    def state_dict(self, config: dict) -> dict[str, Any]:
        return {"iteration": self.done, "images": self.images.detach().cpu(),
                "lr": self.alpha, "opt_img": self.opt_img.state_dict(),
                "opt_lr": self.opt_lr.state_dict(), "history": self.history,
                "losses": self.losses, "distill_s": self.distill_s, "config": config}
