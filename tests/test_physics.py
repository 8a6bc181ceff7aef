from __future__ import annotations

import pytest
import torch
from custom.imaging.physics import (
    MU_WATER,
    detector_blur,
    hu_to_mu,
    hu_to_network,
    log_image,
    mu_to_hu,
    network_to_hu,
    normalise_radiograph,
    quantum_counts,
    transmission,
)


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


def test_quantum_counts_are_poisson_with_a_one_photon_floor():
    generator = torch.Generator().manual_seed(0)
    counts = quantum_counts(torch.full((200_000,), 400.0), generator)
    assert abs(counts.mean().item() - 400) < 0.5 and abs(counts.var().item() / 400 - 1) < 0.02
    assert quantum_counts(torch.zeros(1000), generator).min() == 1  # nothing detected reads as one photon


def test_detector_blur_keeps_flat_fields_and_spreads_a_point_by_sigma():
    flat = torch.full((2, 9, 11), 3.0)
    assert torch.allclose(detector_blur(flat, 1.5), flat) and detector_blur(flat, 0) is flat
    point = torch.zeros(41, 41, dtype=torch.float64)
    point[20, 20] = 1
    spread = detector_blur(point, 2.0)
    offsets = torch.arange(41, dtype=torch.float64) - 20
    assert spread.sum().item() == pytest.approx(1)
    assert (spread.sum(0) * offsets**2).sum().sqrt().item() == pytest.approx(2.0, rel=0.02)  # column std, pixels
    with pytest.raises(ValueError):
        detector_blur(point, -1)


def test_normalise_radiograph_maps_percentiles_to_the_unit_range():
    image = torch.linspace(0, 1000, 10_001).reshape(1, 1, 73, 137)
    normalised = normalise_radiograph(image, percentiles=(10, 90))
    assert normalised.min() == 0 and normalised.max() == 1
    assert (normalised == 0).float().mean().item() == pytest.approx(0.1, abs=1e-3)
    inside = (image > 100) & (image < 900)
    assert torch.allclose(normalised[inside], (image[inside] - 100) / 800, atol=1e-5)
    # gain and offset of the detector or the display do not change what the network sees, per image
    pair = torch.stack((image[0, 0], 3 * image[0, 0] + 7))
    assert torch.allclose(*normalise_radiograph(pair), atol=1e-5)


@pytest.mark.parametrize(
    "image, percentiles",
    [
        (torch.ones(8, 8), (0.5, 99.5)),  # constant
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), (0.5, 99.5)),
        (torch.tensor([[0.0, float("inf")], [1.0, 2.0]]), (0.5, 99.5)),
        (torch.rand(8, 8), (50, 10)),
        (torch.rand(8, 8), (-1, 10)),
    ],
)
def test_normalise_radiograph_ill_arg(image, percentiles):
    with pytest.raises(ValueError):
        normalise_radiograph(image, percentiles)


def test_network_scale_maps_the_window_to_the_unit_range():
    hu = torch.tensor([-2000.0, -1024.0, 512.0, 2048.0, 3000.0])
    assert torch.allclose(hu_to_network(hu), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    inside = torch.linspace(-1024, 2048, 7)
    assert torch.allclose(network_to_hu(hu_to_network(inside)), inside)
