from __future__ import annotations

import pytest
import torch
from custom.data.points import boundary_mask, sample_voxels


def _cube() -> torch.Tensor:
    mask = torch.zeros(10, 10, 10, dtype=torch.bool)
    mask[3:7, 3:7, 3:7] = True
    return mask


def test_the_boundary_is_the_shell_either_side_of_the_surface():
    boundary = boundary_mask(_cube())
    assert boundary.sum() == 6**3 - 2**3  # from the 6^3 dilation, less the 2^3 erosion
    assert boundary[3, 3, 3] and boundary[2, 5, 5] and not boundary[5, 5, 5] and not boundary[0, 0, 0]


def test_the_boundary_share_of_points_is_as_asked_and_all_fall_in_the_grid():
    mask, generator = _cube(), torch.Generator().manual_seed(0)
    points = sample_voxels(mask, 1000, boundary_fraction=0.3, generator=generator)
    assert points.shape == (1000, 3) and points.min() >= 0 and points.max() < 10
    on_boundary = boundary_mask(mask)[points[:, 0], points[:, 1], points[:, 2]]
    assert on_boundary[700:].all()  # the last 30% are boundary voxels
    assert on_boundary[:700].float().mean() < 0.4  # uniform ones hit the 208-voxel shell about 21% of the time


def test_without_a_boundary_every_point_is_uniform_and_bad_fractions_are_refused():
    assert sample_voxels(torch.zeros(4, 4, 4, dtype=torch.bool), 50, 0.5).shape == (50, 3)
    with pytest.raises(ValueError, match="boundary_fraction"):
        sample_voxels(_cube(), 10, 1.5)
