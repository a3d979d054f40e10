"""What in a run's config defines the experiment, and what only says how it was executed.

``EXECUTION_KEYS`` is the one list of config keys that do not change an experiment: a run
may be resumed with other values, the leaderboard counts two runs that differ only there as
duplicates, and sweep folders are named without them (``mixbench/configs/train.yaml`` reads the list
through the ``mixbench_execution_keys`` resolver registered here)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mixbench.errors import CheckpointError

# The Hydra config tree ships inside the package, so an installed wheel finds it too.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# A key names itself and everything below it ("logger" covers logger.mode, ...).
EXECUTION_KEYS = ("trainer.resume", "trainer.progress", "trainer.device", "trainer.devices",
                  "trainer.num_workers", "trainer.eval_batch_size", "trainer.log_every",
                  "trainer.skip_completed", "trainer.compile", "trainer.keep_every",
                  "dataset.root", "dataset.download", "logger")
# Keys added to the config after runs had been written without them, with the value that
# reproduces those runs: such a run is still the same experiment.
INTRODUCED = {"protocol.name": "standard", "trainer.init_from": None, "tag": None,
              "dataset.label_noise.train": True, "dataset.label_noise.test": False,
              "dataset.label_noise.test_seed": 1, "dataset.max_train": None,
              "backbone.pretrained": False, "backbone.pretrained_file": None,
              "eval.temperature_split": "val", "eval.top1": "final", "eval.top1_heads": "model",
              "dataset.crop_padding_mode": "zeros", "dataset.mean": None, "dataset.std": None,
              "scheduler.min_lr": None, "scheduler.by_epoch": False}

OmegaConf.register_new_resolver("mixbench_execution_keys", lambda: list(EXECUTION_KEYS),
                                replace=True)
# The last ``parts`` folders of a path, to name a sweep's sub-folder after a run it reads
# (tools/adapt.py: ``source=runs/x/erm/seed0`` → ``erm/seed0``).
OmegaConf.register_new_resolver(
    "mixbench_path_tail", lambda path, parts=2: "/".join(Path(str(path)).parts[-int(parts):]),
    replace=True)


def is_execution_key(dotted: str) -> bool:
    return any(dotted == key or dotted.startswith(key + ".") for key in EXECUTION_KEYS)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"a.b.c": value}."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def experiment_config(config: dict) -> dict:
    """What identifies the experiment: ``config`` without its execution keys, with the keys
    introduced since a run was written set to the values that reproduce it."""
    out = _without_execution_keys(config)
    for dotted, value in INTRODUCED.items():
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node.setdefault(leaf, value)
    return out


def _without_execution_keys(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if not is_execution_key(path):
            out[key] = (_without_execution_keys(value, path + ".") if isinstance(value, dict)
                        else value)
    return out


def experiment_changes(saved: dict, current: dict) -> list[str]:
    """The config keys (dotted) that differ between two configs and change the experiment."""
    old, new = flatten(experiment_config(saved)), flatten(experiment_config(current))
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def check_same_experiment(saved: dict, current: dict, source: Path) -> None:
    old, new = flatten(saved), flatten(current)
    differ = experiment_changes(saved, current)
    if differ:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ[:8])
        raise CheckpointError(f"cannot resume from {source}: it was trained with a different "
                              f"config ({shown}). Resume with the original settings, or start "
                              f"a new run in another hydra.run.dir.")
