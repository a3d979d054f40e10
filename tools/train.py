"""Train one run (or a sweep with -m); the same as the ``mixbench-train`` command.

    python tools/train.py                       # ERM on digits
    python tools/train.py +method=mixup seed=1  # mixup
    python tools/train.py -m +method=erm,mixup,cutmix seed=0,1
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from mixbench.app.train import main  # noqa: E402

if __name__ == "__main__":
    main()
