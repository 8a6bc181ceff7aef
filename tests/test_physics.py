from __future__ import annotations

import torch

from custom.physics import MU_WATER, hu_to_mu, log_image, mu_to_hu, transmission


def test_hu_to_mu_reference_values():
    hu = torch.tensor([-2000.0, -1000.0, 0.0, 1000.0])
    expected = torch.tensor([0.0, 0.0, MU_WATER, 2 * MU_WATER])  # below air clamps to zero
    assert torch.allclose(hu_to_mu(hu), expected)
    assert torch.allclose(hu_to_mu(torch.tensor([0.0]), mu_water=0.03), torch.tensor([0.03]))


def test_mu_to_hu_inverts_hu_to_mu_above_air():
    hu = torch.linspace(-1000, 3000, 41, dtype=torch.float64)
    assert torch.allclose(mu_to_hu(hu_to_mu(hu)), hu)


def test_beer_lambert_and_log_image_are_inverse():
    line_integral = torch.linspace(0, 8, 17, dtype=torch.float64)
    intensity = transmission(line_integral, i0=1e4)
    assert torch.allclose(intensity, 1e4 * torch.exp(-line_integral))
    assert torch.allclose(log_image(intensity, i0=1e4), line_integral)


def test_log_image_stays_finite_for_non_positive_counts():
    values = log_image(torch.tensor([0.0, -3.0, 1.0]))
    assert torch.isfinite(values).all() and values[0] > 80 and values[2] == 0


def test_gradients_flow_through_the_physics():
    hu = torch.tensor([100.0, 500.0], requires_grad=True)
    log_image(transmission(hu_to_mu(hu) * 50)).sum().backward()
    assert torch.allclose(hu.grad, torch.full((2,), MU_WATER / 1000 * 50))
