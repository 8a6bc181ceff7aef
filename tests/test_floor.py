from __future__ import annotations

import pytest
import torch
from custom.imaging.geometry import BiplanarGeometry
from custom.networks.floor import VoxelwiseLinearFloor, fit_floor
from custom.networks.folding import depth_to_space, space_to_depth
from custom.networks.psctnet import psctnet
from custom.networks.refine import GuidedRefinement

GEOMETRY = BiplanarGeometry(vol_shape=(16,) * 3, vol_spacing=12.0, det_shape=(16, 16))
HALF = 1e-3  # relative precision of the half-precision maps


def _cases(n: int, make_label) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    views = [torch.rand(1, 2, 16, 16, generator=generator) for _ in range(n)]
    return [{"image": v, "label": make_label(v)} for v in views]


def test_the_fit_recovers_a_known_gain_and_offset_per_voxel():
    floor = VoxelwiseLinearFloor(GEOMETRY)
    gain = torch.linspace(-0.5, 0.8, 16**3).reshape(1, 1, 16, 16, 16)
    offset = torch.linspace(0.1, 0.3, 16**3).reshape(1, 1, 16, 16, 16).flip(-1)
    cases = _cases(6, lambda v: gain * floor.prior(v) + offset)
    floor.fit(cases)
    assert torch.allclose(floor.gain.float(), gain, atol=2e-3, rtol=HALF)
    assert torch.allclose(floor.offset.float(), offset, atol=2e-3, rtol=HALF)
    assert torch.allclose(floor(cases[0]["image"]), cases[0]["label"], atol=5e-3)


def test_the_atlas_floor_is_the_mean_label_whatever_the_views():
    floor = VoxelwiseLinearFloor(GEOMETRY, kind="atlas")
    cases = _cases(4, lambda v: torch.rand(1, 1, 16, 16, 16))
    floor.fit(cases)
    mean = torch.stack([c["label"] for c in cases]).mean(0)
    assert torch.equal(floor.gain, torch.zeros_like(floor.gain))
    assert torch.allclose(floor(torch.rand(3, 2, 16, 16)), mean.expand(3, -1, -1, -1, -1), atol=1e-3)


def test_a_voxel_whose_prior_never_varies_gets_the_mean_label():
    floor = VoxelwiseLinearFloor(GEOMETRY)
    views = torch.rand(1, 2, 16, 16)
    cases = [{"image": views, "label": torch.full((1, 1, 16, 16, 16), value)} for value in (0.2, 0.4)]
    floor.fit(cases)  # the same views twice: no variance anywhere, so no gain
    assert torch.equal(floor.gain, torch.zeros_like(floor.gain))
    assert torch.allclose(floor.offset.float(), torch.full_like(floor.offset.float(), 0.3), atol=1e-3)


def test_ill_arg_floor():
    with pytest.raises(ValueError):
        VoxelwiseLinearFloor(GEOMETRY, kind="median")
    with pytest.raises(ValueError):
        VoxelwiseLinearFloor(GEOMETRY).fit([])


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "kind"), [("psctnet", "voxelwise"), ("x2ct", "atlas")])
@pytest.mark.parametrize("decode_factor", [1, 2])
def test_an_untrained_generator_reproduces_its_fitted_floor_exactly(variant, kind, decode_factor):
    torch.manual_seed(0)
    model = psctnet("tiny", GEOMETRY, variant, decode_factor=decode_factor, channels=(4, 8))
    assert model.floor.kind == kind
    cases = _cases(4, lambda v: model.floor.prior(v) * 0.7 + torch.rand(1, 1, 16, 16, 16) * 0.2)
    fit_floor(model, cases)
    views = torch.rand(2, 2, 16, 16)
    expected = model.floor(views)
    assert expected.abs().max() > 0
    assert torch.allclose(model.train()(views), expected, atol=1e-6)  # step 0: the correction is zero
    with torch.no_grad():
        assert torch.allclose(model.eval()(views), expected.clamp(0, 1), atol=1e-6)


def test_the_paper_head_is_a_sigmoid_without_floor_and_cannot_decode_coarse():
    model = psctnet("tiny", GEOMETRY, residual=False).eval()
    assert model.floor is None
    with torch.no_grad():
        ct = model(torch.rand(1, 2, 16, 16))
    assert 0 < ct.min() and ct.max() < 1
    with pytest.raises(ValueError):
        psctnet("tiny", GEOMETRY, residual=False, decode_factor=2)
    assert fit_floor(model, []) is model  # nothing to fit, nothing read


def test_folding_is_lossless_and_matches_pixel_unshuffle_in_2d():
    views, volume = torch.rand(2, 3, 8, 12), torch.rand(1, 2, 8, 4, 12)
    assert torch.equal(space_to_depth(views, 4), torch.nn.functional.pixel_unshuffle(views, 4))
    assert torch.equal(depth_to_space(space_to_depth(volume, 4), 4), volume)
    assert torch.equal(space_to_depth(volume, 2)[0, 1 * 8 + 5, 1, 0, 3], volume[0, 1, 3, 0, 7])  # offset (1, 0, 1)
    with pytest.raises(ValueError):
        space_to_depth(volume, 3)
    with pytest.raises(ValueError):
        depth_to_space(torch.rand(1, 9, 2, 2, 2), 2)


def test_the_guided_refinement_is_the_local_linear_combination_of_its_guides():
    refine = GuidedRefinement(in_channels=3, guides=2, factor=2)
    assert torch.equal(refine(torch.rand(1, 3, 4, 4, 4), [torch.rand(1, 1, 8, 8, 8)] * 2), torch.zeros(1, 1, 8, 8, 8))
    detail = torch.arange(8.0).reshape(2, 2, 2) / 100  # d: the same 2 x 2 x 2 pattern in every coarse voxel
    with torch.no_grad():  # constant coefficients a_1, a_2, b and the detail channels
        refine.coefficients.bias.copy_(torch.cat([torch.tensor([0.5, -2.0, 0.25]), detail.flatten()]))
    first, second = torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8)
    out = refine(torch.rand(1, 3, 4, 4, 4), [first, second])
    expected = 0.5 * first - 2.0 * second + 0.25 + detail.repeat(4, 4, 4)
    assert torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(ValueError):
        refine(torch.rand(1, 3, 4, 4, 4), [first])
    with pytest.raises(ValueError):
        GuidedRefinement(3, 2, factor=0)
