"""The same as the ``mixbench-merge`` command: see mixbench/app/merge.py.

    python tools/merge.py base=RUN models=[RUN_A,RUN_B,RUN_C,RUN_D] merge=pcb merge.ratio=0.1
    python tools/merge.py -m experiment=merge_fmnist_tasks merge=task_arithmetic,ties,dare,pcb
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from mixbench.app.merge import main  # noqa: E402

if __name__ == "__main__":
    main()
