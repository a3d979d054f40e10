"""The same as the ``mixbench-leaderboard`` command: see mixbench/app/leaderboard.py.

    python tools/leaderboard.py runs/benchmark
    python tools/leaderboard.py runs --out site --filter dataset=cifar100 --group-by method,loss
    python tools/leaderboard.py runs --top1 headline \\
        --compare-to benchmarks/reference/openmixup_cifar_resnet18.csv
    python tools/leaderboard.py runs --reproductions claims.yaml
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from mixbench.app.leaderboard import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
