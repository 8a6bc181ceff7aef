"""Paper-compatible ("Track A") metrics, to set beside PSCT-Net's and X2CT-GAN's published numbers.

Published numbers in this field use conventions that do not measure physical accuracy, so they live
here, apart from the physical metrics of :mod:`custom.metrics.physical`, under names that say what they are:

- the target is **bone only**: voxels above 200 HU keep their value, clipped to [0, 2500], every other
  voxel becomes air = 0 (:func:`bone_only`); the prediction goes through the same mapping;
- :func:`slice_psnr`: PSNR of every slice along each of the three axes, a zero-error slice counted as
  100 dB, averaged over the slices and then over the axes (PSCT-Net's "PSNR"), peak 2500; with
  ``peak=4095`` it is the X2CT-GAN convention (+4.3 dB for the same error);
- :func:`bone_psnr_3d`: PSNR from the whole-volume MSE of the bone-only volumes, peak 2500 (inf for
  identical volumes);
- :func:`slice_ssim`: SSIM of every slice along each axis with a 7 x 7 uniform window (the
  scikit-image default: sample covariance, K1 = 0.01, K2 = 0.03, data range 2500), averaged over
  the slices and then over the axes.

Each function takes ``(B, 1, X, Y, Z)`` or ``(B, X, Y, Z)`` CTs in HU and returns ``(B,)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from custom.metrics.physical import as_case_pair

BONE_ONLY_HU = 200.0  # HU; the bone-only target keeps voxels above it
PEAK = 2500.0  # the [0, 2500] scale's peak
X2CT_PEAK = 4095.0  # X2CT-GAN's and PerX2CT's PSNR peak
ZERO_ERROR_PSNR_DB = 100.0  # a slice without error, as the published metric code counts it
SSIM_WINDOW = 7  # pixels


def bone_only(hu: torch.Tensor) -> torch.Tensor:
    """Voxels above 200 HU clipped to [0, 2500]; every other voxel air (0). Same shape."""
    return torch.where(hu > BONE_ONLY_HU, hu.clamp(0.0, PEAK), torch.zeros_like(hu))


def _bone_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = as_case_pair(pred, target)
    return bone_only(pred), bone_only(target)


def _slices(volume: torch.Tensor, axis: int) -> torch.Tensor:
    """(B, X, Y, Z) -> (B, S, H, W): the slices along spatial ``axis`` (0, 1 or 2)."""
    return volume.movedim(axis + 1, 1)


def slice_psnr(pred: torch.Tensor, target: torch.Tensor, peak: float = PEAK) -> torch.Tensor:
    """Mean over the 3 axes of the mean slice PSNR (zero-error slices = 100 dB) of the bone-only volumes, dB."""
    pred, target = _bone_pair(pred, target)
    per_axis = []
    for axis in range(3):
        mse = (_slices(pred, axis) - _slices(target, axis)).square().flatten(2).mean(2)  # (B, S)
        psnr = 10 * torch.log10(peak**2 / mse.clamp(min=torch.finfo(mse.dtype).tiny))
        per_axis.append(torch.where(mse > 0, psnr, torch.full_like(mse, ZERO_ERROR_PSNR_DB)).mean(1))
    return torch.stack(per_axis).mean(0)


def bone_psnr_3d(pred: torch.Tensor, target: torch.Tensor, peak: float = PEAK) -> torch.Tensor:
    """PSNR of the bone-only volumes from their whole-volume MSE, dB; inf for identical volumes."""
    pred, target = _bone_pair(pred, target)
    return 10 * torch.log10(peak**2 / (pred - target).square().flatten(1).mean(1))


def _ssim_2d(a: torch.Tensor, b: torch.Tensor, data_range: float) -> torch.Tensor:
    """Mean SSIM of image pairs (N, H, W) over the window positions inside the images: (N,)."""
    n = SSIM_WINDOW**2
    a, b = a[:, None], b[:, None]

    def mean(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, SSIM_WINDOW, stride=1)

    mu_a, mu_b = mean(a), mean(b)
    correction = n / (n - 1)  # sample (co)variances, as scikit-image
    var_a = (mean(a * a) - mu_a**2) * correction
    var_b = (mean(b * b) - mu_b**2) * correction
    cov = (mean(a * b) - mu_a * mu_b) * correction
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim.flatten(1).mean(1)


def slice_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the 3 axes of the mean slice SSIM (7 x 7 uniform window, data range 2500), bone only.

    Needs at least 7 voxels per side.
    """
    pred, target = _bone_pair(pred, target)
    if min(pred.shape[1:]) < SSIM_WINDOW:
        raise ValueError(f"slice SSIM needs at least {SSIM_WINDOW} voxels per side, got {tuple(pred.shape[1:])}.")
    per_axis = []
    for axis in range(3):
        a, b = _slices(pred, axis), _slices(target, axis)  # (B, S, H, W)
        values = _ssim_2d(a.flatten(0, 1), b.flatten(0, 1), PEAK)
        per_axis.append(values.reshape(a.shape[:2]).mean(1))
    return torch.stack(per_axis).mean(0)


def paper_metrics(pred: torch.Tensor, target: torch.Tensor) -> list[dict[str, float]]:
    """Every Track A number for each case of a batch, as plain floats."""
    values = {
        "psnr_slices": slice_psnr(pred, target).tolist(),
        "psnr_3d_bone": bone_psnr_3d(pred, target).tolist(),
        "ssim_slices": slice_ssim(pred, target).tolist(),
        "psnr_slices_x2ct_peak4095": slice_psnr(pred, target, X2CT_PEAK).tolist(),
    }
    return [dict(zip(values, case)) for case in zip(*values.values())]


__all__ = [
    "BONE_ONLY_HU",
    "PEAK",
    "SSIM_WINDOW",
    "X2CT_PEAK",
    "ZERO_ERROR_PSNR_DB",
    "bone_only",
    "bone_psnr_3d",
    "paper_metrics",
    "slice_psnr",
    "slice_ssim",
]
