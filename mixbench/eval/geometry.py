"""Last-layer geometry (neural collapse) of a trained classifier, and where mixed samples land.

From penultimate features h (``model.features``) of the training set and the final linear layer
W (``model.head``), in float64:
- ``nc1``: tr(Σ_W Σ_B⁺)/K, within-class variability relative to between-class (0 at collapse);
- ``means_etf_distance`` / ``classifier_etf_distance``: ‖G/‖G‖_F − E/‖E‖_F‖_F with G the Gram
  matrix of the centred class means (or of W's rows) and E = I − 11ᵀ/K the simplex ETF's
  (0 when they form a simplex ETF, up to scale and rotation);
- ``classifier_means_distance``: ‖W/‖W‖_F − M/‖M‖_F‖_F, W against the centred means (NC3);
- ``means_norm_cv`` / ``classifier_norm_cv``: std/mean of the row norms (0 when equinorm);
- for inputs mixed x̃ = λx_a + (1−λ)x_b: cosine of the centred mixed feature with λw_a + (1−λ)w_b,
  for same-class and for different-class pairs, and for different classes the angle (degrees)
  between the centred feature and the a-vs-b decision boundary (0° = along the boundary)."""
from __future__ import annotations

from pathlib import Path

import torch

from mixbench.engine.load import load_run
from mixbench.errors import ConfigError
from mixbench.results.io import write_json_atomic
from mixbench.tasks import require_task

GEOMETRY_JSON, GEOMETRY_FIGURE = "geometry.json", "geometry.png"


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """(K×D class means, D global mean); classes without samples are an error."""
    counts = torch.bincount(labels, minlength=num_classes).to(features.dtype)
    if (counts == 0).any():
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"classes without samples: {empty}")
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype).index_add_(
        0, labels, features)
    return sums / counts[:, None], features.mean(dim=0)


def nc1(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    features = features.double()
    means, global_mean = class_means(features, labels, num_classes)
    within = features - means[labels]
    sigma_w = within.T @ within / len(features)
    between = means - global_mean
    sigma_b = between.T @ between / num_classes
    return (torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / num_classes).item()


def etf_distance(vectors: torch.Tensor) -> float:
    """Distance of K vectors (rows) from a simplex ETF, scale- and rotation-free."""
    vectors = vectors.double()
    k = vectors.shape[0]
    gram = vectors @ vectors.T
    etf = torch.eye(k, dtype=gram.dtype) - 1.0 / k
    return torch.linalg.norm(gram / torch.linalg.norm(gram) - etf / torch.linalg.norm(etf)).item()


def _unit_frobenius(m: torch.Tensor) -> torch.Tensor:
    return m / torch.linalg.norm(m)


def _norm_cv(rows: torch.Tensor) -> float:
    norms = rows.norm(dim=1)
    return (norms.std() / norms.mean()).item()


def collapse_metrics(features: torch.Tensor, labels: torch.Tensor,
                     weight: torch.Tensor) -> dict[str, float]:
    """The neural-collapse numbers for N×D features, N labels and the K×D classifier weight."""
    features, weight = features.double(), weight.double()
    k = weight.shape[0]
    means, global_mean = class_means(features, labels, k)
    centred = means - global_mean
    return {
        "nc1": nc1(features, labels, k),
        "means_etf_distance": etf_distance(centred),
        "classifier_etf_distance": etf_distance(weight),
        "classifier_means_distance": torch.linalg.norm(
            _unit_frobenius(weight) - _unit_frobenius(centred)).item(),
        "means_norm_cv": _norm_cv(centred),
        "classifier_norm_cv": _norm_cv(weight),
    }


def mixed_alignment(mixed_features: torch.Tensor, class_a: torch.Tensor, class_b: torch.Tensor,
                    lam: float, weight: torch.Tensor, global_mean: torch.Tensor) -> dict:
    """Per mixed sample: cosine with λw_a + (1−λ)w_b, and (different classes) the angle to the
    a-vs-b boundary. Returns the means and the per-sample values (for the figure)."""
    h = mixed_features.double() - global_mean.double()
    weight = weight.double()
    target = lam * weight[class_a] + (1 - lam) * weight[class_b]
    cos = torch.nn.functional.cosine_similarity(h, target, dim=1)
    same = class_a == class_b
    normal = weight[class_a[~same]] - weight[class_b[~same]]
    to_normal = torch.nn.functional.cosine_similarity(h[~same], normal, dim=1)
    angle = torch.rad2deg(torch.asin(to_normal.abs().clamp(max=1.0)))

    def mean(values):
        return values.mean().item() if len(values) else float("nan")

    return {"mixed_lam": lam, "mixed_same_class_cos": mean(cos[same]),
            "mixed_diff_class_cos": mean(cos[~same]),
            "mixed_diff_boundary_angle_deg": mean(angle),
            "mixed_same_class_pairs": int(same.sum()), "mixed_diff_class_pairs": int((~same).sum()),
            "_cos_same": cos[same].tolist(), "_cos_diff": cos[~same].tolist()}


@torch.no_grad()
def extract(model, loader, device, lam: float, generator: torch.Generator):
    """Features and labels of every sample, and features of each batch mixed with a random
    permutation of itself at ``lam`` (with the pairs' classes)."""
    model.eval()
    feats, labels, mixed, class_a, class_b = [], [], [], [], []
    for x, y, *_ in loader:
        x, y = x.to(device), y.to(device)
        perm = torch.randperm(len(x), generator=generator).to(device)
        feats.append(model.forward_features(x).double().cpu())
        mixed.append(model.forward_features(torch.lerp(x[perm], x, lam)).double().cpu())
        labels.append(y.cpu())
        class_a.append(y.cpu())
        class_b.append(y[perm].cpu())
    return (torch.cat(feats), torch.cat(labels), torch.cat(mixed), torch.cat(class_a),
            torch.cat(class_b))


def geometry_report(model, loader, device, *, lam: float = 0.5, seed: int = 0) -> dict:
    if not hasattr(model, "forward_features") or not hasattr(model, "head"):
        raise ValueError(f"{type(model).__name__} has no forward_features()/head: geometry "
                         f"needs a mixbench backbone")
    feats, labels, mixed, class_a, class_b = extract(
        model, loader, device, lam, torch.Generator().manual_seed(seed))
    weight = model.head.weight.detach().double().cpu()
    report = collapse_metrics(feats, labels, weight)
    means, global_mean = class_means(feats, labels, weight.shape[0])
    report.update(mixed_alignment(mixed, class_a, class_b, lam, weight, global_mean))
    centred = means - global_mean
    report["_means_cos"] = _cosines(centred).tolist()
    report["_classifier_cos"] = _cosines(weight).tolist()
    report["samples"] = len(labels)
    return report


def _cosines(rows: torch.Tensor) -> torch.Tensor:
    unit = rows / rows.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return unit @ unit.T


def plot_geometry(report: dict, path: str | Path) -> Path:
    """Cosines between class means, between classifier rows, and histograms of the mixed
    features' alignment with the classifier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    k = len(report["_means_cos"])
    etf_cos = -1.0 / (k - 1)
    for ax, key, title in ((axes[0], "_means_cos", "class means"),
                           (axes[1], "_classifier_cos", "classifier rows")):
        image = ax.imshow(report[key], vmin=-1, vmax=1, cmap="coolwarm")
        ax.set_title(f"cosines: {title}\n(simplex ETF: {etf_cos:.2f} off the diagonal)")
        fig.colorbar(image, ax=ax, fraction=0.046)
    bins = [i / 20 - 1 for i in range(41)]
    for key, label in (("_cos_same", "same-class pairs"), ("_cos_diff", "different-class pairs")):
        if report[key]:  # densities: there are ~K times more different-class pairs
            axes[2].hist(report[key], bins=bins, alpha=0.6, density=True, label=label)
    axes[2].set(xlabel="cos(mixed feature, λw_a + (1−λ)w_b)", ylabel="density",
                title=f"mixed inputs (λ={report['mixed_lam']}), NC1={report['nc1']:.3g}")
    axes[2].legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def analyze_run(run_dir: str | Path, device: str = "auto", *, lam: float = 0.5,
                batch_size: int = 512) -> dict:
    """Geometry of a saved run (its last.pt) on its training split: writes geometry.json and
    geometry.png in the run folder and returns the metrics."""
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"--lam must be in [0, 1], got {lam}")
    run = load_run(run_dir, device)
    require_task(run.parts.task, "classification", "geometry")
    cfg, parts, run_dir = run.cfg, run.parts, run.run_dir
    loader = run.loader("train", batch_size)
    report = geometry_report(parts.model, loader, parts.device, lam=lam, seed=cfg.seed)
    plot_geometry(report, run_dir / GEOMETRY_FIGURE)
    # "_" entries are per-sample values for the figure; NaN (no pairs of a kind) → null
    metrics = {k: v for k, v in report.items() if not k.startswith("_")}
    metrics["method"] = cfg.method.name
    write_json_atomic(run_dir / GEOMETRY_JSON, metrics)
    return metrics


