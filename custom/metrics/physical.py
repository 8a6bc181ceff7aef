"""Per-case image metrics of a reconstructed CT against its reference, in physical units (HU, mm).

These are the physical ("Track B") metrics of the evaluation protocol: both volumes are compared in
HU after clipping to :data:`WINDOW_HU`, [-1024, 1476] HU, whose width (2500 HU) is the PSNR peak and
the SSIM data range, so numbers do not depend on how a network scales its output. Each function takes
batches ``(B, 1, X, Y, Z)`` (or ``(B, X, Y, Z)``) in HU and returns one value per case, shape ``(B,)``.
:func:`bone_surface_distances` also takes the voxel spacing and gives HD95, ASSD and the Chamfer
distance between the bone surfaces in mm.

:func:`projection_psnr` compares X-rays on the display scale: the projection-consistency metric.

Degenerate cases are defined, not left to chance: identical volumes give PSNR = inf (the caller's
summary keeps it; it is never replaced by a made-up ceiling), bone Dice is 1 when neither volume has
bone and 0 when only one has, and surface distances are 0 when neither has bone and inf when only
one has.

:class:`CaseMetric` adapts any of them to MONAI's metric interface so the bundle's validation uses
them through :class:`monai.handlers.IgniteMetricHandler`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

import torch
from custom.imaging.physics import AIR_HU, BONE_HU
from monai.metrics import (
    CumulativeIterationMetric,
    SSIMMetric,
    compute_average_surface_distance,
    compute_hausdorff_distance,
)

WINDOW_HU = (AIR_HU, AIR_HU + 2500.0)  # HU; the physical metrics' window and data range
DATA_RANGE_HU = WINDOW_HU[1] - WINDOW_HU[0]
BONE_HU_LOW = 200.0  # HU; the second, lower bone threshold the protocol reports


def as_cases(volume: torch.Tensor) -> torch.Tensor:
    """(B, 1, X, Y, Z) or (B, X, Y, Z) -> (B, X, Y, Z) float64."""
    volume = torch.as_tensor(volume)
    if volume.ndim == 5:
        if volume.shape[1] != 1:
            raise ValueError(f"expected one channel, got shape {tuple(volume.shape)}.")
        volume = volume[:, 0]
    if volume.ndim != 4:
        raise ValueError(f"expected (B, 1, X, Y, Z) or (B, X, Y, Z) volumes, got shape {tuple(volume.shape)}.")
    return volume.double()


def as_case_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both volumes as (B, X, Y, Z) float64 on the prediction's device; their shapes must agree."""
    pred, target = as_cases(pred), as_cases(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and reference {tuple(target.shape)} differ in shape.")
    return pred, target.to(pred.device)


def _pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both volumes clipped to the window."""
    pred, target = as_case_pair(pred, target)
    return pred.clamp(*WINDOW_HU), target.clamp(*WINDOW_HU)


def mae_hu(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error, HU, per case."""
    pred, target = _pair(pred, target)
    return (pred - target).abs().flatten(1).mean(1)


def psnr_3d(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio over the whole volume, dB, peak = 2500 HU; inf for identical volumes."""
    pred, target = _pair(pred, target)
    mse = (pred - target).square().flatten(1).mean(1)
    return 10 * torch.log10(DATA_RANGE_HU**2 / mse)


def ssim_3d(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """3D structural similarity (Gaussian window, sigma 1.5 voxels, 11 wide) with data range 2500 HU.

    Volumes are shifted to start at 0 (SSIM's constants assume non-negative data). Needs at least 11
    voxels per side.
    """
    pred, target = _pair(pred, target)
    metric = SSIMMetric(spatial_dims=3, data_range=DATA_RANGE_HU, kernel_type="gaussian", kernel_sigma=1.5)
    return metric((pred - WINDOW_HU[0])[:, None], (target - WINDOW_HU[0])[:, None]).reshape(-1)


def bone_dice(pred: torch.Tensor, target: torch.Tensor, threshold_hu: float = BONE_HU) -> torch.Tensor:
    """Dice of the bone masks (HU > ``threshold_hu``): 1 when both are empty, 0 when only one is."""
    pred, target = _pair(pred, target)
    return mask_dice(pred > threshold_hu, target > threshold_hu)


def mask_dice(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dice of boolean masks (B, ...) per case: 1 when both are empty, 0 when only one is."""
    a, b = a.flatten(1), b.to(a.device).flatten(1)
    total = (a.sum(1) + b.sum(1)).double()
    overlap = (a & b).sum(1).double()
    return torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.ones_like(total))


def bone_surface_distances(
    pred: torch.Tensor,
    target: torch.Tensor,
    spacing: float | tuple[float, float, float],  # mm per voxel along X, Y, Z
    threshold_hu: float = BONE_HU,
) -> dict[str, torch.Tensor]:
    """Distances between the bone surfaces (HU > ``threshold_hu``) of each case, mm: ``(B,)`` each.

    ``hd95``: the symmetric 95th-percentile Hausdorff distance; ``assd``: the average symmetric surface
    distance; ``chamfer``: the sum of the two directed mean surface distances. MONAI's surface
    distance utilities compute them on the masks' boundary voxels with the voxel ``spacing``. Both
    volumes without bone give 0; bone in only one gives inf.
    """
    pred, target = as_case_pair(pred, target)
    a, b = (pred > threshold_hu)[:, None], (target > threshold_hu)[:, None]  # (B, 1, X, Y, Z)
    has_a, has_b = a.flatten(1).any(1), b.flatten(1).any(1)
    both, neither = has_a & has_b, ~(has_a | has_b)
    spacing = tuple(spacing) if isinstance(spacing, (tuple, list)) else (float(spacing),) * 3
    result = {name: torch.where(neither, 0.0, torch.inf).double() for name in ("hd95", "assd", "chamfer")}
    if both.any():
        a, b = a[both], b[both]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "monai.metrics.utils get_mask_edges", FutureWarning)  # MONAI's own call
            hd95 = compute_hausdorff_distance(a, b, include_background=True, percentile=95, spacing=spacing)
            assd = compute_average_surface_distance(a, b, include_background=True, symmetric=True, spacing=spacing)
            forward = compute_average_surface_distance(a, b, include_background=True, spacing=spacing)
            backward = compute_average_surface_distance(b, a, include_background=True, spacing=spacing)
        for name, value in (("hd95", hd95), ("assd", assd), ("chamfer", forward + backward)):
            result[name][both] = value.reshape(-1).double().cpu()
    return result


def projection_psnr(pred_views: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """PSNR between two sets of X-rays (B, 2, H, W) on the display scale [0, 1] (peak 1), dB, per case.

    The projection-consistency metric compares the DRRs of a reconstruction with the input views;
    identical views give inf.
    """
    pred_views, views = torch.as_tensor(pred_views).double(), torch.as_tensor(views).double()
    if pred_views.ndim != 4 or pred_views.shape != views.shape:
        raise ValueError(f"expected two (B, 2, H, W) batches, got {tuple(pred_views.shape)} and {tuple(views.shape)}.")
    mse = (pred_views.clamp(0, 1) - views.to(pred_views.device).clamp(0, 1)).square().flatten(1).mean(1)
    return -10 * torch.log10(mse)


CASE_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "psnr_3d": psnr_3d,
    "ssim_3d": ssim_3d,
    "mae_hu": mae_hu,
    "bone_dice": bone_dice,
    "bone_dice_200": partial(bone_dice, threshold_hu=BONE_HU_LOW),
}


def case_metrics(pred: torch.Tensor, target: torch.Tensor) -> list[dict[str, float]]:
    """Every metric of :data:`CASE_METRICS` for each case of a batch, as plain floats."""
    values = {name: function(pred, target).tolist() for name, function in CASE_METRICS.items()}
    return [dict(zip(values, case)) for case in zip(*values.values())]


class CaseMetric(CumulativeIterationMetric):
    """One per-case function above as a MONAI cumulative metric whose aggregate is the mean over cases.

    Use it as ``metric_fn`` of :class:`monai.handlers.IgniteMetricHandler`; in distributed runs MONAI
    gathers every rank's cases before the mean.

    Args:
        function: a name in :data:`CASE_METRICS` or a callable ``(pred, target) -> (B,)``.
    """

    def __init__(self, function: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.function = CASE_METRICS[function] if isinstance(function, str) else function

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.function(y_pred, y)[:, None]  # (B, 1)

    def aggregate(self) -> torch.Tensor:
        values = self.get_buffer()
        if not isinstance(values, torch.Tensor):
            raise ValueError("the metric has no values yet.")
        return values.mean()


__all__ = [
    "BONE_HU_LOW",
    "as_case_pair",
    "as_cases",
    "bone_surface_distances",
    "CASE_METRICS",
    "DATA_RANGE_HU",
    "WINDOW_HU",
    "CaseMetric",
    "bone_dice",
    "case_metrics",
    "mae_hu",
    "mask_dice",
    "projection_psnr",
    "psnr_3d",
    "ssim_3d",
]
