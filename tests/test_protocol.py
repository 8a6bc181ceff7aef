from __future__ import annotations

import math

import pytest
import torch
from custom.data.simulate import SimulateBiplanarXRay
from custom.imaging.geometry import BiplanarGeometry
from custom.metrics.paper import ZERO_ERROR_PSNR_DB
from custom.metrics.protocol import TRACK_A, TRACK_B, CaseEvaluator, summarise
from custom.phantom import make_phantom

GEOMETRY = BiplanarGeometry().resampled((48, 48, 48), (48, 48))  # 4 mm voxels: an infant vault still shows


@pytest.fixture(scope="module")
def head() -> torch.Tensor:
    return make_phantom(0, GEOMETRY).hu  # (X, Y, Z) HU


def test_drrs_are_the_simulated_input_views_of_the_same_ct(head):
    views = SimulateBiplanarXRay(GEOMETRY)(head)
    assert torch.allclose(CaseEvaluator(GEOMETRY).drr(head), views, atol=1e-6)


def test_a_perfect_reconstruction_scores_the_defined_ideal_on_every_metric(head):
    evaluate = CaseEvaluator(GEOMETRY)
    result = evaluate(head[None], head, evaluate.drr(head))
    assert list(result["track_a"]) == list(TRACK_A) and list(result["track_b"]) == list(TRACK_B)
    a, b = result["track_a"], result["track_b"]
    assert a["psnr_slices"] == ZERO_ERROR_PSNR_DB and a["psnr_3d_bone"] == math.inf
    assert a["ssim_slices"] == pytest.approx(1.0)
    assert b["psnr_3d"] == math.inf and b["projection_psnr"] == math.inf and b["mae_hu"] == 0
    assert b["bone_dice"] == b["bone_dice_200"] == 1.0
    assert b["hd95_mm"] == b["assd_mm"] == b["chamfer_mm"] == 0.0


def test_a_worse_reconstruction_scores_worse_on_every_metric(head):
    evaluate = CaseEvaluator(GEOMETRY)
    views = evaluate.drr(head)
    shrunk = torch.nn.functional.interpolate(head[None, None], scale_factor=0.75, mode="trilinear")[0, 0]
    worse = torch.full_like(head, -1024.0)  # the head shrunk by a quarter about the centre
    start = (head.shape[0] - shrunk.shape[0]) // 2
    worse[start : start + shrunk.shape[0], start : start + shrunk.shape[1], start : start + shrunk.shape[2]] = shrunk
    slightly = head.roll(1, 0)  # the head moved by one voxel
    good, bad = evaluate(slightly, head, views), evaluate(worse, head, views)
    for name in ("psnr_slices", "psnr_3d_bone", "ssim_slices", "psnr_slices_x2ct_peak4095"):
        assert good["track_a"][name] > bad["track_a"][name], name
    for name in ("psnr_3d", "ssim_3d", "bone_dice", "bone_dice_200", "projection_psnr"):
        assert good["track_b"][name] > bad["track_b"][name], name
    for name in ("mae_hu", "hd95_mm", "assd_mm", "chamfer_mm"):
        assert good["track_b"][name] < bad["track_b"][name], name
    assert good["track_b"]["hd95_mm"] == pytest.approx(GEOMETRY.vol_spacing)  # one voxel, in mm


def test_an_empty_reconstruction_has_black_drrs_and_no_views_give_nan(head):
    evaluate = CaseEvaluator(GEOMETRY)
    air = torch.full_like(head, -1024.0)
    assert evaluate.drr(air).abs().max() == 0
    result = evaluate(air, head, evaluate.drr(head))
    assert math.isfinite(result["track_b"]["projection_psnr"]) and result["track_b"]["hd95_mm"] == math.inf
    assert math.isnan(evaluate(head, head)["track_b"]["projection_psnr"])


def test_cts_off_the_grid_are_refused(head):
    with pytest.raises(ValueError, match="grid"):
        CaseEvaluator(GEOMETRY)(head[:16], head[:16])


def test_summary_statistics_and_an_infinite_value():
    assert summarise([1.0, 2.0, 6.0]) == {
        "mean": 3.0,
        "std": pytest.approx(math.sqrt(14 / 3)),
        "median": 2.0,
        "min": 1.0,
        "max": 6.0,
    }
    infinite = summarise([1.0, math.inf])
    assert infinite["mean"] == math.inf and math.isnan(infinite["std"]) and infinite["max"] == math.inf
