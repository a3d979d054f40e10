"""UnMix-TNS: initialisation around the source statistics, the mixture normalisation, the
component update, and BatchNorm replacement."""
import pytest
import torch
from torch import nn

from mixbench.errors import ConfigError
from mixbench.tta import UnMixTNS2d, replace_bn


def source_bn(channels=2000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels)
    bn.running_mean.copy_(torch.randn(channels, generator=gen))
    bn.running_var.copy_(torch.rand(channels, generator=gen) + 0.5)
    return bn


def test_initialisation_keeps_the_source_mean_and_variance_in_expectation():
    bn = source_bn()
    layer = UnMixTNS2d.from_bn(bn, num_components=16, generator=torch.Generator().manual_seed(1))
    means, variances = layer.component_means, layer.component_vars
    mixture_mean = means.mean(0)
    mixture_var = variances.mean(0) + (means ** 2).mean(0) - mixture_mean ** 2
    # per channel the 16 draws scatter; over 2000 channels the ratios average to 1
    assert ((mixture_mean - bn.running_mean) / bn.running_var.sqrt()).abs().mean() < 0.25
    assert (mixture_var / bn.running_var).mean().item() == pytest.approx(1.0, abs=0.03)
    assert torch.allclose(variances, 0.5 * bn.running_var.expand(16, -1))
    one = UnMixTNS2d.from_bn(bn, num_components=1)  # K = 1: the source statistics
    assert torch.equal(one.component_means[0], bn.running_mean)
    assert torch.equal(one.component_vars[0], bn.running_var)


def test_with_one_hot_assignment_and_rate_one_a_component_becomes_the_instance_statistics():
    layer = UnMixTNS2d(num_features=3, num_components=2, batch_size_max=1, momentum=1.0)
    layer.component_means.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    layer.component_vars.fill_(1.0)
    z = torch.randn(1, 3, 4, 4) + torch.tensor([5.0, 0.0, 0.0])[:, None, None]
    layer(z)  # instance mean points along the first component: p ≈ one-hot, λ = 1
    assert torch.allclose(layer.component_means[0], z.mean(dim=(2, 3))[0], atol=1e-4)
    assert torch.allclose(layer.component_vars[0], z.var(dim=(2, 3), unbiased=False)[0],
                          atol=1e-4)
    # the other component's share is ~e^(-1/0.07): it barely moves
    assert torch.allclose(layer.component_means[1], torch.tensor([0.0, 1.0, 0.0]), atol=1e-4)


def test_forward_normalises_each_instance_with_the_mixture_and_lets_gradients_through():
    bn = source_bn(channels=4)
    layer = UnMixTNS2d.from_bn(bn, num_components=1, batch_size_max=64)
    layer.component_means.zero_()
    layer.component_vars.fill_(1.0)
    z = (torch.randn(8, 4, 5, 5) * 3 + 2).requires_grad_()
    out = layer(z)
    # K = 1: μ̄ = (1 − p)·0 + p·μ̃ with p = 1, so each instance is standardised by its own stats
    expected = (z - z.mean(dim=(2, 3), keepdim=True)) / torch.sqrt(
        z.var(dim=(2, 3), unbiased=False, keepdim=True) + layer.eps)
    expected = expected * bn.weight[:, None, None] + bn.bias[:, None, None]
    assert torch.allclose(out, expected, atol=1e-5)
    out.sum().backward()
    assert z.grad is not None and bn.weight.grad is not None  # the affine parameters are bn's
    assert layer.component_means.abs().sum() > 0  # updated: λ = 1 − 0.9^(8/64)


def test_replace_bn_swaps_every_batchnorm2d_and_refuses_models_without():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)),
                          nn.Flatten(), nn.LazyLinear(3), nn.BatchNorm1d(3))
    assert replace_bn(model, num_components=4) == 2
    assert isinstance(model[1], UnMixTNS2d) and isinstance(model[3][1], UnMixTNS2d)
    assert isinstance(model[6], nn.BatchNorm1d)  # keeps its source statistics
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ConfigError, match="has none"):
        replace_bn(nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4)))


def test_the_adapted_forward_never_waits_for_the_device():
    """On the meta device a host read of a device value raises: no .item(), no syncs."""
    bn = nn.BatchNorm2d(8)
    layer = UnMixTNS2d.from_bn(bn, num_components=4).to("meta")
    out = layer(torch.randn(4, 8, 6, 6, device="meta"))
    assert out.shape == (4, 8, 6, 6) and out.device.type == "meta"


def test_the_mixture_statistics_follow_the_official_formula_for_several_components():
    layer = UnMixTNS2d.from_bn(source_bn(channels=3), num_components=3,
                               generator=torch.Generator().manual_seed(2))
    means, variances = layer.component_means.clone(), layer.component_vars.clone()
    z = torch.randn(2, 3, 4, 4)
    out = layer(z)
    for b in range(2):  # one instance at a time, component by component
        mu, var = z[b].mean(dim=(1, 2)), z[b].var(dim=(1, 2), unbiased=False)
        cos = torch.stack([torch.nn.functional.cosine_similarity(mu, means[k], dim=0)
                           for k in range(3)])
        p = torch.softmax(cos / 0.07, dim=0)
        mixed_mu = [(1 - p[k]) * means[k] + p[k] * mu for k in range(3)]
        mixed_var = [(1 - p[k]) * variances[k] + p[k] * var for k in range(3)]
        mean = sum(mixed_mu) / 3
        total = sum(mixed_var) / 3 + sum(m ** 2 for m in mixed_mu) / 3 - mean ** 2
        expected = (z[b] - mean[:, None, None]) / torch.sqrt(total[:, None, None] + layer.eps)
        expected = expected * layer.weight[:, None, None] + layer.bias[:, None, None]
        assert torch.allclose(out[b], expected, atol=1e-5)


def test_the_component_update_follows_the_official_formula_for_a_batch():
    layer = UnMixTNS2d.from_bn(source_bn(channels=5), num_components=4, batch_size_max=64,
                               generator=torch.Generator().manual_seed(3))
    means, variances = layer.component_means.clone(), layer.component_vars.clone()
    z = torch.randn(16, 5, 3, 3) * 2 + 1
    layer(z)
    mu, var = z.mean(dim=(2, 3)), z.var(dim=(2, 3), unbiased=False)
    p = torch.softmax(torch.nn.functional.cosine_similarity(
        mu[:, None], means[None], dim=-1) / 0.07, dim=1)
    rate = 1 - 0.9 ** (16 / 64)
    for k in range(4):  # component by component, instance by instance
        step_mu = sum(p[b, k] * (mu[b] - means[k]) for b in range(16)) / 16
        step_var = sum(p[b, k] * (var[b] - variances[k]) for b in range(16)) / 16
        assert torch.allclose(layer.component_means[k], means[k] + rate * step_mu, atol=1e-5)
        assert torch.allclose(layer.component_vars[k], variances[k] + rate * step_var,
                              atol=1e-5)


def test_the_mixture_variance_stays_accurate_far_from_zero():
    """Large channel means (activations after many layers): the variance is computed on
    centred components, so it matches the float64 formula instead of cancelling."""
    g = torch.Generator().manual_seed(4)
    means = 200 + torch.randn(16, 6, generator=g)
    variances = 0.5 + torch.rand(16, 6, generator=g)
    z = 200 + torch.randn(8, 6, 4, 4, generator=g)
    layer = UnMixTNS2d(num_features=6, num_components=16)
    layer.component_means.copy_(means)
    layer.component_vars.copy_(variances)
    out = layer(z)
    z, means, variances = z.double(), means.double(), variances.double()
    mu, var = z.mean(dim=(2, 3)), z.var(dim=(2, 3), unbiased=False)
    p = torch.softmax(torch.nn.functional.cosine_similarity(
        mu[:, None], means[None], dim=-1) / 0.07, dim=1)[..., None]
    mixed_mu = (1 - p) * means + p * mu[:, None]
    mixed_var = (1 - p) * variances + p * var[:, None]
    mean = mixed_mu.mean(dim=1)
    total = mixed_var.mean(dim=1) + ((mixed_mu - mean[:, None]) ** 2).mean(dim=1)
    expected = (z - mean[..., None, None]) / torch.sqrt(total[..., None, None] + 1e-5)
    assert torch.allclose(out.double(), expected, atol=2e-3)
