"""The same as the ``mixbench-evaluate`` command: see mixbench/app/evaluate.py.

    python tools/evaluate.py runs/digits/small_cnn/mixup/seed0/2026-11-25_10-00-00
    python tools/evaluate.py RUN_DIR --shift gaussian_noise:5 --shift contrast:3
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from mixbench.app.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
