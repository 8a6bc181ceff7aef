from __future__ import annotations

import math

import pytest
import torch
from custom.networks.hash_encoding import HashEncoding


def test_resolutions_grow_geometrically_from_base_to_finest():
    encoding = HashEncoding(levels=11, features=8, base_resolution=16, finest_resolution=512)
    assert encoding.resolutions[0] == 16 and encoding.resolutions[-1] == 512 and encoding.out_channels == 88
    ratios = [b / a for a, b in zip(encoding.resolutions, encoding.resolutions[1:])]
    assert all(r == pytest.approx(32 ** (1 / 10), rel=0.05) for r in ratios)


def test_codes_are_exact_at_grid_vertices_and_linear_between_them():
    torch.manual_seed(0)
    encoding = HashEncoding(levels=1, features=2, log2_table_size=12, base_resolution=8, finest_resolution=8)
    encoding.tables.data.normal_()
    assert encoding.dense(0)  # 9^3 vertices fit in 4096 entries
    vertex = torch.tensor([3, 5, 8])
    code = encoding(vertex.float()[None] / 8)[0]
    assert torch.allclose(code, encoding.tables[0, encoding.index(vertex, 0)], atol=1e-6)
    neighbour = vertex + torch.tensor([1, 0, 0])
    midpoint = encoding(((vertex + neighbour).float() / 2)[None] / 8)[0]
    expected = (encoding.tables[0, encoding.index(vertex, 0)] + encoding.tables[0, encoding.index(neighbour, 0)]) / 2
    assert torch.allclose(midpoint, expected, atol=1e-6)


def test_gradients_reach_only_the_table_entries_a_point_touches():
    encoding = HashEncoding(levels=2, features=4, log2_table_size=10, base_resolution=4, finest_resolution=16)
    encoding(torch.tensor([[0.3, 0.6, 0.2]])).sum().backward()
    touched = (encoding.tables.grad.abs().sum(-1) > 0).sum(1)
    assert touched.tolist() == [8, 8]  # one cell's 8 corners per level


def test_hashed_levels_stay_in_the_table_and_colliding_vertices_share_features():
    encoding = HashEncoding(levels=2, features=2, log2_table_size=6, base_resolution=2, finest_resolution=64)
    assert encoding.dense(0) and not encoding.dense(1)  # 3^3 = 27 <= 64 < 65^3
    side = encoding.resolutions[1] + 1
    grid = torch.stack(torch.meshgrid(*[torch.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    index = encoding.index(grid, 1)
    assert index.min() >= 0 and index.max() < 64 and index.unique().numel() == 64  # every entry used
    first = grid[index == index[0]][:2]  # two distinct vertices in the same entry
    codes = encoding(first.float() / encoding.resolutions[1])[:, encoding.features :]  # level 1 codes
    assert not torch.equal(first[0], first[1]) and torch.equal(codes[0], codes[1])


def test_points_outside_the_cube_are_clamped_and_shapes_are_kept():
    encoding = HashEncoding(levels=3, features=2, log2_table_size=8, base_resolution=2, finest_resolution=8)
    points = torch.rand(2, 5, 3)
    assert encoding(points).shape == (2, 5, 6)
    assert torch.equal(encoding(torch.tensor([[1.5, -0.2, 0.5]])), encoding(torch.tensor([[1.0, 0.0, 0.5]])))
    with pytest.raises(ValueError, match="levels"):
        HashEncoding(levels=0)
    assert math.isfinite(encoding(points).sum().item())
