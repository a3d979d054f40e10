"""The real-data study of docs/distillation.md, run from its configs: plain and smooth
experts per dataset, then per dataset × IPC × seed: MTT on plain experts (with the random and
K-means real subsets), MTT on smooth experts, and each AST student option alone on smooth
experts. Tables and the parameter-change figure are made from the run folders."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path


from mixbench.protocols import distill, experts  # noqa: F401  (their leaderboard sections)
from mixbench.results.columns import Column
from mixbench.results.io import RESULTS_NAME
from mixbench.results.table import load_runs, summarize, to_markdown

log = logging.getLogger(__name__)

# Each AST student option alone (on smooth experts), by the tag its runs carry.
COMPONENTS = {
    "ast_init": ["protocol.init=representative"],
    "ast_balanced": ["protocol.balanced_loss=true"],
    "ast_momentum": ["protocol.student_momentum=0.9"],
    "ast_intermediate": ["protocol.intermediate=equal"],
    "ast_perturb": ["protocol.weight_perturb=true"],
}


@dataclass
class Setting:
    """One dataset's sizes: its network, its experts and its distillations."""

    dataset: list[str]
    backbone: list[str]
    experts: list[str]
    distill: list[str]
    ipc_overrides: dict[int, list[str]] = field(default_factory=dict)
    smooth_experts: list[str] = field(default_factory=list)  # smooth experts only


# Plain experts train at lr 0.03 here (MTT's 0.01, raised for short CPU runs). AST's experts
# train at 0.3× MTT's lr (its buffer.py: lr_teacher 0.003 with momentum 0.9, against MTT's 0.01
# without), so the smooth experts take 0.3 × 0.03.
PLAIN_LR = 0.03
SMOOTH_LR = round(0.3 * PLAIN_LR, 6)

SETTINGS = {
    "digits": Setting(
        ["dataset=digits"],
        ["backbone.width=32", "backbone.depth=2", "backbone.readout=2"],
        ["protocol.num_experts=5", "trainer.epochs=15", "trainer.batch_size=64",
         f"optimizer.lr={PLAIN_LR}", "protocol.smooth_scheduler.milestones=[8]"],
        ["protocol.syn_steps=10", "protocol.expert_epochs=2", "protocol.max_start_epoch=5",
         "protocol.iterations=50", "protocol.lr_img=100", "protocol.lr_teacher=0.03",
         "trainer.epochs=100", "trainer.eval_every=50"],
        {10: ["protocol.batch_syn=20"]},
        [f"protocol.smooth_optimizer.lr={SMOOTH_LR}"]),
    "fashion_mnist": Setting(
        ["dataset=fashion_mnist", "dataset.max_train=2000"],
        ["backbone.width=16", "backbone.depth=3", "backbone.readout=3"],
        ["protocol.num_experts=3", "trainer.epochs=8", "trainer.batch_size=64",
         f"optimizer.lr={PLAIN_LR}", "protocol.smooth_scheduler.milestones=[4]"],
        ["protocol.syn_steps=6", "protocol.expert_epochs=2", "protocol.max_start_epoch=4",
         "protocol.iterations=30", "protocol.lr_img=100", "protocol.lr_teacher=0.03",
         "trainer.epochs=60", "trainer.eval_every=30"],
        {10: ["protocol.batch_syn=10"]},
        [f"protocol.smooth_optimizer.lr={SMOOTH_LR}"]),
}
# two evaluation networks per set; the test accuracy twice per evaluation training (the
# test-selected "best epoch" is then the better of the two)
COMMON = ["trainer.progress=false", "protocol.num_eval=2"]


def plan(root: Path, datasets, ipcs, seeds) -> list[tuple[str, list[str], Path]]:
    """(what, overrides, run folder) of every run, experts first."""
    runs = []
    for name in datasets:
        s = SETTINGS[name]
        for kind in ("plain", "smooth"):
            runs.append((f"{name} {kind} experts",
                         ["protocol=experts", *s.dataset, *s.backbone, *s.experts,
                          "trainer.progress=false", f"protocol.smooth={kind == 'smooth'}",
                          *(s.smooth_experts if kind == "smooth" else [])],
                         root / "experts" / name / kind))
        for ipc in ipcs:
            base = ["protocol=distill", *s.dataset, *s.backbone, *s.distill, *COMMON,
                    f"protocol.ipc={ipc}", *s.ipc_overrides.get(ipc, [])]
            variants = {"mtt_plain": ("plain", ["protocol.baselines=[random,kmeans]"]),
                        "mtt_smooth": ("smooth", ["protocol.baselines=[]"])}
            variants.update({tag: ("smooth", ["protocol.baselines=[]", *extra])
                             for tag, extra in COMPONENTS.items()})
            for seed in seeds:
                for tag, (kind, extra) in variants.items():
                    runs.append((f"{name} IPC {ipc} seed {seed} {tag}",
                                 [*base, *extra, f"seed={seed}", f"tag={tag}",
                                  f"protocol.experts={root / 'experts' / name / kind}"],
                                 root / "distill" / name / f"ipc{ipc}" / tag / f"seed{seed}"))
    return runs


def _results(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob(RESULTS_NAME))]


# The distillation tables: the leaderboard's summary (mean ± std over seeds, each seed the
# mean of its evaluation networks), per dataset and IPC, a row per tag.
TABLE_COLUMNS = (Column("syn_top1", "top-1 % (final epoch)", 100, True, 1),
                 Column("syn_ece", "ECE %", 100, False, 1),
                 Column("syn_best_top1", "best test epoch % (test-selected)", 100, None, 1),
                 Column("random_top1", "random real subset %", 100, None, 1),
                 Column("kmeans_top1", "K-means real subset %", 100, None, 1))


def distill_tables(root: Path) -> str:
    """Markdown, from the leaderboard's own loading and summary of the runs under
    ``root/distill``: per dataset and IPC, every tag's final-epoch top-1, ECE and
    test-selected best epoch, and (on the MTT rows, which evaluate them) the real-subset
    baselines."""
    runs = load_runs(root / "distill").completed
    if runs.empty:
        return "(no completed distillation runs)"
    columns = list(TABLE_COLUMNS)
    out = []
    for (dataset, ipc), group in runs.groupby(["dataset", "protocol.ipc"], sort=True):
        summary = summarize(group, columns, ["tag"])
        out.append(f"#### {dataset}, IPC {ipc}\n\n{to_markdown(summary, columns, ['tag'])}")
    return "\n\n".join(out)


def expert_table_and_figure(root: Path, figure: Path | None) -> str:
    """Markdown: each expert run's final top-1 and mean ‖Δθ‖ per epoch early and late; and
    the per-epoch parameter change of plain against smooth experts as a figure."""
    lines = ["| dataset | experts | n | final top-1 % | ‖Δθ‖/epoch, first 10 | later |",
             "|---|---|---|---|---|---|"]
    curves = {}
    for r in _results(root / "experts"):
        if r.get("status") != "completed":
            continue
        e, name = r["experts"], r["config"]["dataset"]["name"]
        kind = "smooth" if e["smooth"] else "plain"
        lines.append(f"| {name} | {kind} | {e['num_experts']} | "
                     f"{100 * e['expert_top1']:.1f} ± {100 * e['expert_top1_std']:.1f} | "
                     f"{e['change_early']:.3f} | {e['change_late']:.3f} |")
        curves[(name, kind)] = e["param_change"]
    if figure is not None and curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = sorted({n for n, _ in curves})
        fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
        for ax, name in zip(axes[0], names):
            for kind in ("plain", "smooth"):
                if (name, kind) in curves:
                    change = curves[(name, kind)]
                    ax.plot(range(1, len(change) + 1), change, marker="o", label=kind)
            ax.set_title(f"{name}: parameter change per epoch")
            ax.set_xlabel("epoch")
            ax.set_ylabel("‖θ(e) − θ(e−1)‖, mean over experts")
            ax.legend()
        fig.tight_layout()
        figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(figure, dpi=120)
        plt.close(fig)
    return "\n".join(lines)
