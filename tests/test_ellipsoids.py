from __future__ import annotations

import math

import pytest
import torch
from custom.imaging.ellipsoids import Ellipsoid, analytic_head, rasterise
from custom.imaging.geometry import BiplanarGeometry


def test_chord_lengths_of_a_sphere():
    ball = Ellipsoid((10.0, 0.0, 0.0), (5.0, 5.0, 5.0), 1.0)
    origins = torch.tensor([[10.0, -50, 0], [10.0, -50, 3], [10.0, -50, 5], [10.0, -50, 6]], dtype=torch.float64)
    directions = torch.tensor([0.0, 1, 0], dtype=torch.float64).expand(4, 3)
    expected = torch.tensor([10.0, 2 * math.sqrt(25 - 9), 0.0, 0.0], dtype=torch.float64)  # through, off, tangent, miss
    assert torch.allclose(ball.chord(origins, directions), expected)


def test_chord_along_each_semi_axis_of_an_ellipsoid():
    ellipsoid = Ellipsoid((1.0, 2.0, 3.0), (7.0, 5.0, 3.0), 1.0)
    centre = torch.tensor(ellipsoid.centre, dtype=torch.float64)
    for axis, semi_axis in enumerate(ellipsoid.semi_axes):
        direction = torch.eye(3, dtype=torch.float64)[axis]
        assert ellipsoid.chord(centre - 100 * direction, direction) == pytest.approx(2 * semi_axis)


def test_coverage_integrates_to_the_ellipsoid_volume():
    geometry = BiplanarGeometry().resampled((64,) * 3)
    ellipsoid = Ellipsoid((7.0, -11.0, 5.0), (40.0, 30.0, 25.0), 1.0)
    _, fraction = ellipsoid.coverage(geometry, supersampling=4)
    volume = fraction.sum() * geometry.vol_spacing**3
    assert volume == pytest.approx(4 / 3 * math.pi * 40 * 30 * 25, rel=0.01)


def test_coverage_clips_to_the_grid_and_handles_ellipsoids_outside_it():
    geometry = BiplanarGeometry().resampled((32,) * 3)
    box, fraction = Ellipsoid((90.0, 0.0, 0.0), (20.0, 20.0, 20.0), 1.0).coverage(geometry)
    assert box[0].stop == 32 and fraction.shape[0] == box[0].stop - box[0].start
    _, nothing = Ellipsoid((500.0, 0.0, 0.0), (5.0, 5.0, 5.0), 1.0).coverage(geometry)
    assert nothing.numel() == 0


def test_rasterise_paints_later_ellipsoids_over_earlier_ones():
    geometry = BiplanarGeometry().resampled((32,) * 3)
    volume = rasterise(
        [Ellipsoid((0.0, 0.0, 0.0), (60.0,) * 3, 40.0), Ellipsoid((0.0, 0.0, 0.0), (20.0,) * 3, 1000.0)],
        geometry,
        background=-1000.0,
    )
    assert volume[16, 16, 16] == 1000 and volume[16, 16, 24] == 40 and volume[0, 0, 0] == -1000


def test_analytic_head_fits_the_default_field_of_view():
    layers, air = analytic_head()
    half_fov = BiplanarGeometry().fov[0] / 2
    for layer in layers:
        assert all(abs(c) + a < half_fov for c, a in zip(layer.centre, layer.semi_axes)), layer
    assert air == -1000


def test_ill_arg():
    with pytest.raises(ValueError):
        Ellipsoid((0.0, 0.0, 0.0), (1.0, 0.0, 1.0), 1.0)
    with pytest.raises(ValueError):
        Ellipsoid((0.0, 0.0), (1.0, 1.0, 1.0), 1.0)
