"""Reliability diagrams: per-bin accuracy against confidence, the gap shaded, counts below."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def draw_reliability(ax_acc, ax_count, rel: dict, title: str) -> None:
    """Accuracy bars with the gap to confidence hatched on ``ax_acc``, counts on ``ax_count``."""
    edges = rel["bins"]
    width = edges[1] - edges[0]
    centers = [lo + width / 2 for lo in edges[:-1]]
    filled = [i for i, c in enumerate(rel["count"]) if c > 0]
    acc = [rel["acc"][i] for i in filled]
    conf = [rel["conf"][i] for i in filled]
    x = [centers[i] for i in filled]
    ax_acc.bar(x, acc, width=width, edgecolor="black", color="tab:blue", label="accuracy")
    # The gap spans accuracy..confidence: above the bar when over-confident, inside it when under.
    ax_acc.bar(x, [abs(c - a) for a, c in zip(acc, conf)],
               bottom=[min(a, c) for a, c in zip(acc, conf)], width=width, fill=False,
               edgecolor="tab:red", hatch="//", label="gap to confidence")
    ax_acc.plot([0, 1], [0, 1], "k--", linewidth=1)
    ax_acc.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
    ax_acc.legend(loc="upper left")
    ax_count.bar(centers, rel["count"], width=width, color="grey", edgecolor="black")
    ax_count.set(xlim=(0, 1), xlabel="confidence", ylabel="count")


def pool_reliability(diagrams: list[dict]) -> dict:
    """One diagram from several runs with the same bins (e.g. seeds): counts add up, accuracy
    and confidence are count-weighted means."""
    bins = diagrams[0]["bins"]
    if any(d["bins"] != bins for d in diagrams):
        raise ValueError("cannot pool reliability diagrams with different bins")
    n = len(bins) - 1
    count = [sum(d["count"][i] for d in diagrams) for i in range(n)]
    def weighted(key):
        return [sum(d[key][i] * d["count"][i] for d in diagrams) / count[i] if count[i] else 0.0
                for i in range(n)]
    return {"bins": bins, "acc": weighted("acc"), "conf": weighted("conf"), "count": count}


def plot_reliability(panels: list[tuple[dict, str]], path: str | Path) -> Path:
    """One column per (reliability bins, title), saved as a PNG."""
    fig, axes = plt.subplots(2, len(panels), figsize=(4.5 * len(panels), 5.5), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex="col")
    for col, (rel, title) in enumerate(panels):
        draw_reliability(axes[0, col], axes[1, col], rel, title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
