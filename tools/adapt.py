"""The same as the ``mixbench-adapt`` command: see mixbench/app/adapt.py.

    python tools/adapt.py source=RUN adapter=unmix_tns stream=dirichlet stream.delta=0.1
    python tools/adapt.py -m source=RUN_A,RUN_B adapter=source,tbn,alpha_bn,tent,unmix_tns
    python tools/adapt.py source=RUN corruption=[gaussian_noise,contrast] severity=3
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from mixbench.app.adapt import main  # noqa: E402

if __name__ == "__main__":
    main()
