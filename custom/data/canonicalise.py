"""Canonicalisation: any loaded CT resampled onto a geometry's canonical grid, centred on the head.

Any loaded CT (a MetaTensor from :class:`~custom.data.ct_files.LoadCT`, or any (1, I, J, K) HU
MetaTensor with an affine to RAS+ mm) becomes the canonical volume of a
:class:`~custom.imaging.geometry.BiplanarGeometry`: (1, X, Y, Z) = ``geometry.vol_shape`` float32 HU in
RAS order at ``geometry.vol_spacing`` with ``affine == geometry.affine``, the head centre
(:func:`~custom.data.head.locate_head`) at the isocentre (the world origin). See the
:class:`CanonicaliseCT` docstring for the steps and how intensities that are not HU are treated.
:func:`interpolate_at` is the one resampling step, shared with the pose jitter
(:mod:`custom.data.pose`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from custom.data.ct_files import voxel_spacing
from custom.data.head import LOCATE_SPACING, locate_head
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.physics import AIR_HU, AIR_THRESHOLD_HU, BONE_HU, gaussian_blur
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

logger = logging.getLogger(__name__)

HU_RANGE: tuple[float, float] = (AIR_HU, 3071.0)  # HU, the 12-bit range CT scanners store


def _to_closest_ras(volume: torch.Tensor, affine: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Flip and permute the voxel axes of (I, J, K) to run closest to R, A, S; the affine follows."""
    orientation = nib.orientations.io_orientation(affine)  # per voxel axis: (world axis, +-1)
    reorient = nib.orientations.inv_ornt_aff(orientation, volume.shape)  # new voxel index -> old voxel index
    flips = [axis for axis, sign in enumerate(orientation[:, 1]) if sign < 0]
    if flips:
        volume = volume.flip(flips)
    return volume.permute(*np.argsort(orientation[:, 0]).tolist()), affine @ reorient


def _blocks(
    volume: torch.Tensor, affine: np.ndarray, spacing: float, peak: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
    """Block means (and maxima) of (I, J, K) over blocks of about ``spacing`` mm, never coarser.

    Blocks hold ``floor(spacing / voxel size)`` voxels along each axis (at most half the axis); a
    remainder at the far end is dropped. Returns ``(means, maxima or None, affine)``: (I', J', K')
    each and the (4, 4) affine of the block grid (block centres), mm.
    """
    factors = [max(1, min(n // 2, int(spacing / s + 1e-6))) for n, s in zip(volume.shape, voxel_spacing(affine))]
    block = np.eye(4)
    block[:3, :3] = np.diag(factors)
    block[:3, 3] = [(f - 1) / 2 for f in factors]
    if max(factors) == 1:
        return volume, volume if peak else None, affine
    (i, j, k), (a, b, c) = volume.shape, factors
    blocks = volume[: i // a * a, : j // b * b, : k // c * c].reshape(i // a, a, j // b, b, k // c, c)
    return blocks.mean(dim=(1, 3, 5)), blocks.amax(dim=(1, 3, 5)) if peak else None, affine @ block


def interpolate_at(volume: torch.Tensor, index: torch.Tensor, pad: float, mode: str = "bilinear") -> torch.Tensor:
    """Interpolate (C, I, J, K) at fractional voxel indices (..., 3); ``pad`` outside the volume.

    Args:
        volume: (C, I, J, K) values.
        index: (..., 3) voxel indices (i, j, k), voxel centres at integers.
        pad: the value outside.
        mode: ``bilinear`` (trilinear) or ``nearest``.

    Returns:
        (C, ...) samples in ``volume``'s dtype.
    """
    size = torch.tensor(volume.shape[1:], dtype=index.dtype, device=index.device)
    grid = 2 * index / (size - 1).clamp(min=1) - 1  # align_corners=True: -1 and 1 are the edge voxel centres
    shifted = (volume.float() - pad)[None]  # zero padding of the shifted volume pads with ``pad``
    grid = grid.flip(-1).reshape(1, -1, 1, 1, 3).float()  # grid_sample orders axes k, j, i
    out = F.grid_sample(shifted, grid, mode=mode, padding_mode="zeros", align_corners=True)
    return (out[0].reshape(volume.shape[0], *index.shape[:-1]) + pad).to(volume.dtype)


def _crop(volume: torch.Tensor, index: torch.Tensor, margins: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    """The part of (I, J, K) that voxel indices (..., 3) sample, ``margins`` (3,) voxels wider; and its start."""
    flat = index.reshape(-1, 3)
    start, stop = [], []
    for axis, margin in enumerate(margins):
        n = volume.shape[axis]
        lo = min(max(0, math.floor(float(flat[:, axis].min())) - margin), n - 2)
        hi = max(min(n - 1, math.ceil(float(flat[:, axis].max())) + margin), lo + 1)  # >= 2 voxels kept
        start.append(lo)
        stop.append(hi + 1)
    return volume[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]], start


class CanonicaliseCT(Transform):
    """Resample a loaded CT onto the geometry's canonical grid, centred on the head.

    Output: (1, X, Y, Z) = ``geometry.vol_shape`` float32 HU, axes left->right, posterior->anterior,
    inferior->superior, ``geometry.vol_spacing`` mm isotropic, ``affine == geometry.affine``: the
    canonical world is the CT's world shifted so that the head centre is the origin (the isocentre).

    Steps:

    1. clip HU to ``clip`` (out-of-field values such as -3024 become air) and turn the voxel axes to
       the closest RAS order (flips and a permutation, no interpolation);
    2. block means over blocks of ``floor(vol_spacing / voxel size)`` voxels (the first, exact stage
       of anti-aliasing), and block means and maxima over blocks of at least 2 mm: the coarse grid on
       which the head is located;
    3. locate the head (:func:`locate_head`): the skull's bounding box (bone above ``bone_threshold``
       inside the largest body component above ``body_threshold``), restricted to the cranial
       ``head_height`` mm below the highest bone so that neck and shoulders do not pull it down;
       falling back to the body's box without bone. Its centre becomes the isocentre;
    4. one trilinear resampling of the block means onto the centred grid (after a Gaussian for any
       remaining downsampling factor f, sigma (f - 1) / 2 voxels), through the full affine, so oblique
       and gantry-tilted (sheared) scans are handled; outside the scan is air (``clip[0]``);
    5. clip again.

    Field of view: the default geometry (128^3 x 1.5 mm = 192 mm) is sized for infants and toddlers.
    Adult skulls (about 180-200 mm long, 230 mm with the mandible) need a coarser grid, e.g. 128^3 x
    2 mm. A skull box larger than the grid is logged as a warning and flagged in meta.

    Intensities must be HU. Nothing is guessed: a CT without any voxel below ``body_threshold`` (no air,
    e.g. normalised 0..1 data or air stored as 0) is logged as a warning and flagged in meta
    (``no_air``); map such data to HU first, e.g. with ``monai.transforms.ScaleIntensityRange``.

    Args:
        geometry: the acquisition whose CT grid is the target.
        clip: (min, max) HU kept; min is also the air written outside the scan. Defaults to (-1024, 3071).
        body_threshold: HU above which a voxel is body rather than air. Defaults to -500.
        bone_threshold: HU above which a voxel is bone. Defaults to 300.
        head_height: cranio-caudal extent of the head, mm; bone further below the top of the skull is
            ignored when centring. Defaults to None: 90 % of the grid's z field of view, which keeps the
            vertex inside the grid when a scan continues below the head.
        anti_aliasing: low-pass filter before downsampling. Defaults to True.

    Meta of the output (besides the input's): ``head_centre`` (3,) mm, the head centre in the input's
    RAS world (canonical = input world - head_centre); ``head_box`` (2, 3) mm; ``head_located_by``
    ("bone", "body" or "volume"); ``skull_exceeds_fov`` (bool); ``no_air`` (bool); ``original_affine``.

    Raises:
        ValueError: bad arguments, or an input that is not a (1, I, J, K) MetaTensor with an
            invertible affine and at least 2 voxels along each axis.
    """

    def __init__(
        self,
        geometry: BiplanarGeometry,
        clip: Sequence[float] = HU_RANGE,  # HU
        body_threshold: float = AIR_THRESHOLD_HU,  # HU
        bone_threshold: float = BONE_HU,  # HU
        head_height: float | None = None,  # mm
        anti_aliasing: bool = True,
    ) -> None:
        if not isinstance(geometry, BiplanarGeometry):
            raise ValueError(f"geometry must be a BiplanarGeometry, got {type(geometry).__name__}.")
        clip = tuple(float(c) for c in clip)
        if len(clip) != 2 or not clip[0] < clip[1]:
            raise ValueError(f"clip must be (min, max) HU with min < max, got {clip}.")
        if not clip[0] < body_threshold < bone_threshold < clip[1]:
            raise ValueError(
                f"need clip[0] < body_threshold < bone_threshold < clip[1], got {clip[0]}, {body_threshold}, "
                f"{bone_threshold}, {clip[1]} HU."
            )
        if head_height is not None and not head_height > 0:
            raise ValueError(f"head_height must be positive (mm), got {head_height}.")
        self.geometry = geometry
        self.clip = clip
        self.body_threshold = float(body_threshold)
        self.bone_threshold = float(bone_threshold)
        self.head_height = 0.9 * geometry.fov[2] if head_height is None else float(head_height)
        self.anti_aliasing = anti_aliasing

    def __call__(self, ct: torch.Tensor) -> MetaTensor:
        # 1. check the input; clip; closest RAS voxel order
        if not isinstance(ct, MetaTensor):
            raise ValueError(f"CanonicaliseCT needs a MetaTensor with an affine (see LoadCT), got {type(ct).__name__}.")
        if ct.ndim != 4 or ct.shape[0] != 1 or min(ct.shape[1:]) < 2:
            raise ValueError(f"expected a CT of shape (1, I, J, K) with I, J, K >= 2, got {tuple(ct.shape)}.")
        affine = ct.affine.detach().cpu().double().numpy()
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError(f"the CT's affine must be finite and invertible, got\n{affine}.")
        name = ct.meta.get("filename_or_obj", "CT")
        low, high = self.clip
        volume = ct.as_tensor()[0].float().nan_to_num(nan=low).clamp(low, high)
        no_air = bool(volume.min() > self.body_threshold)
        if no_air:
            logger.warning(
                "%s has no voxel below %g HU (no air): is it in HU? Map it to HU before CanonicaliseCT.",
                name,
                self.body_threshold,
            )
        volume, ras_affine = _to_closest_ras(volume, affine)

        # 2. block means: the resampling source (the first, exact anti-aliasing stage) and, at least
        #    LOCATE_SPACING mm coarse, the grid on which the head is located
        target = self.geometry.vol_spacing
        source, source_affine = volume, ras_affine
        if self.anti_aliasing:
            source, _, source_affine = _blocks(volume, ras_affine, target)
        mean, peak, coarse_affine = _blocks(volume, ras_affine, max(target, LOCATE_SPACING), peak=True)

        # 3. the head
        box = locate_head(mean, peak, coarse_affine, self.body_threshold, self.bone_threshold, self.head_height)
        if box.located_by != "bone":
            logger.warning("%s: no bone above %g HU; centred on the %s.", name, self.bone_threshold, box.located_by)
        fov = np.asarray(self.geometry.fov)
        exceeds = bool(np.any(box.extent > fov + 1e-6))
        if exceeds:
            logger.warning(
                "%s: the head (%s mm) exceeds the grid's field of view (%s mm); use a coarser vol_spacing "
                "(adults need about 2 mm for 128^3).",
                name,
                np.round(box.extent, 1).tolist(),
                fov.tolist(),
            )

        # 4. one resampling onto the centred grid, from the block means (anti-aliased) or the voxels
        sigmas = [max(0.0, (target / s - 1) / 2) if self.anti_aliasing else 0.0 for s in voxel_spacing(source_affine)]
        centre = torch.as_tensor(box.centre, device=volume.device)
        world = self.geometry.voxel_centres(torch.float64, volume.device) + centre  # (X, Y, Z, 3) mm, CT world
        inverse = torch.as_tensor(np.linalg.inv(source_affine)).to(world)
        index = world @ inverse[:3, :3].T + inverse[:3, 3]  # (X, Y, Z, 3) voxel indices of the source
        source, start = _crop(source, index, [math.ceil(3 * s) + 1 for s in sigmas])
        index = index - torch.tensor(start, dtype=index.dtype, device=index.device)
        sigmas = [sigma if sigma >= 0.2 else 0.0 for sigma in sigmas]  # narrower kernels: within a few % of identity
        out = interpolate_at(gaussian_blur(source, sigmas)[None], index, low)[0].clamp(low, high)

        # 5. the canonical MetaTensor
        meta = {k: v for k, v in ct.meta.items() if k != "affine"}
        meta.update(
            original_affine=affine,
            spacing=np.full(3, target),
            space="RAS",
            head_centre=box.centre,
            head_box=np.stack((box.lower, box.upper)),
            head_located_by=box.located_by,
            skull_exceeds_fov=exceeds,
            no_air=no_air,
        )
        return MetaTensor(out[None].float(), affine=torch.as_tensor(self.geometry.affine), meta=meta)


class CanonicaliseCTd(MapTransform):
    """Dictionary wrapper of :class:`CanonicaliseCT`: canonicalises each CT under ``keys``.

    Args:
        keys: keys of the CTs (MetaTensors from :class:`LoadCTd`). Defaults to "ct".
        geometry, clip, body_threshold, bone_threshold, head_height, anti_aliasing: as
            :class:`CanonicaliseCT`.
        allow_missing_keys: skip keys that are absent. Defaults to False.
    """

    def __init__(
        self,
        geometry: BiplanarGeometry,
        keys: KeysCollection = "ct",
        clip: Sequence[float] = HU_RANGE,  # HU
        body_threshold: float = AIR_THRESHOLD_HU,  # HU
        bone_threshold: float = BONE_HU,  # HU
        head_height: float | None = None,  # mm
        anti_aliasing: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.canonicaliser = CanonicaliseCT(geometry, clip, body_threshold, bone_threshold, head_height, anti_aliasing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.canonicaliser(d[key])
        return d


__all__ = ["HU_RANGE", "CanonicaliseCT", "CanonicaliseCTd", "interpolate_at"]
