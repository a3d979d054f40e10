"""Train one run (or a sweep with -m).

    python tools/train.py                       # ERM on digits
    python tools/train.py +method=mixup seed=1  # mixup
    python tools/train.py -m +method=erm,mixup,cutmix seed=0,1
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from mixbench.engine.run import run  # noqa: E402
from mixbench.config import CONFIG_DIR  # noqa: E402
from mixbench.errors import MixbenchError  # noqa: E402
from mixbench.registry import TASKS  # noqa: E402

log = logging.getLogger("mixbench")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    try:
        results = run(cfg, HydraConfig.get().runtime.output_dir)
    except MixbenchError as err:  # a user mistake: say what to do, no traceback
        log.error("error: %s", err)
        sys.exit(1)
    # The value Hydra sweepers optimise: the task's primary metric (top-1, or RMSE).
    return results["test"][TASKS.get(results["task"]).columns[0].key]


if __name__ == "__main__":
    main()
