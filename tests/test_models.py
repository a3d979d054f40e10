"""Every registered backbone: logits and pooled features of the right shape, a linear head."""
import pytest
import torch

from mixbench.errors import ConfigError
from mixbench.components import BACKBONES

# (config, input shape). Heavy CIFAR nets get a tiny batch; timm covers a CNN and a ViT.
CASES = {
    "small_cnn": ({"name": "small_cnn"}, (2, 1, 8, 8)),
    "convnet": ({"name": "convnet", "width": 16}, (2, 3, 32, 32)),
    "mlp": ({"name": "mlp", "depth": 3}, (2, 6)),
    "resnet18": ({"name": "resnet18"}, (2, 3, 32, 32)),
    "resnet32": ({"name": "resnet32"}, (2, 3, 32, 32)),
    "resnet34": ({"name": "resnet34"}, (2, 3, 32, 32)),
    "resnet50": ({"name": "resnet50"}, (2, 3, 32, 32)),
    "preactresnet18": ({"name": "preactresnet18"}, (2, 3, 32, 32)),
    "wrn28_10": ({"name": "wrn28_10", "widen_factor": 2}, (2, 3, 32, 32)),
    "timm": ({"name": "timm", "model_name": "resnet10t"}, (2, 3, 32, 32)),
}


def test_every_backbone_has_a_case():
    assert sorted(CASES) == BACKBONES.names()


@pytest.mark.parametrize("name", sorted(CASES))
def test_backbone_shapes(name):
    cfg, shape = CASES[name]
    model = BACKBONES.build(cfg, num_classes=7, in_channels=shape[1]).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x)
    assert logits.shape == (2, 7)
    assert features.shape == (2, model.num_features)
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 7
    assert torch.allclose(model.head(features), logits, atol=1e-5)


def test_cifar_resnet_keeps_resolution_in_the_stem():
    model = BACKBONES.build({"name": "resnet18"}, num_classes=10)
    h = model.stem(torch.randn(1, 3, 32, 32))
    assert h.shape[-2:] == (32, 32)  # 3×3 stride-1 stem, no max-pool (OpenMixup's CIFAR variant)


def test_timm_vit_and_unknown_name():
    model = BACKBONES.build({"name": "timm", "model_name": "vit_tiny_patch16_224",
                             "model_kwargs": {"img_size": 32, "patch_size": 8}},
                            num_classes=5, in_channels=3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ConfigError, match="not a timm model"):
        BACKBONES.build({"name": "timm", "model_name": "resnet_nosuch"}, num_classes=5)


def test_wrn_depth_is_validated():
    with pytest.raises(ConfigError, match="backbone.depth"):
        BACKBONES.build({"name": "wrn28_10", "depth": 27}, num_classes=10)


@pytest.mark.parametrize("name,shape", [("small_cnn", (4, 1, 8, 8)), ("mlp", (4, 6)),
                                        ("resnet18", (4, 3, 16, 16))])
def test_forward_mixed_mixes_the_hidden_state_at_the_given_layer(name, shape):
    torch.manual_seed(0)
    model = BACKBONES.build({"name": name}, num_classes=3, in_channels=shape[1]).eval()
    x = torch.randn(shape)
    perm = torch.tensor([1, 0, 3, 2])
    blocks = [model.stem, *model.stages]
    with torch.no_grad():
        assert torch.allclose(model.forward_mixed(x, lambda h: h, 1), model(x), atol=1e-5)
        assert torch.allclose(model.forward_mixed(x, lambda h: 0.3 * h + 0.7 * h[perm], 0),
                              model(0.3 * x + 0.7 * x[perm]), atol=1e-5)
        for layer in range(1, len(blocks) + 1):  # by hand: blocks up to the layer, mix, rest
            h = x
            for block in blocks[:layer]:
                h = block(h)
            h = 0.3 * h + 0.7 * h[perm]
            for block in blocks[layer:]:
                h = block(h)
            expected = model.head(model.pool(h))
            got = model.forward_mixed(x, lambda h: 0.3 * h + 0.7 * h[perm], layer)
            assert torch.allclose(got, expected, atol=1e-5)
        with pytest.raises(ValueError, match="layer"):
            model.forward_mixed(x, lambda h: h, len(blocks) + 1 + 1)


def test_resnet32_is_the_cifar_resnet_of_0_46m_parameters():
    model = BACKBONES.build({"name": "resnet32"}, num_classes=100)
    # He et al.'s 0.46M with zero-padding shortcuts; option B adds the 1×1 projections
    assert model.num_features == 64 and [len(s) for s in model.stages] == [5, 5, 5]
    assert 0.46e6 < sum(p.numel() for p in model.parameters()) < 0.48e6
