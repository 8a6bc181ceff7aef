from __future__ import annotations

import pytest
import torch
from custom.networks.discriminator import MultiScalePatchDiscriminator3d


@pytest.mark.parametrize("conditioned", [True, False])
def test_patch_logits_at_every_scale(conditioned):
    discriminator = MultiScalePatchDiscriminator3d(channels=4, num_layers=2, num_scales=2, conditioned=conditioned)
    volume = torch.rand(2, 1, 32, 32, 32)
    logits = discriminator(volume, torch.rand_like(volume) if conditioned else None)
    assert [tuple(logit.shape) for logit in logits] == [(2, 1, 6, 6, 6), (2, 1, 2, 2, 2)]


def test_conditioning_changes_the_judgement():
    torch.manual_seed(0)
    discriminator = MultiScalePatchDiscriminator3d(channels=4, num_layers=2, num_scales=1).eval()
    volume = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        a, b = (discriminator(volume, prior)[0] for prior in (torch.zeros_like(volume), torch.ones_like(volume)))
    assert not torch.allclose(a, b)


def test_lsgan_discriminator_learns_to_tell_real_from_fake():
    torch.manual_seed(0)
    discriminator = MultiScalePatchDiscriminator3d(channels=4, num_layers=2, num_scales=2, conditioned=False)
    optimiser = torch.optim.Adam(discriminator.parameters(), lr=2e-3, betas=(0.5, 0.99))
    real = torch.zeros(2, 1, 32, 32, 32)
    real[:, :, 8:24, 8:24, 8:24] = 1.0  # a cube
    fake = torch.rand(2, 1, 32, 32, 32)  # noise
    for _ in range(30):
        optimiser.zero_grad()
        loss = sum(((r - 1) ** 2).mean() + (f**2).mean() for r, f in zip(discriminator(real), discriminator(fake)))
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        assert all(r.mean() > f.mean() + 0.5 for r, f in zip(discriminator(real), discriminator(fake)))


def test_ill_arg():
    with pytest.raises(ValueError):
        MultiScalePatchDiscriminator3d(num_scales=0)
    conditioned, plain = MultiScalePatchDiscriminator3d(4, 2, 1), MultiScalePatchDiscriminator3d(4, 2, 1, False)
    volume = torch.rand(1, 1, 16, 16, 16)
    with pytest.raises(ValueError):
        conditioned(volume)
    with pytest.raises(ValueError):
        plain(volume, volume)
    with pytest.raises(ValueError, match="coarsest scale"):
        MultiScalePatchDiscriminator3d(4, 3, 2, False)(volume)  # 16 -> 8 voxels, 3 layers need 32
