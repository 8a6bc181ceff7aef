"""The evaluation protocol for one case: every Track A and Track B number, named as the reports name them.

The protocol (``ARCHITECTURE.md`` section 6) is shared by the bundle's ``evaluate`` workflow
(:class:`custom.metrics.report.CaseMetricsReport`) and the side-by-side benchmark
(:mod:`custom.benchmark`), so both report the same quantities computed the same way:

- Track A, paper-compatible (:mod:`custom.metrics.paper`): bone-only target on [0, 2500]; slice PSNR
  (zero-error slices 100 dB), bone PSNR3D and slice SSIM, plus slice PSNR with X2CT-GAN's peak 4095
  under its own name;
- Track B, physical (:mod:`custom.metrics.physical`): PSNR3D over [-1024, 1476] HU, 3D SSIM, MAE in HU, bone
  Dice at 300 and 200 HU, HD95 / ASSD / Chamfer distance between the bone surfaces in mm (the
  geometry's voxel spacing), and projection consistency: the PSNR between the input X-rays and the
  reconstruction's DRRs, simulated with the ideal detector of the same geometry.

A reconstruction with nothing to project (all air) gets black DRRs, so its projection PSNR is finite
and poor rather than an error.
"""

from __future__ import annotations

import math
import statistics

import torch
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.physics import hu_to_mu, normalise_radiograph
from custom.imaging.projector import Projector
from custom.metrics.paper import paper_metrics
from custom.metrics.physical import as_case_pair, bone_surface_distances, case_metrics, projection_psnr

TRACK_A = ("psnr_slices", "psnr_3d_bone", "ssim_slices", "psnr_slices_x2ct_peak4095")
TRACK_B = (
    "psnr_3d",
    "ssim_3d",
    "mae_hu",
    "bone_dice",
    "bone_dice_200",
    "hd95_mm",
    "assd_mm",
    "chamfer_mm",
    "projection_psnr",
)
TRACKS = {"track_a": TRACK_A, "track_b": TRACK_B}
LOWER_IS_BETTER = frozenset({"mae_hu", "hd95_mm", "assd_mm", "chamfer_mm"})  # every other metric: higher is better


class CaseEvaluator:
    """Track A and Track B metrics of one reconstructed case against its reference CT.

    Args:
        geometry: the acquisition: the CT grid's voxel spacing (mm) for the surface distances and the
            projector for the DRRs. Defaults to ``BiplanarGeometry()``.

    Call with ``pred`` and ``target``: (1, X, Y, Z) or (X, Y, Z) CTs in HU on the geometry's grid, and
    ``views``: the (2, H, W) input X-rays in [0, 1], or None (projection PSNR is then NaN). Returns
    ``{"track_a": {name: value}, "track_b": {name: value}}`` with the names of :data:`TRACKS`.
    """

    def __init__(self, geometry: BiplanarGeometry | None = None) -> None:
        self.geometry = geometry or BiplanarGeometry()
        self.projector = Projector(self.geometry)

    @torch.no_grad()
    def drr(self, hu: torch.Tensor) -> torch.Tensor:
        """The X-rays (2, H, W) in [0, 1] an ideal detector records of a CT (1, X, Y, Z) or (X, Y, Z) in HU.

        An ideal detector's log image is the line integrals themselves, normalised as real X-rays are;
        a CT with nothing to project gives black images.

        Raises:
            ValueError: a CT off the geometry's grid.
        """
        volume = torch.as_tensor(hu).as_subclass(torch.Tensor).float()
        volume = volume[0] if volume.dim() == 4 and volume.shape[0] == 1 else volume
        if tuple(volume.shape) != self.geometry.vol_shape:
            raise ValueError(f"the CT must be on the grid {self.geometry.vol_shape}, got {tuple(hu.shape)}.")
        log_images = self.projector(hu_to_mu(volume)[None, None])[0, 0]  # (2, H, W)
        return torch.stack(
            [
                normalise_radiograph(image) if image.max() > image.min() else torch.zeros_like(image)
                for image in log_images
            ]
        )

    def __call__(
        self, pred: torch.Tensor, target: torch.Tensor, views: torch.Tensor | None = None
    ) -> dict[str, dict[str, float]]:
        pred, target = as_case_pair(torch.as_tensor(pred)[None], torch.as_tensor(target)[None])  # (1, X, Y, Z)
        if tuple(pred.shape[1:]) != self.geometry.vol_shape:
            raise ValueError(f"the CTs must be on the grid {self.geometry.vol_shape}, got {tuple(pred.shape[1:])}.")
        (track_a,) = paper_metrics(pred, target)
        (track_b,) = case_metrics(pred, target)
        distances = bone_surface_distances(pred, target, self.geometry.vol_spacing)
        track_b.update({f"{name}_mm": float(value[0]) for name, value in distances.items()})
        track_b["projection_psnr"] = math.nan
        if views is not None:
            drr = self.drr(pred[0].float().cpu())
            track_b["projection_psnr"] = float(projection_psnr(drr[None], torch.as_tensor(views).cpu()[None])[0])
        return {"track_a": track_a, "track_b": {name: track_b[name] for name in TRACK_B}}


def summarise(values: list[float]) -> dict[str, float]:
    """Mean, standard deviation, median, minimum and maximum of a metric over cases.

    An infinite value (the PSNR of a perfect case) makes the mean infinite and the std NaN, so a
    summary never hides one behind a made-up ceiling.
    """
    finite = [value for value in values if math.isfinite(value)]
    return {
        "mean": statistics.fmean(values),
        "std": statistics.pstdev(values) if len(finite) == len(values) else math.nan,
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


__all__ = ["LOWER_IS_BETTER", "TRACKS", "TRACK_A", "TRACK_B", "CaseEvaluator", "summarise"]
