"""Biplanar X-ray acquisition geometry: one CT grid and two views of it, in millimetres.

Frame and units
    World coordinates are RAS+ millimetres, the MONAI/nibabel convention: x grows from the patient's
    left to right, y from posterior to anterior, z from inferior to superior. The isocentre, where the
    central rays of both views cross, is the world origin and the centre of the CT grid. Canonical CT
    tensors are (B, C, X, Y, Z); voxel (i, j, k) is centred at
    ((i - (X - 1) / 2) s, (j - (Y - 1) / 2) s, (k - (Z - 1) / 2) s) for voxel spacing s.

Views, and how their images are laid out
    Every image is stored as a radiograph is displayed: seen from the detector looking back toward the
    source, head up. The row index grows from superior to inferior, the column index toward the
    viewer's right.

    frontal   postero-anterior (PA): source behind the head at y = -sod, detector in front of the face;
              rays run posterior -> anterior (+y). Columns run from the patient's right to the patient's
              left, so the patient's left appears on the image's right, as on a PA skull film.
    lateral   left lateral: source on the patient's right at x = +sod, detector against the left side;
              rays run right -> left (-x). Columns run from anterior to posterior: the face points to
              the image's left.

        frontal image (PA)             lateral image (left lateral)
        row 0: superior                row 0: superior
        +-----------------------+      +-----------------------+
        | patient's   patient's |      | anterior    posterior |
        | right          left   |      | (face)      (occiput) |
        +-----------------------+      +-----------------------+
        row H - 1: inferior            row H - 1: inferior

    Network inputs stack the two images as channels: 0 = frontal, 1 = lateral (``VIEW_NAMES``).

Sampling
    The CT grid always covers the field of view ``vol_shape * vol_spacing`` and the detector always
    covers ``det_shape * det_spacing``; :meth:`BiplanarGeometry.resampled` changes only how finely they
    are sampled, which is how coarser encoder levels (64^3 ... 8^3 grids, 64^2 ... 8^2 feature maps)
    share one acquisition.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

import numpy as np
import torch
from custom.errors import InvalidInputError

VIEW_NAMES: tuple[str, str] = ("frontal", "lateral")
BEAMS: tuple[str, str] = ("cone", "parallel")

Vector = tuple[float, float, float]


def _as_shape(value: Sequence[int], length: int, name: str) -> tuple[int, ...]:
    """A shape given as any sequence of integers (list, tuple, torch.Size, array) as a tuple of ints."""
    message = f"{name} must be a sequence of {length} positive integers, got {value!r}."
    if isinstance(value, (str, bytes)):
        raise InvalidInputError(message)
    try:
        values = tuple(value)
        valid = len(values) == length and all(not isinstance(v, bool) and int(v) == v > 0 for v in values)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise InvalidInputError(message)
    return tuple(int(v) for v in values)


def _as_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive finite number, got {value!r}.")
    return float(value)


def _tensor(vector: Vector, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(vector, dtype=like.dtype, device=like.device)


def _centred(count: int, spacing: float, dtype: torch.dtype, device: torch.device | str | None) -> torch.Tensor:
    """Centres of ``count`` samples ``spacing`` mm apart, symmetric about zero: (count,) mm."""
    return (torch.arange(count, dtype=dtype, device=device) - (count - 1) / 2) * spacing


@dataclass(frozen=True)
class View:
    """One of the two X-ray acquisitions, described in world millimetres.

    The isocentre is the world origin; the source sits at ``-sod * direction`` and the detector centre
    at ``(sdd - sod) * direction``. Detector pixel (row r, column c) is centred at
    ``detector_centre + (r - (H - 1) / 2) * det_spacing * row_axis + (c - (W - 1) / 2) * det_spacing *
    col_axis``. A parallel beam sends every ray along ``direction`` through its pixel centre; ``source``
    is then the centre of the plane the rays start from.

    Args:
        name: ``"frontal"`` or ``"lateral"``.
        direction: unit vector from source to detector (RAS).
        row_axis: unit vector along which the row index grows (toward the bottom of the image).
        col_axis: unit vector along which the column index grows (toward the right of the image).
        sod: source to isocentre distance, mm.
        sdd: source to detector distance, mm.
        det_shape: detector pixels (rows H, columns W).
        det_spacing: detector pixel pitch at the detector, mm per pixel (square pixels).
        beam: ``"cone"`` (point source) or ``"parallel"``.
    """

    name: str
    direction: Vector
    row_axis: Vector
    col_axis: Vector
    sod: float  # mm
    sdd: float  # mm
    det_shape: tuple[int, int]  # pixels (rows, columns)
    det_spacing: float  # mm / pixel
    beam: str

    @property
    def source(self) -> Vector:
        """Source position (cone) or centre of the source plane (parallel), mm."""
        return tuple(-self.sod * d for d in self.direction)

    @property
    def detector_centre(self) -> Vector:
        """Centre of the detector, mm."""
        return tuple((self.sdd - self.sod) * d for d in self.direction)

    def detector_coordinates(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel centres along ``row_axis`` (H,) and ``col_axis`` (W,), mm from the detector centre."""
        return tuple(_centred(n, self.det_spacing, dtype, device) for n in self.det_shape)

    def detector_points(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """World positions of the pixel centres, mm: (H, W, 3)."""
        v, u = self.detector_coordinates(dtype, device)
        return (
            _tensor(self.detector_centre, v)
            + v[:, None, None] * _tensor(self.row_axis, v)
            + u[None, :, None] * _tensor(self.col_axis, v)
        )

    def rays(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ray of every pixel: origins (H, W, 3) in mm and unit directions (H, W, 3)."""
        ends = self.detector_points(dtype, device)
        direction = _tensor(self.direction, ends)
        if self.beam == "parallel":
            return ends - self.sdd * direction, direction.expand_as(ends)
        origins = _tensor(self.source, ends).expand_as(ends)
        return origins, torch.nn.functional.normalize(ends - origins, dim=-1)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Continuous pixel coordinates of world points.

        Args:
            points: (..., 3) positions in mm, in front of the source.

        Returns:
            (..., 2) as (row, column) in pixels; integer values are pixel centres, so a point projects
            onto the detector when -0.5 <= row <= H - 0.5 and -0.5 <= column <= W - 0.5.
        """
        direction, row_axis, col_axis = (_tensor(a, points) for a in (self.direction, self.row_axis, self.col_axis))
        from_source = points - _tensor(self.source, points)
        scale = 1.0 if self.beam == "parallel" else self.sdd / (from_source @ direction)[..., None]  # magnification
        planar = torch.stack((from_source @ row_axis, from_source @ col_axis), dim=-1) * scale  # mm on the detector
        centre = torch.tensor([(n - 1) / 2 for n in self.det_shape], dtype=points.dtype, device=points.device)
        return planar / self.det_spacing + centre


@dataclass(frozen=True)
class BiplanarGeometry:
    """The two X-ray views (frontal PA and left lateral) of one canonical CT grid.

    The views share the isocentre (the centre of the CT grid), the source distances and the detector;
    only their direction differs. Everything is in millimetres; the module docstring gives the world
    frame and the on-image orientation of each view.

    Defaults and why:
        - ``det_shape`` 128 x 128: the input size of PSCT-Net and X2CT-GAN.
        - ``vol_shape`` 128^3 at ``vol_spacing`` 1.5 mm, a 192 mm field of view: at 24 months the head
          circumference is about 49 cm (a head about 17 cm long and 14 cm wide), so 192 mm holds the
          skull with the mandible, the scalp and some pose jitter.
        - cone beam with ``sod`` 1000 mm and ``sdd`` 1200 mm: a magnification of 1.2, as for a skull
          radiograph taken with the head near the detector (the geometry PSCT-Net simulates).
        - ``det_spacing`` None: ``vol_spacing * sdd / sod`` for a cone beam (1.8 mm), ``vol_spacing`` for
          a parallel beam, so that one pixel spans one voxel at the isocentre and the detector covers
          the field of view there.

    Args:
        vol_shape: CT grid voxels (X, Y, Z). Defaults to (128, 128, 128).
        vol_spacing: isotropic voxel size, mm. Defaults to 1.5.
        det_shape: detector pixels (rows H, columns W), shared by both views. Defaults to (128, 128).
        det_spacing: square pixel pitch at the detector, mm per pixel. Defaults to None (see above).
        sod: source to isocentre distance, mm. Defaults to 1000.
        sdd: source to detector distance, mm; must exceed ``sod``. Defaults to 1200.
        beam: ``"cone"`` or ``"parallel"``. Defaults to ``"cone"``.

    Raises:
        ValueError: non-positive sizes or distances, wrongly sized shapes, ``sod >= sdd``, an unknown
            beam, or a CT grid that reaches the source or the detector.
    """

    vol_shape: tuple[int, int, int] = (128, 128, 128)  # voxels (X, Y, Z)
    vol_spacing: float = 1.5  # mm
    det_shape: tuple[int, int] = (128, 128)  # pixels (rows, columns)
    det_spacing: float | None = None  # mm / pixel at the detector
    sod: float = 1000.0  # mm, source to isocentre
    sdd: float = 1200.0  # mm, source to detector
    beam: str = "cone"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "vol_shape", _as_shape(self.vol_shape, 3, "vol_shape"))
        set_(self, "det_shape", _as_shape(self.det_shape, 2, "det_shape"))
        set_(self, "vol_spacing", _as_positive(self.vol_spacing, "vol_spacing"))
        set_(self, "sod", _as_positive(self.sod, "sod"))
        set_(self, "sdd", _as_positive(self.sdd, "sdd"))
        if self.beam not in BEAMS:
            raise InvalidInputError(f"beam must be one of {BEAMS}, got {self.beam!r}.")
        if self.sod >= self.sdd:
            raise InvalidInputError(f"sod ({self.sod} mm) must be smaller than sdd ({self.sdd} mm).")
        if self.det_spacing is None:  # one pixel spans one voxel at the isocentre
            set_(
                self, "det_spacing", self.vol_spacing * self.sdd / self.sod if self.beam == "cone" else self.vol_spacing
            )
        set_(self, "det_spacing", _as_positive(self.det_spacing, "det_spacing"))
        half_depth = max(self.fov[0], self.fov[1]) / 2  # mm, grid extent along either view's rays
        if half_depth >= min(self.sod, self.sdd - self.sod):
            raise InvalidInputError(
                f"the CT grid (+-{half_depth:g} mm along the rays) must lie between the source "
                f"({self.sod:g} mm from the isocentre) and the detector ({self.sdd - self.sod:g} mm)."
            )

    @cached_property
    def views(self) -> tuple[View, View]:
        """(frontal, lateral): the order of the network's input channels."""
        common = dict(
            sod=self.sod, sdd=self.sdd, det_shape=self.det_shape, det_spacing=self.det_spacing, beam=self.beam
        )
        down = (0.0, 0.0, -1.0)  # rows grow toward inferior in both views
        frontal = View("frontal", direction=(0.0, 1.0, 0.0), row_axis=down, col_axis=(-1.0, 0.0, 0.0), **common)
        lateral = View("lateral", direction=(-1.0, 0.0, 0.0), row_axis=down, col_axis=(0.0, -1.0, 0.0), **common)
        return frontal, lateral

    @property
    def frontal(self) -> View:
        return self.views[0]

    @property
    def lateral(self) -> View:
        return self.views[1]

    @property
    def fov(self) -> tuple[float, float, float]:
        """Extent of the CT grid along x, y, z, mm."""
        return tuple(n * self.vol_spacing for n in self.vol_shape)

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) RAS voxel-to-world matrix of the CT grid, mm; the grid centre is the isocentre."""
        affine = np.diag([self.vol_spacing] * 3 + [1.0])
        affine[:3, 3] = [-(n - 1) / 2 * self.vol_spacing for n in self.vol_shape]
        return affine

    def voxel_coordinates(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Voxel centres along x (X,), y (Y,) and z (Z,), mm."""
        return tuple(_centred(n, self.vol_spacing, dtype, device) for n in self.vol_shape)

    def voxel_centres(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """World positions of the voxel centres, mm: (X, Y, Z, 3)."""
        return torch.stack(torch.meshgrid(*self.voxel_coordinates(dtype, device), indexing="ij"), dim=-1)

    def resampled(
        self, vol_shape: Sequence[int] | None = None, det_shape: Sequence[int] | None = None
    ) -> BiplanarGeometry:
        """The same acquisition sampled on another grid and/or detector.

        The field of view and the detector area stay fixed, so voxels and pixels grow as their counts
        shrink. Used for the coarse grids of encoder levels: ``resampled((32,) * 3, (32, 32))``.

        Raises:
            ValueError: the new shape would make voxels or pixels non-square.
        """
        vol_shape = self.vol_shape if vol_shape is None else _as_shape(vol_shape, 3, "vol_shape")
        det_shape = self.det_shape if det_shape is None else _as_shape(det_shape, 2, "det_shape")
        vol_scale = _uniform_scale(self.vol_shape, vol_shape, "vol_shape")
        det_scale = _uniform_scale(self.det_shape, det_shape, "det_shape")
        return BiplanarGeometry(
            vol_shape=vol_shape,
            vol_spacing=self.vol_spacing * vol_scale,
            det_shape=det_shape,
            det_spacing=self.det_spacing * det_scale,
            sod=self.sod,
            sdd=self.sdd,
            beam=self.beam,
        )

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict that :meth:`from_dict` turns back into an equal geometry."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: list(v) if isinstance(v, tuple) else v for name, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BiplanarGeometry:
        """Build a geometry from :meth:`to_dict` output or a bundle config section.

        Raises:
            ValueError: unknown keys.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInputError(f"unknown geometry keys {unknown}; expected some of {sorted(known)}.")
        return cls(**values)


def rotation_matrix(degrees: Sequence[float]) -> np.ndarray:
    """(3, 3) rotation of successive turns about x, y and z (degrees, right-handed), ``Rz @ Ry @ Rx``."""
    ax, ay, az = np.radians(np.asarray(degrees, dtype=float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _uniform_scale(old: tuple[int, ...], new: tuple[int, ...], name: str) -> float:
    """The common factor old[i] / new[i]; ValueError if the axes disagree."""
    scales = [o / n for o, n in zip(old, new)]
    if not all(math.isclose(s, scales[0], rel_tol=1e-9) for s in scales):
        raise ValueError(f"{name} {new} must scale every axis of {old} by the same factor to keep square samples.")
    return scales[0]


__all__ = ["BEAMS", "VIEW_NAMES", "BiplanarGeometry", "View"]
