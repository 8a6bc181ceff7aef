"""Head localisation: the skull despite couch, neck and shoulders; fallbacks; connected components."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from ct_cases import HEAD_CENTRE, MARKER, as_ct, grid, head_hu, skull_box
from custom.data.canonicalise import CanonicaliseCT
from custom.data.head import connected_components
from custom.imaging.geometry import BiplanarGeometry


def test_head_is_centred_and_oriented_despite_couch_and_neck(synthetic_head):
    volume, affine = synthetic_head
    geometry = BiplanarGeometry(vol_shape=(48, 48, 48), vol_spacing=3.0)
    canonical = CanonicaliseCT(geometry)(as_ct(volume, affine))
    assert canonical.shape == (1, 48, 48, 48) and canonical.dtype == torch.float32
    np.testing.assert_allclose(canonical.affine.numpy(), geometry.affine)
    assert canonical.meta["head_located_by"] == "bone" and not canonical.meta["skull_exceeds_fov"]
    assert not canonical.meta["no_air"]
    np.testing.assert_allclose(canonical.meta["head_centre"], HEAD_CENTRE, atol=1.5)  # not pulled by couch or neck

    lower, upper = skull_box(canonical)
    np.testing.assert_allclose((lower + upper) / 2, 23.5, atol=1.0)  # within one voxel of the grid centre

    # the marker at the patient's left, anterior, superior: low x, high y, high z
    marker = np.argwhere(canonical[0].numpy() > 1600).mean(axis=0)
    np.testing.assert_allclose(marker, 23.5 + MARKER / 3.0, atol=1.0)
    assert marker[0] < 23.5 < marker[1] and marker[2] > 23.5


def test_a_scan_down_to_the_shoulders_keeps_the_vertex_in_the_grid():
    world, affine = grid((48, 48, 120), 3.0, centre=(20, -15, -100))  # 360 mm, from the vertex down
    volume = head_hu(world, spine=True)
    geometry = BiplanarGeometry(vol_shape=(48, 48, 48), vol_spacing=3.0)
    canonical = CanonicaliseCT(geometry)(as_ct(volume, affine))
    box = canonical.meta["head_box"]
    assert box[1, 2] - box[0, 2] == pytest.approx(0.9 * 144, abs=3.0)  # the cranial 90 % of the grid's height
    assert box[1, 2] == pytest.approx(HEAD_CENTRE[2] + 45, abs=3.0)  # the top is the vertex
    vertex = max(np.nonzero((canonical[0].numpy() > 300).any(axis=(0, 1)))[0])
    assert 44 <= vertex <= 46  # a few voxels below the top of the grid
    assert canonical[0, :, :, 0].numpy().max() > 300  # the spine leaves through the bottom


def test_fallbacks_without_bone_or_body(caplog):
    world, affine = grid((24, 24, 24), 4.0)
    soft = np.where(np.linalg.norm(world - [10, 0, 0], axis=-1) < 30, 40.0, -1000.0)  # a ball of soft tissue
    geometry = BiplanarGeometry(vol_shape=(16, 16, 16), vol_spacing=4.0)
    with caplog.at_level(logging.WARNING, logger="custom.data.canonicalise"):
        body = CanonicaliseCT(geometry)(as_ct(soft, affine))
        air = CanonicaliseCT(geometry)(as_ct(np.full((24, 24, 24), -1000.0), affine))
    assert body.meta["head_located_by"] == "body"
    np.testing.assert_allclose(body.meta["head_centre"], [10, 0, 0], atol=2.0)
    assert air.meta["head_located_by"] == "volume" and torch.all(air == -1000)
    np.testing.assert_allclose(air.meta["head_centre"], 0, atol=1e-9)
    assert "centred on the body" in caplog.text and "centred on the volume" in caplog.text


def test_connected_components_number_by_size():
    mask = torch.zeros(8, 9, 10, dtype=torch.bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[5:8, 0:9, 9] = True  # 27 voxels touching the border, separate
    mask[0:2, 6:9, 0:5] = True  # 30 voxels
    mask[4, 4, 4] = mask[4, 5, 5] = True  # diagonal neighbours: not face-connected
    labels, sizes = connected_components(mask)
    assert sizes.tolist() == [30, 27, 27, 1, 1]
    assert torch.all(labels[0:2, 6:9, 0:5] == 0) and torch.all(labels[~mask] == -1)
    assert labels[4, 4, 4] != labels[4, 5, 5]
    empty_labels, empty_sizes = connected_components(torch.zeros(3, 3, 3, dtype=torch.bool))
    assert len(empty_sizes) == 0 and torch.all(empty_labels == -1)
