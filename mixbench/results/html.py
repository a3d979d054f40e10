"""The leaderboard as one self-contained HTML page: sortable tables, a grid of reliability
diagrams (one per group, seeds pooled), accuracy vs ECE, and accuracy vs epochs where runs
differ only in their epoch budget. Figures are embedded PNGs; the page needs no network."""
from __future__ import annotations

import base64
import html
import io
from datetime import datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from mixbench.eval.reliability import draw_reliability, pool_reliability  # noqa: E402
from mixbench.results.table import RunTable, render_table  # noqa: E402

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; cursor: pointer; user-select: none; }
th:hover { background: #e6e6e6; }
td:first-child, th:first-child { text-align: left; }
.caption { color: #555; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; text-align: center; }
figure img { width: 300px; }
"""

# Click a header to sort by it (numbers by their mean, text otherwise); click again to reverse.
# On load, count the reliability diagrams that decoded, for a quick check in a browser.
SCRIPT = """
for (const table of document.querySelectorAll('table.sortable')) {
  table.querySelectorAll('th').forEach((th, col) => th.addEventListener('click', () => {
    const body = table.tBodies[0], rows = Array.from(body.rows);
    const dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    const key = r => { const t = r.cells[col].textContent, v = parseFloat(t);
                       return isNaN(v) ? t : v; };
    rows.sort((a, b) => { const x = key(a), y = key(b);
                          return (x < y ? -1 : x > y ? 1 : 0) * dir; });
    rows.forEach(r => body.appendChild(r));
  }));
}
window.addEventListener('load', () => {
  const ok = Array.from(document.querySelectorAll('img.reliability'))
    .filter(img => img.complete && img.naturalWidth > 0).length;
  document.body.dataset.diagramsLoaded = ok;
});
"""


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _table_html(summary, columns, group_by) -> str:
    rendered = render_table(summary, columns, group_by, bold=("\x01", "\x02"))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rendered.cells.columns)
    rows = []
    for _, row in rendered.cells.iterrows():
        cells = "".join(
            "<td>" + html.escape(str(v)).replace("\x01", "<b>").replace("\x02", "</b>") + "</td>"
            for v in row)
        rows.append(f"<tr>{cells}</tr>")
    caption = f'<p class="caption">{html.escape(rendered.caption)}</p>' if rendered.caption else ""
    return (f'{caption}<table class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _group_label(keys: tuple, group_by: list[str], constant: set[str]) -> str:
    parts = [str(v) for k, v in zip(group_by, keys) if k not in constant]
    return " · ".join(parts) or str(keys[group_by.index("method")])


def _reliability_grid(runs: pd.DataFrame, group_by: list[str]) -> str:
    runs = runs[runs["reliability"].notna()] if "reliability" in runs else runs.iloc[:0]
    if runs.empty:
        return ""
    constant = {c for c in group_by if runs[c].nunique(dropna=False) == 1}
    figures = []
    for keys, group in runs.groupby(group_by, dropna=False, sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        label = _group_label(keys, group_by, constant)
        pooled = pool_reliability(list(group["reliability"]))
        fig, (ax_acc, ax_count) = plt.subplots(2, 1, figsize=(4, 4.6), sharex=True,
                                               gridspec_kw={"height_ratios": [3, 1]})
        draw_reliability(ax_acc, ax_count, pooled, f"{label} ({len(group)} runs)")
        figures.append(f'<figure><img class="reliability" alt="reliability: {html.escape(label)}"'
                       f' src="{_png(fig)}"><figcaption>{html.escape(label)}</figcaption></figure>')
    return '<h2>Reliability diagrams (seeds pooled)</h2><div class="grid">' + \
        "".join(figures) + "</div>"


def _accuracy_vs_ece(summary: pd.DataFrame, group_by: list[str]) -> str:
    if "ece" not in summary or summary["ece"].isna().all():
        return ""
    constant = {c for c in group_by if summary[c].nunique(dropna=False) == 1}
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for _, row in summary.iterrows():
        label = _group_label(tuple(row[g] for g in group_by), group_by, constant)
        ax.errorbar(row["ece"] * 100, row["top1"] * 100, xerr=row["ece_std"] * 100,
                    yerr=row["top1_std"] * 100, fmt="o", capsize=3)
        ax.annotate(label, (row["ece"] * 100, row["top1"] * 100), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set(xlabel="ECE % (lower is better)", ylabel="top-1 % (higher is better)",
           title="accuracy vs calibration (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    return f'<h2>Accuracy vs ECE</h2><img alt="accuracy vs ECE" src="{_png(fig)}">'


def _accuracy_vs_epochs(summary: pd.DataFrame, group_by: list[str]) -> str:
    if "epochs" not in group_by or "top1" not in summary:
        return ""
    others = [g for g in group_by if g != "epochs"]
    lines = [(keys, g.sort_values("epochs")) for keys, g in summary.groupby(others, dropna=False)
             if g["epochs"].nunique() > 1]
    if not lines:
        return ""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for keys, group in lines:
        keys = keys if isinstance(keys, tuple) else (keys,)
        ax.errorbar(group["epochs"], group["top1"] * 100, yerr=group["top1_std"] * 100,
                    marker="o", capsize=3, label=" · ".join(map(str, keys)))
    ax.set(xlabel="epochs", ylabel="top-1 %", title="accuracy vs training budget")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return f'<h2>Accuracy vs epochs</h2><img alt="accuracy vs epochs" src="{_png(fig)}">'


def _accuracy_per_step(runs: pd.DataFrame, group_by: list[str]) -> str:
    """Continual protocols: accuracy on the classes seen so far after each step, one line per
    group (mean over seeds)."""
    if "step_acc" not in runs or runs["step_acc"].isna().all():
        return ""
    runs = runs[runs["step_acc"].notna()]
    constant = {c for c in group_by if runs[c].nunique(dropna=False) == 1}
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for keys, group in runs.groupby(group_by, dropna=False, sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        curves = pd.DataFrame(list(group["step_acc"]))
        mean = curves.mean() * 100
        ax.plot(range(1, len(mean) + 1), mean, marker="o",
                label=f"{_group_label(keys, group_by, constant)} ({len(group)} runs)")
    ax.set(xlabel="step", ylabel="top-1 % on the classes seen so far",
           title="accuracy after each step (mean over seeds)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return f'<h2>Accuracy per step</h2><img alt="accuracy per step" src="{_png(fig)}">'


def _run_list(title: str, items: list[str]) -> str:
    if not items:
        return ""
    return f"<h2>{html.escape(title)}</h2><ul>" + "".join(
        f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"


def render_html(sections: list[tuple[str, pd.DataFrame, pd.DataFrame, list, list[str]]],
                table: RunTable, source: str) -> str:
    """``sections``: (title, runs, summary, columns, group_by) per protocol and task."""
    body = [f"<h1>mixbench leaderboard</h1><p class=\"caption\">{len(table.completed)} completed "
            f"runs under {html.escape(source)}, generated {datetime.now():%Y-%m-%d %H:%M}. "
            f"Mean ± std over seeds; ↑ higher / ↓ lower is better; best in bold; click a "
            f"column to sort.</p>"]
    for title, runs, summary, columns, group_by in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        body.append(_table_html(summary, columns, group_by))
        # each figure draws only where its numbers exist (calibration: classification)
        body += [_accuracy_per_step(runs, group_by), _reliability_grid(runs, group_by),
                 _accuracy_vs_ece(summary, group_by), _accuracy_vs_epochs(summary, group_by)]
    body.append(_run_list("Not completed (not averaged)",
                          [f"{r.status}: {r.run_dir}" for r in table.incomplete.itertuples()]))
    body.append(_run_list("Unreadable results (skipped)",
                          [f"{path}: {why}" for path, why in table.unreadable]))
    body.append(_run_list("Duplicate runs (same config and seed)",
                          list(table.duplicates["run_dir"]) if len(table.duplicates) else []))
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>mixbench leaderboard"
            f"</title><style>{STYLE}</style></head><body>{''.join(body)}"
            f"<script>{SCRIPT}</script></body></html>")
