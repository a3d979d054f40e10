"""Build the leaderboard from every results.json under a folder.

    mixbench-leaderboard runs/benchmark
    mixbench-leaderboard runs --out site --filter dataset=cifar100 --group-by method,loss
    mixbench-leaderboard runs --top1 headline \\
        --compare-to benchmarks/reference/openmixup_cifar_resnet18.csv
    mixbench-leaderboard runs --reproductions claims.yaml

Writes leaderboard.md, leaderboard.csv and leaderboard.html (self-contained) and prints the
markdown: one table per protocol and task, each with that task's columns. Runs that did not
complete are listed, never averaged; unreadable files are reported. --reproductions also
writes reproductions.md: each seed paper's claim, our runs' numbers and a verdict.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import pandas as pd

from mixbench import protocols  # noqa: F401  (registration: the protocols' sections)
from mixbench.errors import ConfigError
from mixbench.merging import runs as merging_runs  # noqa: F401  (the merge section)
from mixbench.results.headline import TOP1_CHOICES, select_top1
from mixbench.results.html import render_html
from mixbench.results.reproductions import (evaluate_claims, load_claims,
                                            reproductions_page)
from mixbench.results.sections import sections as registered_sections
from mixbench.tta import run as tta_run  # noqa: F401  (the adaptation section)
from mixbench.results.table import (IDENTITY, SECTION, attach_reference, columns_for,
                                    console_columns, experiment_groups, filter_runs, load_runs,
                                    summarize, to_markdown)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("runs_dir", type=Path, help="folder searched recursively for runs")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs_dir)")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="keep runs whose KEY (protocol, task, dataset, backbone, method, "
                             "loss, epochs, seed) equals VALUE; repeatable")
    parser.add_argument("--group-by", default=",".join(IDENTITY),
                        help=f"comma-separated columns to group seeds by (default: "
                             f"{','.join(IDENTITY)})")
    parser.add_argument("--top1", choices=TOP1_CHOICES, default="final",
                        help="top-1 of the final model, OpenMixup's median of the last 10 "
                             "epochs' test top-1 (from the run history), or each run's "
                             "headline (eval.top1, eval.top1_heads: what the published "
                             "OpenMixup column holds for experiment=cifar100_r18_openmixup)")
    parser.add_argument("--compare-to", type=Path, default=None, metavar="FILE.csv",
                        help="published table to put beside ours (benchmarks/reference/*.csv)")
    parser.add_argument("--reproductions", type=Path, default=None, metavar="SPEC.yaml",
                        help="claims of seed papers to check against the runs: writes "
                             "reproductions.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not args.runs_dir.is_dir():
        print(f"error: {args.runs_dir} is not a folder", file=sys.stderr)
        return 2
    try:  # a bad spec stops everything before a file is written
        claims = load_claims(args.reproductions) if args.reproductions else None
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = load_runs(args.runs_dir)
    try:
        filters = dict(item.split("=", 1) for item in args.filter)
    except ValueError:
        print(f"error: --filter takes KEY=VALUE, got {args.filter}", file=sys.stderr)
        return 2
    group_by = [g.strip() for g in args.group_by.split(",") if g.strip()]
    reference = pd.read_csv(args.compare_to) if args.compare_to else None
    try:
        runs = filter_runs(table.completed, filters)
        unknown = [g for g in group_by if g not in runs]
        if unknown:
            raise KeyError(f"cannot group by {unknown}: choose from {', '.join(IDENTITY)}, seed")
        runs = select_top1(runs, args.top1)
        sections, texts, console, rows = [], [], [], []
        for (protocol, task), section_runs in runs.groupby(SECTION, sort=True):
            columns = columns_for(task, section_runs)
            groups = experiment_groups(section_runs, group_by)
            summary = summarize(section_runs, columns, groups)
            if reference is not None and columns[0].key in reference:
                summary = attach_reference(summary, reference, columns[0], groups)
            title = f"{protocol} · {task}"
            if any(c.key == "top1" for c in columns):
                title += f" (top-1: {args.top1})"
            sections.append((title, section_runs, summary, columns, groups))
            rows.append(summary.assign(protocol=protocol, task=task))
            texts.append(f"## {title}\n\n{to_markdown(summary, columns, groups)}")
            console.append(f"## {title}\n\n"
                           f"{to_markdown(summary, console_columns(task, section_runs), groups)}")
            for section in registered_sections():  # a protocol's own tables (steps, λ, ...)
                for name, markdown in section.tables(section_runs, groups):
                    texts.append(f"### {protocol}: {name}\n\n{markdown}")
                    console.append(texts[-1])
        checked = evaluate_claims(runs, claims) if claims else None
    except (KeyError, ConfigError) as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    if not sections:
        print(f"error: no completed runs under {args.runs_dir}"
              + (f" matching {filters}" if filters else ""), file=sys.stderr)
        return 1

    out = args.out or args.runs_dir
    out.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join(texts)
    (out / "leaderboard.md").write_text(f"# mixbench leaderboard\n\n{text}\n")
    pd.concat(rows).to_csv(out / "leaderboard.csv", index=False)
    (out / "leaderboard.html").write_text(render_html(sections, table, str(args.runs_dir)))
    written = ["leaderboard.csv", "leaderboard.html"]

    print("\n\n".join(console))
    if checked is not None:
        page = reproductions_page(checked, shlex.join(["tools/leaderboard.py", *argv]), len(runs))
        (out / "reproductions.md").write_text(page)
        written.append("reproductions.md")
        print(f"\n{page}")
    print(f"\n{len(runs)} completed runs under {args.runs_dir}")
    for row in table.incomplete.itertuples():
        print(f"not completed ({row.status}), not averaged: {row.run_dir}")
    for path, reason in table.unreadable:
        print(f"unreadable, skipped: {path} ({reason})")
    for run_dir in table.duplicates.get("run_dir", []):
        print(f"duplicate (same config and seed as another run): {run_dir}")
    print(f"written: {out / 'leaderboard.md'}, {', '.join(written)}")
    return 0
