from __future__ import annotations

import pytest
import torch
from custom.benchmark.baselines import CalibratedBackProjection, MeanAtlas
from custom.imaging.geometry import BiplanarGeometry

GEOMETRY = BiplanarGeometry().resampled((16, 16, 16), (16, 16))


def _batches(labels: list[torch.Tensor], views: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    return [{"image": v, "label": label} for v, label in zip(views, labels)]


def test_the_atlas_is_the_voxelwise_mean_of_every_training_case_and_ignores_the_views():
    torch.manual_seed(0)
    labels = [torch.rand(2, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)]  # batches of 2 and 1
    views = [torch.rand(2, 2, 16, 16), torch.rand(1, 2, 16, 16)]
    atlas = MeanAtlas(GEOMETRY).fit(_batches(labels, views))
    expected = torch.cat(labels).double().mean(0, keepdim=True).float()
    assert torch.allclose(atlas(torch.rand(3, 2, 16, 16)), expected.expand(3, -1, -1, -1, -1), atol=1e-6)
    assert set(atlas.state_dict()) == {"atlas"}


def test_the_back_projection_line_is_recovered_from_cases_made_on_it():
    torch.manual_seed(0)
    baseline = CalibratedBackProjection(GEOMETRY)
    views = [torch.rand(1, 2, 16, 16) for _ in range(3)]
    labels = [0.4 * baseline.prior(v) + 0.1 for v in views]  # exactly on a line, inside [0, 1]
    baseline.fit(_batches(labels, views))
    assert baseline.scale.item() == pytest.approx(0.4, rel=1e-5) and baseline.offset.item() == pytest.approx(
        0.1, abs=1e-5
    )
    assert torch.allclose(baseline(views[0]), labels[0], atol=1e-5)
    assert baseline(views[0] * 100).max() == 1.0  # clipped to the networks' scale


def test_empty_or_constant_training_data_is_refused():
    with pytest.raises(ValueError, match="empty"):
        MeanAtlas(GEOMETRY).fit([])
    with pytest.raises(ValueError, match="constant"):
        CalibratedBackProjection(GEOMETRY).fit(_batches([torch.zeros(1, 1, 16, 16, 16)], [torch.zeros(1, 2, 16, 16)]))
