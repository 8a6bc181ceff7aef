from __future__ import annotations

import numpy as np
import pytest
import torch
from custom.outputs.bone_render import bone_surface


def _volume_with(box: tuple[slice, slice, slice]) -> torch.Tensor:
    hu = torch.full((16, 16, 16), -1000.0)
    hu[box] = 1000.0
    return hu


def test_a_flat_face_towards_the_viewer_is_evenly_lit_and_nothing_else_shows():
    hu = _volume_with((slice(4, 8), slice(10, 12), slice(2, 14)))  # X right..left 4-7, anterior slab, Z 2-13
    image = bone_surface(hu, "frontal")
    assert image.shape == (16, 16)
    lit = image > 0
    # rows run superior -> inferior (Z 15 .. 0), columns patient's right -> left (X 15 .. 0)
    assert np.array_equal(np.argwhere(lit.any(1)).ravel(), np.arange(16 - 14, 16 - 2))
    assert np.array_equal(np.argwhere(lit.any(0)).ravel(), np.arange(16 - 8, 16 - 4))
    inner = image[4:12, 9:11]
    assert np.allclose(inner, inner[0, 0]) and inner[0, 0] == pytest.approx((0.25 + 0.75) * (1 - 0.5 * 4 / 16))


def test_nearer_surfaces_are_brighter_and_the_lateral_view_puts_the_face_on_the_left():
    near = bone_surface(_volume_with((slice(0, 3), slice(2, 14), slice(2, 14))), "lateral")  # at the patient's left
    far = bone_surface(_volume_with((slice(12, 15), slice(2, 14), slice(2, 14))), "lateral")
    assert near.max() > far.max() > 0
    face = bone_surface(_volume_with((slice(0, 16), slice(12, 16), slice(0, 16))), "lateral")  # anterior block
    assert face[:, :4].min() > 0 and face[:, 4:].max() == 0


def test_no_bone_renders_black_and_unknown_views_are_refused():
    assert bone_surface(torch.zeros(1, 8, 8, 8), "frontal").max() == 0
    with pytest.raises(ValueError, match="view"):
        bone_surface(torch.zeros(8, 8, 8), "axial")
