"""Differentiable X-ray operators on a :class:`~custom.imaging.geometry.BiplanarGeometry`.

Three linear operators, batched and multi-channel, on CPU and CUDA, in any floating dtype. The views are
axis-aligned with the CT grid, so each operator is, per depth slice (the planes of voxel centres
perpendicular to a view's central ray), a pair of 1D linear interpolations: one between the grid's row
axis (z) and the detector rows, one between the grid's column axis and the detector columns. Applying
them is two matrix contractions::

    projection[h, w] = weight[h, w] * sum_d sum_l sum_k cols[d, w, l] volume[d, l, k] rows[d, h, k]

with ``volume`` in the view's frame (depth, column axis, row axis). Dense products are deterministic
(no atomics, forward or backward) and fast on BLAS and tensor cores.

Forward projection (ray-driven; Joseph, "An improved algorithm for reprojecting rays through pixel
images", IEEE TMI 1982)
    Each ray is sampled where it crosses each slice. There trilinear interpolation reduces exactly to
    bilinear interpolation in the slice, and ``weight`` is the ray length between slices in mm,
    ``spacing * |ray| / (ray . direction)``. Volumes hold linear attenuation in 1/mm, so projections
    are dimensionless line integrals.

Adjoint
    The same contractions transposed: exactly the transpose of the forward projection, and what
    autograd uses for its gradient. Use it for data consistency (e.g. gradient steps on ||Ax - y||^2).

Back-projection (voxel-driven)
    Every voxel centre is projected onto each detector and the image or feature map is sampled
    bilinearly there (zero outside the detector): the unfiltered back-projection that forms PSCT-Net's
    volumetric prior and lifts its 2D features into 3D (BP-C). It smears values along rays without
    path-length weighting, so it is not the adjoint. Two implementations compute the same function:
    ``"separable"`` (the contractions above with interpolation weights at the voxels' projections:
    deterministic, the default on CUDA) and ``"sampling"`` (``F.grid_sample`` at every voxel's
    projection: three to four times faster on CPU, the default there, where its gradient is deterministic
    too).

Sampling: every pixel is one ray and every voxel one sample. Grids and images of matching resolution
(128^3 with 128^2, 16^3 with 16^2, as at PSCT-Net's encoder levels) see every voxel and pixel; much
finer inputs should be pooled first (``F.avg_pool2d``, ``F.avg_pool3d``), or small details alias.

A parallel beam samples every slice alike: the forward projection sums the volume along the rays and
then interpolates once (an exact sum when the detector matches the grid), and back-projection samples
one plane and expands it along the rays.

Interpolation weights and sampling grids are built once per (grid shape, detector shape, device,
dtype) and cached on the projector. With TF32 matmuls enabled on CUDA
(``torch.set_float32_matmul_precision("high")``) float32 results lose accuracy to about 1e-3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from custom.imaging.geometry import VIEW_NAMES, BiplanarGeometry, View
from torch import nn

REDUCTIONS = ("mean", "sum", "none")
BACKPROJECTIONS = ("auto", "separable", "sampling")
DRIVEN = ("ray", "voxel")


class SeparableOperator(NamedTuple):
    """One view's interpolation weights, ready to contract with a volume or an image.

    permutation: moves (B, C, X, Y, Z) into the view's frame (B, C, depth D, column axis L, row axis K);
        the row axis is z for both views, so the frame keeps the volume's contiguous last axis.
    rows: (D, H, K) weights between the grid's row axis and the detector rows, per depth slice
        (D = 1 for a parallel beam: every slice shares them).
    cols: (D, W, L) the same between the grid's column axis and the detector columns.
    weight: (H, W) per-pixel factor: the ray length per slice in mm (ray-driven), or 1 (voxel-driven).
    """

    permutation: tuple[int, int, int, int, int]
    rows: torch.Tensor
    cols: torch.Tensor
    weight: torch.Tensor


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


def separable_operator(
    view: View, grid: BiplanarGeometry, dtype: torch.dtype, device: torch.device, driven: str = "ray"
) -> SeparableOperator:
    """One view's weights on the grid of ``grid``, in ``dtype`` (geometry computed in >= float32).

    Args:
        driven: ``"ray"`` interpolates the volume where each pixel's ray crosses each slice (forward
            projection and its adjoint); ``"voxel"`` interpolates the image where each voxel centre lands
            (back-projection).
    """
    if driven not in DRIVEN:
        raise ValueError(f"driven must be one of {DRIVEN}, got {driven!r}.")
    (depth_axis, depth_sign), (row_axis, row_sign), (col_axis, col_sign) = _aligned_axes(view)
    work = {"dtype": torch.promote_types(dtype, torch.float32), "device": device}
    voxels_mm = grid.voxel_coordinates(**work)  # along x, y, z
    pixels_mm = view.detector_coordinates(**work)  # along the rows, the columns

    # 1. Magnification of each depth slice (one shared slice for a parallel beam).
    if view.beam == "cone":
        magnification = (view.sdd / (view.sod + depth_sign * voxels_mm[depth_axis]))[:, None]  # (D, 1)
    else:
        magnification = torch.ones(1, 1, **work)

    # 2. Per detector axis, the interpolation weights between pixels and voxels of each slice.
    def weights(detector_axis: int, sign: float, grid_axis: int) -> torch.Tensor:  # (D, pixels, voxels)
        pixels, voxels = view.det_shape[detector_axis], grid.vol_shape[grid_axis]
        if driven == "ray":  # the voxel index where each pixel's ray crosses the slice
            crossing = sign * pixels_mm[detector_axis] / magnification / grid.vol_spacing + (voxels - 1) / 2
            return _linear_weights(crossing, voxels)
        landing = sign * voxels_mm[grid_axis] * magnification / view.det_spacing + (pixels - 1) / 2
        return _linear_weights(landing, pixels).transpose(1, 2)  # the pixel index where each voxel lands

    rows, cols = weights(0, row_sign, row_axis), weights(1, col_sign, col_axis)

    # 3. Per-pixel weight: the ray length between consecutive slices, in mm, for a ray-driven operator.
    v, u = pixels_mm
    if driven == "voxel":
        weight = torch.ones(view.det_shape, **work)
    elif view.beam == "cone":
        weight = grid.vol_spacing * torch.sqrt(1 + (v[:, None] ** 2 + u[None, :] ** 2) / view.sdd**2)
    else:
        weight = torch.full(view.det_shape, grid.vol_spacing, **work)

    permutation = (0, 1, 2 + depth_axis, 2 + col_axis, 2 + row_axis)
    return SeparableOperator(permutation, rows.to(dtype), cols.to(dtype), weight.to(dtype))


def separable_project(volume: torch.Tensor, op: SeparableOperator) -> torch.Tensor:
    """One view's projection: (B, C, X, Y, Z) -> (B, C, H, W)."""
    frame = volume.permute(op.permutation)  # (B, C, D, L, K)
    if op.rows.shape[0] == 1:
        frame = frame.sum(dim=2, keepdim=True)  # parallel beam: sum along the rays first
    along_rows = torch.einsum("dhk,bcdlk->bcdlh", op.rows, frame)  # (B, C, D, L, H)
    return torch.einsum("dwl,bcdlh->bchw", op.cols, along_rows) * op.weight  # (B, C, H, W)


def separable_backproject(image: torch.Tensor, op: SeparableOperator, vol_shape: Sequence[int]) -> torch.Tensor:
    """Transpose of :func:`separable_project`: (B, C, H, W) -> (B, C, X, Y, Z) (a strided view)."""
    along_cols = torch.einsum("dwl,bchw->bcdlh", op.cols, image * op.weight)  # (B, C, D, L, H)
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
        backprojection: ``"separable"`` (deterministic contractions), ``"sampling"`` (``grid_sample``,
            fastest on CPU) or ``"auto"`` (separable on CUDA, sampling elsewhere). Both compute the same
            function. Defaults to ``"auto"``.

    Example::

        projector = Projector(BiplanarGeometry())
        views = projector(mu)[:, 0]                  # (B, 1, 128, 128, 128) 1/mm -> (B, 2, 128, 128)
        prior = projector.backproject(views)         # -> (B, 1, 128, 128, 128), mean of both views
        lifted = projector.backproject(features, vol_shape=(16, 16, 16))  # (B, C, 2, 16, 16) -> (B, C, 16, 16, 16)
    """

    def __init__(self, geometry: BiplanarGeometry | None = None, backprojection: str = "auto") -> None:
        super().__init__()
        if backprojection not in BACKPROJECTIONS:
            raise ValueError(f"backprojection must be one of {BACKPROJECTIONS}, got {backprojection!r}.")
        self.geometry = BiplanarGeometry() if geometry is None else geometry
        self.backprojection = backprojection
        self._cache: dict[tuple, tuple] = {}

    def extra_repr(self) -> str:
        return f"{self.geometry!r}, backprojection={self.backprojection!r}"

    def backprojection_for(self, device: torch.device) -> str:
        """The back-projection method used for tensors on ``device``: ``"separable"`` or ``"sampling"``."""
        if self.backprojection != "auto":
            return self.backprojection
        return "separable" if device.type == "cuda" else "sampling"

    def _cached(self, kind: str, vol_shape: Sequence[int], det_shape: Sequence[int], like: torch.Tensor) -> tuple:
        """Both views' operators of one kind ("ray", "voxel" or "grid") for one grid, detector, device, dtype."""
        dtype = torch.promote_types(like.dtype, torch.float32) if kind == "grid" else like.dtype
        key = (kind, tuple(vol_shape), tuple(det_shape), like.device, dtype)
        if key not in self._cache:
            grid = self.geometry.resampled(vol_shape, det_shape)
            # ordinary tensors even when the first call comes inside torch.inference_mode()
            with torch.inference_mode(False), torch.no_grad():
                if kind == "grid":
                    operators = tuple(sampling_grid(view, grid, dtype, like.device) for view in grid.views)
                else:
                    operators = tuple(separable_operator(view, grid, dtype, like.device, kind) for view in grid.views)
            self._cache[key] = operators
        return self._cache[key]

    def forward(self, volume: torch.Tensor, det_shape: Sequence[int] | None = None) -> torch.Tensor:
        """Line integrals (DRRs before detector physics) of both views.

        Args:
            volume: (B, C, X, Y, Z) linear attenuation, 1/mm (any channels: feature volumes project too).
            det_shape: detector pixels (H, W), one ray each. Defaults to the geometry's.

        Returns:
            (B, C, 2, H, W), view 0 frontal, 1 lateral; for C = 1, ``[:, 0]`` is the network layout
            (B, 2, H, W).
        """
        _check_volume(volume)
        det_shape = self.geometry.det_shape if det_shape is None else det_shape
        ops = self._cached("ray", volume.shape[2:], det_shape, volume)
        return torch.stack([separable_project(volume, op) for op in ops], dim=2)

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
        ops = self._cached("ray", vol_shape, views.shape[-2:], views)
        frontal, lateral = (separable_backproject(views[:, :, i], op, vol_shape) for i, op in enumerate(ops))
        return (frontal + lateral).contiguous()

    def backproject(
        self, images: torch.Tensor, vol_shape: Sequence[int] | None = None, reduction: str = "mean"
    ) -> torch.Tensor:
        """Voxel-driven, unfiltered back-projection of both views' images or feature maps.

        Args:
            images: (B, C, 2, H, W), or (B, 2, H, W) for C = 1; they span the detector, one sample per
                voxel (pool images much finer than the grid first).
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
        if self.backprojection_for(views.device) == "sampling":
            grids = self._cached("grid", vol_shape, views.shape[-2:], views)
            frontal, lateral = (sample_views(views[:, :, i], grid) for i, grid in enumerate(grids))
        else:
            ops = self._cached("voxel", vol_shape, views.shape[-2:], views)
            frontal, lateral = (separable_backproject(views[:, :, i], op, vol_shape) for i, op in enumerate(ops))
        if reduction == "none":
            full = (*views.shape[:2], *vol_shape)
            return torch.stack((frontal.expand(full), lateral.expand(full)), dim=2)
        # lerp at 0.5 is the mean in one pass; both views arrive as strided views of other layouts
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
    "BACKPROJECTIONS",
    "DRIVEN",
    "REDUCTIONS",
    "Projector",
    "SeparableOperator",
    "sample_views",
    "sampling_grid",
    "separable_backproject",
    "separable_operator",
    "separable_project",
]
