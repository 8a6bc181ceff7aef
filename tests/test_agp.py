from __future__ import annotations

import pytest
import torch
from custom.imaging.geometry import BiplanarGeometry
from custom.networks.agp import AttentionGuidedProjection, geometric_attention_prior, sinusoidal_encoding
from custom.networks.fully_connected import FullyConnectedLink

GEOMETRY = BiplanarGeometry()


def test_prior_peaks_where_each_voxel_projects():
    prior = geometric_attention_prior(GEOMETRY, (4, 4, 4), (8, 8), sigma=1.0, kind="bias")  # (64, 128)
    assert prior.shape == (64, 2 * 64) and prior.max() <= 0
    coarse = GEOMETRY.resampled((4, 4, 4), (8, 8))
    centres = coarse.voxel_centres().reshape(-1, 3)
    for view_index, view in enumerate(coarse.views):
        best = prior[:, view_index * 64 : (view_index + 1) * 64].argmax(dim=1)  # the favoured pixel per voxel
        projected = view.project(centres).round().clamp(0, 7)
        expected = projected[:, 0] * 8 + projected[:, 1]
        assert ((best - expected).abs() <= 9).all()  # the same pixel or a neighbour (rounding ties)
    # orientation: the patient's left (-x) on the frontal image's right, the face (+y) on the lateral
    # image's left, superior (+z) at the top of both
    frontal, lateral = prior[:, :64].argmax(dim=1), prior[:, 64:].argmax(dim=1)
    frontal_row, frontal_column, lateral_row, lateral_column = frontal // 8, frontal % 8, lateral // 8, lateral % 8
    x, y, z = centres.T
    assert frontal_column[x < 0].float().mean() > frontal_column[x > 0].float().mean()
    assert lateral_column[y > 0].float().mean() < lateral_column[y < 0].float().mean()
    for row in (frontal_row, lateral_row):
        assert row[z > 0].float().mean() < row[z < 0].float().mean()


def test_masked_attention_only_reads_the_pixels_a_voxel_projects_to():
    torch.manual_seed(0)
    agp = AttentionGuidedProjection(8, 16, (4, 4, 4), (8, 8), num_heads=2, geometry=GEOMETRY, prior="mask").eval()
    features = torch.randn(1, 8, 2, 8, 8)
    allowed = torch.isfinite(agp.attention_prior)  # (64 voxels, 128 tokens)
    assert allowed.view(64, 2, 64).any(dim=2).all()  # every voxel sees pixels in both views
    voxel = 21
    changed = features.clone().view(1, 8, 128)
    changed[:, :, ~allowed[voxel]] += 5.0  # change only pixels the voxel may not read
    with torch.no_grad():
        before, after = agp(features).flatten(2), agp(changed.view(1, 8, 2, 8, 8)).flatten(2)
    assert torch.allclose(before[:, :, voxel], after[:, :, voxel], atol=1e-5)
    assert not torch.allclose(before, after)  # other voxels do read them


def test_without_prior_every_voxel_reads_every_token():
    agp = AttentionGuidedProjection(8, 16, (2, 2, 2), (4, 4), num_heads=2).eval()
    features = torch.randn(1, 8, 2, 4, 4)
    changed = features.clone()
    changed[:, :, 1, 0, 0] += 5.0  # one lateral pixel
    with torch.no_grad():
        difference = (agp(features) - agp(changed)).abs().flatten(2).amax(1)
    assert (difference > 0).all()


def test_sinusoidal_encoding_is_distinct_per_position():
    positions = torch.stack(torch.meshgrid(*(torch.arange(4),) * 3, indexing="ij"), -1).reshape(-1, 3)
    encoding = sinusoidal_encoding(positions, 48)
    assert encoding.shape == (64, 48) and torch.unique(encoding, dim=0).shape[0] == 64


def test_fully_connected_link_keeps_views_apart():
    link = FullyConnectedLink(8, 16, (4, 4), (2, 2, 2), squeeze_channels=2)
    features = torch.randn(1, 8, 2, 4, 4)
    changed = features.clone()
    changed[:, :, 1] += 1.0  # the lateral view only
    out, other = link(features), link(changed)
    assert out.shape == (1, 16, 2, 2, 2, 2)
    assert torch.equal(out[:, :, 0], other[:, :, 0]) and not torch.equal(out[:, :, 1], other[:, :, 1])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_heads=3),
        dict(prior="gauss", geometry=GEOMETRY),
        dict(prior="bias"),
        dict(prior="bias", geometry=GEOMETRY, prior_sigma=0),
    ],
)
def test_ill_arg(kwargs):
    with pytest.raises(ValueError):
        AttentionGuidedProjection(8, 16, (2, 2, 2), (4, 4), **{"num_heads": 2, **kwargs})
