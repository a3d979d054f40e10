
import pytest
import yaml

from mixbench.errors import ConfigError
from mixbench.config import CONFIG_DIR
from mixbench.components import BACKBONES, DATASETS, LOSSES, METHODS
from mixbench import protocols  # noqa: F401  (registration)
from mixbench.registry import PROTOCOLS, Registry

CONFIGS = CONFIG_DIR


def test_build_passes_kwargs_and_runtime_extras():
    method = METHODS.build({"name": "mixup", "alpha": 0.4}, num_classes=7)
    assert method.alpha == 0.4 and method.num_classes == 7


def test_unknown_name_lists_known_names():
    with pytest.raises(ConfigError) as err:
        METHODS.build({"name": "nosuch"}, num_classes=3)
    message = str(err.value)
    assert "nosuch" in message and "mixup" in message and "cutmix" in message


def test_missing_name_key_is_explained():
    with pytest.raises(ConfigError, match="'name' key"):
        LOSSES.build({"label_smoothing": 0.1})


def test_duplicate_registration_raises():
    registry = Registry("thing")
    registry.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(lambda: 2)


@pytest.mark.parametrize("group,registry", [("method", METHODS), ("backbone", BACKBONES),
                                            ("dataset", DATASETS), ("loss", LOSSES),
                                            ("protocol", PROTOCOLS)])
def test_every_config_file_names_a_registered_component(group, registry):
    files = sorted((CONFIGS / group).glob("*.yaml"))
    assert files, f"no configs in {group}/"
    for path in files:
        data = yaml.safe_load(path.read_text())
        node = data if "name" in data else data[group]  # `# @package _global_` configs nest it
        name = node["name"]
        assert name in registry, f"{path.name} names unregistered {group} {name!r}"


def test_misspelled_option_lists_the_real_ones():
    with pytest.raises(ConfigError) as err:
        METHODS.build({"name": "mixup", "alpah": 0.3}, num_classes=3)
    assert "alpah" in str(err.value) and "alpha, prob, lam_mode" in str(err.value)
