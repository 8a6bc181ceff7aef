from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from custom.metrics.paper import X2CT_PEAK, bone_only, bone_psnr_3d, paper_metrics, slice_psnr, slice_ssim


def test_bone_only_keeps_bone_on_the_0_to_2500_scale_and_makes_the_rest_air():
    hu = torch.tensor([-1024.0, 0.0, 200.0, 201.0, 1000.0, 3000.0])
    assert bone_only(hu).tolist() == [0.0, 0.0, 0.0, 201.0, 1000.0, 2500.0]


def test_slice_psnr_by_hand_with_zero_error_slices_at_100_db():
    target = torch.full((1, 1, 4, 4, 4), -1000.0)
    pred = target.clone()
    pred[0, 0, 0, 0, 0] = 1000.0  # one bone voxel of error 1000 on the 0-2500 scale
    # along each axis: 1 of 4 slices has MSE 1000^2 / 16, the other 3 are perfect (100 dB)
    wrong = 10 * math.log10(2500**2 / (1000**2 / 16))
    assert slice_psnr(pred, target).item() == pytest.approx((wrong + 3 * 100) / 4)
    x2ct = 10 * math.log10(X2CT_PEAK**2 / (1000**2 / 16))
    assert slice_psnr(pred, target, X2CT_PEAK).item() == pytest.approx((x2ct + 3 * 100) / 4)
    assert bone_psnr_3d(pred, target).item() == pytest.approx(10 * math.log10(2500**2 / (1000**2 / 64)))


def test_soft_tissue_errors_do_not_count_in_track_a():
    target = torch.full((1, 1, 8, 8, 8), 40.0)  # all soft tissue: air on the bone-only scale
    pred = target + 100.0  # still below 200 HU
    assert slice_psnr(pred, target).item() == 100.0
    assert bone_psnr_3d(pred, target).item() == math.inf
    assert slice_ssim(pred, target).item() == pytest.approx(1.0)


def test_slice_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    torch.manual_seed(0)
    target = torch.rand(1, 1, 10, 12, 9) * 2000 - 500
    pred = target + 300 * torch.randn_like(target)
    a, b = bone_only(pred[0, 0]).numpy(), bone_only(target[0, 0]).numpy()
    expected = np.mean(
        [
            np.mean(
                [
                    metrics.structural_similarity(np.take(a, i, axis), np.take(b, i, axis), data_range=2500)
                    for i in range(a.shape[axis])
                ]
            )
            for axis in range(3)
        ]
    )
    assert slice_ssim(pred, target).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_paper_metrics_reports_each_case():
    target = torch.rand(2, 1, 8, 8, 8) * 2000
    values = paper_metrics(target, target)
    assert [v["psnr_slices"] for v in values] == [100.0, 100.0]
    assert all(v["psnr_3d_bone"] == math.inf and v["ssim_slices"] == pytest.approx(1.0) for v in values)
    with pytest.raises(ValueError, match="at least 7 voxels"):
        slice_ssim(torch.zeros(1, 6, 8, 8), torch.zeros(1, 6, 8, 8))
