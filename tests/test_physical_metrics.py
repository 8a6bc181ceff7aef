from __future__ import annotations

import math

import pytest
import torch
from custom.metrics.physical import (
    CASE_METRICS,
    DATA_RANGE_HU,
    WINDOW_HU,
    CaseMetric,
    bone_dice,
    bone_surface_distances,
    case_metrics,
    mae_hu,
    projection_psnr,
    psnr_3d,
    ssim_3d,
)
from monai.metrics import SSIMMetric


def test_window_is_air_to_dense_bone_2500_hu_wide():
    assert WINDOW_HU == (-1024.0, 1476.0) and DATA_RANGE_HU == 2500.0


def test_mae_and_psnr_by_hand():
    target = torch.zeros(1, 1, 4, 4, 4)
    pred = target.clone()
    pred[0, 0, 0, 0, 0] = 640.0  # one voxel of 64 off by 640 HU
    assert mae_hu(pred, target).item() == pytest.approx(10.0)
    assert psnr_3d(pred, target).item() == pytest.approx(10 * math.log10(2500**2 / (640**2 / 64)))


def test_values_outside_the_window_are_clipped_before_comparing():
    target = torch.full((1, 1, 4, 4, 4), 1476.0)
    assert mae_hu(target + 1000, target).item() == 0  # beyond the window: the same
    assert mae_hu(torch.full_like(target, -3000.0), torch.full_like(target, -1024.0)).item() == 0


def test_identical_volumes_are_perfect_and_dice_of_two_empty_masks_is_one():
    volume = torch.rand(2, 1, 12, 12, 12) * 2000 - 1024
    values = case_metrics(volume, volume)
    assert len(values) == 2 and all(v["psnr_3d"] == math.inf and v["mae_hu"] == 0 for v in values)
    assert all(v["ssim_3d"] == pytest.approx(1.0) for v in values)
    air = torch.full((1, 1, 12, 12, 12), -1000.0)
    assert bone_dice(air, air).item() == 1.0
    bone = air.clone()
    bone[..., :6] = 1000.0
    assert bone_dice(bone, air).item() == 0.0 and bone_dice(air, bone).item() == 0.0


def test_bone_dice_by_hand():
    target = torch.full((1, 1, 4, 4, 4), -1000.0)
    pred = target.clone()
    target[..., :2] = 700.0  # 32 bone voxels
    pred[..., 1:3] = 700.0  # 32 bone voxels, 16 shared
    assert bone_dice(pred, target).item() == pytest.approx(2 * 16 / 64)
    assert bone_dice(pred, target, threshold_hu=800.0).item() == 1.0  # no bone at 800 HU in either


def test_bone_dice_at_200_hu_counts_the_voxels_between_200_and_300_hu():
    target = torch.full((1, 1, 4, 4, 4), -1000.0)
    target[..., :2] = 700.0  # 32 voxels of bone at either threshold
    pred = target.clone()
    pred[..., 2] = 250.0  # 16 voxels that are bone at 200 HU only
    assert CASE_METRICS["bone_dice"](pred, target).item() == 1.0
    assert CASE_METRICS["bone_dice_200"](pred, target).item() == pytest.approx(2 * 32 / (48 + 32))


def test_projection_psnr_by_hand_and_for_identical_views():
    views = torch.full((2, 2, 8, 8), 0.5)
    off = views.clone()
    off[0, 0, :4] = 0.6  # case 0: half of one view, a quarter of both views, off by 0.1
    assert projection_psnr(off, views).tolist() == pytest.approx([-10 * math.log10(0.01 / 4), math.inf])
    with pytest.raises(ValueError, match="B, 2, H, W"):
        projection_psnr(views[0], views[0])


def test_ssim_matches_monai_on_the_shifted_window():
    torch.manual_seed(0)
    target = torch.rand(1, 1, 16, 16, 16) * 2500 - 1024
    pred = target + 100 * torch.randn_like(target)
    reference = SSIMMetric(3, data_range=2500, kernel_type="gaussian", kernel_sigma=1.5)
    expected = reference(pred.clamp(*WINDOW_HU) + 1024, target + 1024)
    assert ssim_3d(pred, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert 0 < ssim_3d(pred, target).item() < 1


def test_case_metric_aggregates_the_mean_over_cases_and_batches():
    metric = CaseMetric("mae_hu")
    target = torch.zeros(2, 1, 4, 4, 4)
    metric(target + torch.tensor([10.0, 30.0]).view(2, 1, 1, 1, 1), target)
    metric([target[0] + 50.0], [target[0]])  # a decollated batch of one
    assert metric.aggregate().item() == pytest.approx(30.0)


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="differ in shape"):
        mae_hu(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 5))
    with pytest.raises(ValueError, match="one channel"):
        mae_hu(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4))


def test_bone_surface_distances_of_a_cube_moved_one_voxel():
    target = torch.full((1, 1, 12, 12, 12), -1000.0)
    target[..., 3:7, 3:7, 3:7] = 1000.0
    pred = torch.roll(target, 1, dims=2)  # one voxel along x, 2 mm
    same = bone_surface_distances(target, target, spacing=(2.0, 1.0, 1.0))
    assert all(value.item() == 0 for value in same.values())
    moved = bone_surface_distances(pred, target, spacing=(2.0, 1.0, 1.0))
    assert 0 < moved["hd95"].item() <= 2.0 and 0 < moved["assd"].item() < 2.0
    assert moved["chamfer"].item() == pytest.approx(2 * moved["assd"].item())  # equal directed means here
    wider = bone_surface_distances(pred, target, spacing=(4.0, 1.0, 1.0))
    assert wider["hd95"].item() == pytest.approx(2 * moved["hd95"].item())  # distances scale with the spacing


def test_bone_surface_distances_without_bone():
    air = torch.full((2, 1, 8, 8, 8), -1000.0)
    bone = air.clone()
    bone[1, :, 2:5, 2:5, 2:5] = 800.0
    result = bone_surface_distances(bone, air, spacing=1.5)
    assert result["hd95"].tolist() == [0.0, math.inf] and result["chamfer"].tolist() == [0.0, math.inf]
