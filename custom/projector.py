"""Differentiable X-ray operators on a :class:`~custom.geometry.BiplanarGeometry`.

Three linear operators, batched and multi-channel, on CPU and CUDA, in any floating dtype:

Forward projection (ray-driven; Joseph, "An improved algorithm for reprojecting rays through pixel
images", IEEE TMI 1982)
    Each ray is sampled where it crosses the planes of voxel centres perpendicular to its view's
    central ray. There trilinear interpolation reduces exactly to bilinear interpolation in the plane,
    and consecutive samples lie ``spacing * |ray| / (ray . direction)`` mm apart. The views are
    axis-aligned, so where a ray crosses slice ``d`` its row position depends only on the pixel row
    and its column position only on the pixel column, and the projection is two contractions with
    per-slice linear-interpolation matrices::

        P[h, w] = L[h, w] * sum_d sum_l sum_k C[d, w, l] V[d, l, k] R[d, h, k]

    where ``V`` is the volume in the view's frame (depth, column axis, row axis), ``R`` and ``C`` hold
    interpolation weights and ``L`` is the ray length per slice in mm. Dense matrix products keep it
    deterministic (no atomics, forward or backward) and fast on BLAS and tensor cores. Volumes hold
    linear attenuation in 1/mm, so projections are dimensionless line integrals.

Adjoint
    The same contractions transposed: exactly the transpose of the forward projection, and what
    autograd uses for its gradient. Use it for data consistency (e.g. gradient steps on ||Ax - y||^2).

Back-projection (voxel-driven)
    Every voxel centre is projected onto each detector and the image or feature map is sampled
    bilinearly there (zero outside the detector): the unfiltered back-projection that forms PSCT-Net's
    volumetric prior and lifts its 2D features into 3D (BP-C), at any grid resolution. It smears values
    along rays without path-length weighting, so it is not the adjoint.

A parallel beam samples every depth slice identically: the forward projection sums the volume along
the rays and then resamples once (an exact sum when the detector matches the grid), and
back-projection samples one plane and expands it along the rays.

Interpolation matrices and sampling grids are built once per (grid shape, detector shape, device,
dtype) and cached on the projector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from custom.geometry import VIEW_NAMES, BiplanarGeometry, View

REDUCTIONS = ("mean", "sum", "none")


class JosephOperator(NamedTuple):
    """One view's forward projection, ready to contract with a volume.

    permutation: moves (B, C, X, Y, Z) into the view's frame (B, C, depth D, column axis L, row axis K);
        the row axis is z for both views, so the frame keeps the volume's contiguous last axis.
    rows: (D, H, K) interpolation weights from the grid's row axis to detector rows, per depth slice
        (D = 1 for a parallel beam: every slice shares them).
    cols: (D, W, L) the same for detector columns.
    length: (H, W) ray length per depth slice, mm.
    """

    permutation: tuple[int, int, int, int, int]
    rows: torch.Tensor
    cols: torch.Tensor
    length: torch.Tensor


def _aligned_axes(view: View) -> list[tuple[int, float]]:
    """(grid axis, sign) of the view's depth, row and column directions; ValueError unless axis-aligned."""
    axes = []
    for vector in (view.direction, view.row_axis, view.col_axis):
        axis = max(range(3), key=lambda i: abs(vector[i]))
        if any(vector[i] != 0 for i in range(3) if i != axis):
            raise ValueError(f"the {view.name} view must be aligned with the CT grid axes, got {vector}.")
        axes.append((axis, 1.0 if vector[axis] > 0 else -1.0))
    if sorted(axis for axis, _ in axes) != [0, 1, 2]:
        raise ValueError(f"the {view.name} view's ray, row and column directions must span three grid axes.")
    return axes


def _linear_weights(position: torch.Tensor, size: int) -> torch.Tensor:
    """(..., size) linear-interpolation weights of continuous indices ``position`` (zero outside)."""
    index = torch.arange(size, dtype=position.dtype, device=position.device)
    return (1 - (position[..., None] - index).abs()).clamp(min=0)


def joseph_operator(view: View, grid: BiplanarGeometry, dtype: torch.dtype, device: torch.device) -> JosephOperator:
    """Build one view's Joseph interpolation matrices for the grid of ``grid``, in ``dtype``."""
    (depth_axis, depth_sign), (row_axis, row_sign), (col_axis, col_sign) = _aligned_axes(view)
    work = dict(dtype=torch.promote_types(dtype, torch.float32), device=device)  # geometry in >= float32
    coordinates = grid.voxel_coordinates(**work)  # mm along x, y, z
    spacing = grid.vol_spacing  # mm

    # 1. Magnification at each depth slice (one shared slice for a parallel beam).
    if view.beam == "cone":
        magnification = view.sdd / (view.sod + depth_sign * coordinates[depth_axis])
    else:
        magnification = torch.ones(1, **work)

    # 2. Pixel centres on the detector, mm from its centre.
    v, u = view.detector_coordinates(**work)

    # 3. Where each ray crosses each slice, as continuous voxel indices along the row and column axes.
    def crossing(detector_mm: torch.Tensor, sign: float, axis: int) -> torch.Tensor:
        n = grid.vol_shape[axis]
        return _linear_weights(sign * detector_mm / magnification[:, None] / spacing + (n - 1) / 2, n)

    rows, cols = crossing(v, row_sign, row_axis), crossing(u, col_sign, col_axis)

    # 4. Ray length between consecutive slices, mm.
    if view.beam == "cone":
        length = spacing * torch.sqrt(1 + (v[:, None] ** 2 + u[None, :] ** 2) / view.sdd**2)
    else:
        length = torch.full(view.det_shape, spacing, **work)

    permutation = (0, 1, 2 + depth_axis, 2 + col_axis, 2 + row_axis)
    return JosephOperator(permutation, rows.to(dtype), cols.to(dtype), length.to(dtype))


def joseph_project(volume: torch.Tensor, op: JosephOperator) -> torch.Tensor:
    """Line integrals of one view: (B, C, X, Y, Z) -> (B, C, H, W)."""
    frame = volume.permute(op.permutation)  # (B, C, D, L, K)
    if op.rows.shape[0] == 1:
        frame = frame.sum(dim=2, keepdim=True)  # parallel beam: sum along the rays first
    along_rows = torch.einsum("dhk,bcdlk->bcdlh", op.rows, frame)  # (B, C, D, L, H)
    return torch.einsum("dwl,bcdlh->bchw", op.cols, along_rows) * op.length  # (B, C, H, W)


def joseph_adjoint(projection: torch.Tensor, op: JosephOperator, vol_shape: Sequence[int]) -> torch.Tensor:
    """Transpose of :func:`joseph_project`: (B, C, H, W) -> (B, C, X, Y, Z) (a strided view)."""
    along_cols = torch.einsum("dwl,bchw->bcdlh", op.cols, projection * op.length)  # (B, C, D, L, H)
    frame = torch.einsum("dhk,bcdlh->bcdlk", op.rows, along_cols)  # (B, C, D, L, K)
    frame_shape = [vol_shape[axis - 2] for axis in op.permutation[2:]]
    frame = frame.expand(*frame.shape[:2], *frame_shape)  # parallel beam: every slice alike
    return frame.permute(torch.argsort(torch.tensor(op.permutation)).tolist())


def sampling_grid(view: View, grid: BiplanarGeometry, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Where every voxel centre lands on the view's detector, for ``F.grid_sample``.

    Returns:
        (X, Y, Z, 2) normalised (column, row) coordinates (``align_corners=False``) in ``dtype``
        (at least float32: sampling positions are never quantised to half precision); for a parallel
        beam the depth axis has one entry, since every slice lands alike.
    """
    dtype = torch.promote_types(dtype, torch.float32)
    coordinates = list(grid.voxel_coordinates(dtype, device))  # mm along x, y, z
    if view.beam == "parallel":
        depth_axis = _aligned_axes(view)[0][0]
        coordinates[depth_axis] = coordinates[depth_axis][:1]
    height, width = view.det_shape
    x, y, z = coordinates
    normalised = torch.empty(len(x), len(y), len(z), 2, dtype=dtype, device=device)
    for i in range(len(x)):  # one x-slice at a time keeps the temporaries small
        points = torch.stack(torch.meshgrid(x[i : i + 1], y, z, indexing="ij"), dim=-1)  # (1, Y, Z, 3) mm
        row, col = view.project(points).unbind(-1)  # pixels
        normalised[i : i + 1] = torch.stack(((2 * col + 1) / width - 1, (2 * row + 1) / height - 1), dim=-1)
    return normalised


def sample_views(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``image`` (B, C, H, W) at a :func:`sampling_grid` (X, Y, Z, 2) -> (B, C, X, Y, Z)."""
    batch, channels, height, width = image.shape
    x, y, z = grid.shape[:3]
    # One grid_sample batch entry per x-slice (an expanded view, not a copy): the CPU kernel
    # parallelises over that dimension only.
    slices = image.reshape(1, batch * channels, height, width).to(grid.dtype).expand(x, -1, -1, -1)
    sampled = F.grid_sample(slices, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled.view(x, batch, channels, y, z).permute(1, 2, 0, 3, 4).to(image.dtype)  # (B, C, X, Y, Z)


class Projector(nn.Module):
    """Forward projection, voxel-driven back-projection and exact adjoint for both views.

    The grid and the detector of a call follow its input's shape (same field of view and detector
    area, see :meth:`BiplanarGeometry.resampled`); the other side defaults to the geometry's.

    Args:
        geometry: the acquisition. Defaults to ``BiplanarGeometry()``.

    Example::

        projector = Projector(BiplanarGeometry())
        views = projector(mu)[:, 0]                  # (B, 1, 128, 128, 128) 1/mm -> (B, 2, 128, 128)
        prior = projector.backproject(views)         # -> (B, 1, 128, 128, 128), mean of both views
        lifted = projector.backproject(features, vol_shape=(16, 16, 16))  # (B, C, 2, 16, 16) -> (B, C, 16, 16, 16)
    """

    def __init__(self, geometry: BiplanarGeometry | None = None) -> None:
        super().__init__()
        self.geometry = BiplanarGeometry() if geometry is None else geometry
        self._cache: dict[tuple, object] = {}

    def extra_repr(self) -> str:
        return repr(self.geometry)

    def _cached(self, kind: str, vol_shape: Sequence[int], det_shape: Sequence[int], like: torch.Tensor) -> tuple:
        """Per-view operators (``kind`` "joseph" or "grid") for one grid, detector, device and dtype."""
        key = (kind, tuple(vol_shape), tuple(det_shape), like.device, like.dtype)
        if key not in self._cache:
            grid = self.geometry.resampled(vol_shape, det_shape)
            build = joseph_operator if kind == "joseph" else sampling_grid
            self._cache[key] = tuple(build(view, grid, like.dtype, like.device) for view in grid.views)
        return self._cache[key]

    def forward(self, volume: torch.Tensor, det_shape: Sequence[int] | None = None) -> torch.Tensor:
        """Line integrals (DRRs before detector physics) of both views.

        Args:
            volume: (B, C, X, Y, Z) linear attenuation, 1/mm (any channels: feature volumes project too).
            det_shape: detector pixels (H, W). Defaults to the geometry's.

        Returns:
            (B, C, 2, H, W), view 0 frontal, 1 lateral; for C = 1, ``[:, 0]`` is the network layout
            (B, 2, H, W).
        """
        _check_volume(volume)
        det_shape = self.geometry.det_shape if det_shape is None else det_shape
        ops = self._cached("joseph", volume.shape[2:], det_shape, volume)
        return torch.stack([joseph_project(volume, op) for op in ops], dim=2)

    def adjoint(self, projections: torch.Tensor, vol_shape: Sequence[int] | None = None) -> torch.Tensor:
        """Exact adjoint of :meth:`forward`: the sum over views of each view's transpose.

        Args:
            projections: (B, C, 2, H, W), or (B, 2, H, W) for C = 1.
            vol_shape: grid voxels (X, Y, Z). Defaults to the geometry's.

        Returns:
            (B, C, X, Y, Z).
        """
        views = _as_views(projections)
        vol_shape = self.geometry.vol_shape if vol_shape is None else tuple(vol_shape)
        ops = self._cached("joseph", vol_shape, views.shape[-2:], views)
        frontal, lateral = (joseph_adjoint(views[:, :, i], op, vol_shape) for i, op in enumerate(ops))
        return (frontal + lateral).contiguous()

    def backproject(
        self, images: torch.Tensor, vol_shape: Sequence[int] | None = None, reduction: str = "mean"
    ) -> torch.Tensor:
        """Voxel-driven, unfiltered back-projection of both views' images or feature maps.

        Args:
            images: (B, C, 2, H, W), or (B, 2, H, W) for C = 1; any H, W (they span the detector).
            vol_shape: grid voxels (X, Y, Z), e.g. (16, 16, 16) for an encoder level. Defaults to the
                geometry's.
            reduction: ``"mean"`` over the views (PSCT-Net's prior), ``"sum"`` or ``"none"``.
                Defaults to ``"mean"``.

        Returns:
            (B, C, X, Y, Z), or (B, C, 2, X, Y, Z) for ``reduction="none"``.
        """
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
        views = _as_views(images)
        vol_shape = self.geometry.vol_shape if vol_shape is None else tuple(vol_shape)
        grids = self._cached("grid", vol_shape, views.shape[-2:], views)
        frontal, lateral = (sample_views(views[:, :, i], grid) for i, grid in enumerate(grids))
        if reduction == "none":
            full = (*views.shape[:2], *vol_shape)
            return torch.stack((frontal.expand(full), lateral.expand(full)), dim=2)
        # lerp at 0.5 is the mean in one pass; several channels come back from grid_sample interleaved
        combined = frontal + lateral if reduction == "sum" else torch.lerp(frontal, lateral, 0.5)
        return combined.contiguous()


def _check_volume(volume: torch.Tensor) -> None:
    if volume.ndim != 5 or not volume.is_floating_point():
        raise ValueError(f"volume must be a floating (B, C, X, Y, Z) tensor, got {tuple(volume.shape)} {volume.dtype}.")


def _as_views(images: torch.Tensor) -> torch.Tensor:
    """(B, C, 2, H, W) from (B, C, 2, H, W) or the network layout (B, 2, H, W)."""
    if images.ndim == 4:
        images = images.unsqueeze(1)
    if images.ndim != 5 or images.shape[2] != len(VIEW_NAMES) or not images.is_floating_point():
        raise ValueError(
            f"images must be floating (B, C, 2, H, W) or (B, 2, H, W) with views {VIEW_NAMES}, "
            f"got {tuple(images.shape)} {images.dtype}."
        )
    return images


__all__ = [
    "REDUCTIONS",
    "JosephOperator",
    "Projector",
    "joseph_adjoint",
    "joseph_operator",
    "joseph_project",
    "sampling_grid",
]
