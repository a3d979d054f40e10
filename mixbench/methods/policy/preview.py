"""Figures of a trained run's learned policy: its sources, masks and mixed samples.

``preview_run`` opens a run with ``load_run`` (config → components → classifier weights),
restores the method's own state (generator, EMA copy) and applies the learned policy to the
first test images; ``save_preview_grid`` draws it."""
from __future__ import annotations

from pathlib import Path

import torch

from mixbench.engine.load import load_run
from mixbench.errors import ConfigError
from mixbench.methods.policy.learned import LearnedPolicy, PolicyPreview
from mixbench.registry import METHODS


def learned_policy_names() -> list[str]:
    return sorted(n for n in METHODS.names()
                  if isinstance(METHODS.get(n), type) and issubclass(METHODS.get(n), LearnedPolicy))


def preview_run(run_dir: str | Path, n: int = 8, device: str = "cpu",
                seed: int = 0) -> tuple[PolicyPreview, str]:
    """The learned policy of the run in ``run_dir`` applied to its first ``n`` test images
    (λ and pairings drawn with ``seed``); also returns the method's name."""
    run = load_run(run_dir, device)
    name = run.cfg.method.name
    if name not in learned_policy_names():
        raise ConfigError(f"{run_dir} was trained with method={name}, which has no learned "
                          f"mixing policy to show; the methods with one are "
                          f"{', '.join(learned_policy_names())}")
    run.parts.model.eval()
    run.parts.method.load_state_dict(run.state["method"])
    x = next(iter(run.loader("test", n)))[0][:n]
    torch.manual_seed(seed)
    return run.parts.method.preview(run.parts.model, x), name


def _for_display(images: torch.Tensor):
    """B×C×H×W → B×H×W×C in [0, 1], each image stretched to its own range."""
    lo = images.amin(dim=(1, 2, 3), keepdim=True)
    hi = images.amax(dim=(1, 2, 3), keepdim=True)
    out = ((images - lo) / (hi - lo).clamp_min(1e-8)).permute(0, 2, 3, 1).cpu().float()
    return out.squeeze(-1).numpy() if out.shape[-1] == 1 else out.numpy()


def save_preview_grid(preview: PolicyPreview, path: str | Path, title: str = "") -> Path:
    """One row per mixed sample: its N sources, their N masks, the mixed image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_src, rows = preview.sources.shape[0], preview.x.shape[0]
    columns = [(f"source {i + 1} (λ={lam:.2f})", _for_display(preview.x[preview.sources[i]]),
                "gray") for i, lam in enumerate(preview.lams)]
    columns += [(f"mask {i + 1}", preview.masks[:, i].cpu().float().numpy(), "viridis")
                for i in range(n_src)]
    columns.append(("mixed", _for_display(preview.mixed), "gray"))
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.6 * len(columns), 1.6 * rows),
                             squeeze=False)
    for c, (label, images, cmap) in enumerate(columns):
        for r in range(rows):
            ax = axes[r, c]
            if label.startswith("mask"):
                ax.imshow(images[r], cmap=cmap, vmin=0, vmax=1)
            else:
                ax.imshow(images[r], cmap=cmap if images[r].ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, c].set_title(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
