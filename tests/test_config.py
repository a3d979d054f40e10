"""One list of the config keys that do not change an experiment, used alike by resume, the
leaderboard's duplicates and the sweep folders' names."""
from omegaconf import OmegaConf

from conftest import CONFIG_DIR
from mixbench.config import (EXECUTION_KEYS, experiment_changes, experiment_config,
                             is_execution_key)

SAVED = {"seed": 0, "method": {"name": "mixup", "alpha": 1.0},
         "trainer": {"epochs": 2, "device": "cpu", "log_every": 50},
         "logger": {"name": "console"}}


def with_changes(config, **dotted):
    config = OmegaConf.create(config)
    for key, value in dotted.items():
        OmegaConf.update(config, key.replace("__", "."), value, force_add=True)
    return OmegaConf.to_container(config)


def test_execution_keys_name_themselves_and_what_lies_below():
    assert is_execution_key("logger") and is_execution_key("logger.mode")
    assert is_execution_key("trainer.devices") and not is_execution_key("trainer.epochs")
    assert not is_execution_key("loggers")  # a prefix of the name is not the key


def test_only_experiment_keys_count_as_changes():
    current = with_changes(SAVED, trainer__device="cuda", trainer__log_every=5,
                           logger__name="wandb", trainer__keep_every=3)
    assert experiment_changes(SAVED, current) == []
    current = with_changes(SAVED, method__alpha=0.2, trainer__device="cuda")
    assert experiment_changes(SAVED, current) == ["method.alpha"]


def test_keys_added_since_a_run_was_written_change_nothing_at_their_old_value():
    # a run written before protocols and trainer.init_from existed
    current = with_changes(SAVED, protocol__name="standard", trainer__init_from=None)
    assert experiment_changes(SAVED, current) == []
    other = with_changes(SAVED, protocol__name="learning_curve", trainer__init_from="runs/a")
    assert experiment_changes(SAVED, other) == ["protocol.name", "trainer.init_from"]
    assert experiment_config(SAVED) == experiment_config(current)


def test_sweep_folders_are_named_without_the_execution_keys():
    from hydra import compose, initialize_config_dir

    overrides = ["seed=2", "+method=mixup", "trainer.progress=false", "trainer.devices=2",
                 "trainer.compile=true", "logger=csv", "dataset.root=/data"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    assert list(cfg.hydra.job.config.override_dirname.exclude_keys) == list(EXECUTION_KEYS)
    assert cfg.hydra.job.override_dirname == "+method=mixup,seed=2"
