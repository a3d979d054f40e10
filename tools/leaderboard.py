"""Build the leaderboard from every results.json under a folder.

    python tools/leaderboard.py runs/benchmark [--out DIR]

Prints a markdown table (mean ± std over seeds) and writes leaderboard.md and leaderboard.csv.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixbench.results.table import load_runs, summarize, to_markdown  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path, help="folder searched recursively for runs")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: runs_dir)")
    args = parser.parse_args(argv)
    if not args.runs_dir.is_dir():
        print(f"error: {args.runs_dir} is not a folder", file=sys.stderr)
        return 2
    runs = load_runs(args.runs_dir)
    if runs.completed.empty:
        print(f"error: no completed runs under {args.runs_dir}", file=sys.stderr)
        return 1
    summary = summarize(runs.completed)
    text = to_markdown(summary)
    out = args.out or args.runs_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.md").write_text(f"# mixbench leaderboard\n\n{text}\n")
    summary.to_csv(out / "leaderboard.csv", index=False)
    print(text)
    print(f"\n{len(runs.completed)} completed runs under {args.runs_dir}")
    for _, row in runs.incomplete.iterrows():
        print(f"not completed ({row['status']}): {row['run_dir']}")
    for path, reason in runs.unreadable:
        print(f"unreadable, skipped: {path} ({reason})")
    print(f"written: {out / 'leaderboard.md'}, {out / 'leaderboard.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
