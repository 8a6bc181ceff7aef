"""Head localisation in a CT: the skull's bounding box, found from bone inside the largest body component.

:func:`locate_head` works on a coarse grid of block means and maxima (RAS, at least
:data:`LOCATE_SPACING` mm) and returns a :class:`HeadBox` in world millimetres; its centre becomes the
isocentre when :class:`~custom.data.canonicalise.CanonicaliseCT` resamples a CT.
:func:`connected_components` labels face-connected components in plain torch (no SciPy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from custom.imaging.physics import AIR_THRESHOLD_HU, BONE_HU

LOCATE_SPACING = 2.0  # mm, the finest grid the head is located on (connected components cost time)


@dataclass(frozen=True)
class HeadBox:
    """Where the head is in a CT's world (RAS mm).

    Attributes:
        lower: (3,) lowest x, y, z of the box, mm.
        upper: (3,) highest x, y, z of the box, mm.
        located_by: ``"bone"`` (the skull), ``"body"`` (no bone found) or ``"volume"`` (nothing above
            the body threshold: the scan's own box).
    """

    lower: np.ndarray  # (3,) mm
    upper: np.ndarray  # (3,) mm
    located_by: str

    @property
    def centre(self) -> np.ndarray:
        """(3,) centre of the box, mm."""
        return (self.lower + self.upper) / 2

    @property
    def extent(self) -> np.ndarray:
        """(3,) size of the box, mm."""
        return self.upper - self.lower


def connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Face-connected (6-neighbour) components of a 3D mask.

    Pointer-jumping union-find on the grid in plain torch (no SciPy; ITK's filters take seconds to
    load): every voxel is labelled by its root, the smallest flat index of its component found so
    far; each round hooks every root onto the smallest root next to any of its voxels, then
    compresses the paths, until no two neighbours disagree (a few rounds).

    Args:
        mask: (I, J, K) bool.

    Returns:
        ``(labels, sizes)``: labels (I, J, K) int64, -1 outside the mask and 0 .. C - 1 inside with 0
        the largest component; sizes (C,) voxels, in decreasing order.
    """
    # 1. crop to the mask; every foreground voxel its own root; the background points at the sentinel n
    labels = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
    if not bool(mask.any()):
        return labels, torch.zeros(0, dtype=torch.long, device=mask.device)
    window = []
    for axis in range(3):
        hits = torch.nonzero(mask.any(dim=[d for d in range(3) if d != axis])).flatten()
        window.append(slice(int(hits[0]), int(hits[-1]) + 1))
    mask = mask[tuple(window)]
    n = mask.numel()
    label = torch.where(mask, torch.arange(n, device=mask.device).view(mask.shape), n)
    parent = torch.arange(n + 1, device=mask.device)

    # 2. hook roots onto the smallest neighbouring root and compress, until stable
    while True:
        low = label.clone()
        for axis in range(3):
            k = mask.shape[axis]
            before, after = low.narrow(axis, 0, k - 1), low.narrow(axis, 1, k - 1)
            before.copy_(torch.minimum(before, label.narrow(axis, 1, k - 1)))
            after.copy_(torch.minimum(after, label.narrow(axis, 0, k - 1)))
        low = torch.where(mask, low, n)
        parent = parent.scatter_reduce(0, label.flatten(), low.flatten(), reduce="amin")
        while not torch.equal(jumped := parent[parent], parent):
            parent = jumped
        relabelled = parent[label]
        if torch.equal(relabelled, label):
            break
        label = relabelled

    # 3. number the components by decreasing size
    counts = torch.bincount(label.flatten(), minlength=n + 1)[:n]
    roots = torch.nonzero(counts).flatten()
    sizes = counts[roots]
    order = torch.argsort(sizes, descending=True, stable=True)
    rank = torch.full((n + 1,), -1, dtype=torch.long, device=mask.device)
    rank[roots[order]] = torch.arange(len(order), device=mask.device)
    labels[tuple(window)] = rank[label]
    return labels, sizes[order]


def _voxel_box(mask: torch.Tensor, affine: np.ndarray, height: float) -> tuple[np.ndarray, np.ndarray]:
    """World box (lower, upper) (3,) mm of a non-empty mask's voxels within ``height`` mm below its top."""
    index = torch.nonzero(mask).double().cpu().numpy()  # (M, 3)
    world = index @ affine[:3, :3].T + affine[:3, 3]  # (M, 3) mm, voxel centres
    half = np.abs(affine[:3, :3]).sum(axis=1) / 2  # (3,) mm, half the world extent of one voxel
    top = world[:, 2].max() + half[2]
    world = world[world[:, 2] >= top - height + half[2]]
    return world.min(axis=0) - half, world.max(axis=0) + half


def locate_head(
    mean: torch.Tensor,
    peak: torch.Tensor,
    affine: np.ndarray,
    body_threshold: float = AIR_THRESHOLD_HU,
    bone_threshold: float = BONE_HU,
    head_height: float = 230.0,
    min_bone_fraction: float = 0.01,
) -> HeadBox:
    """Find the skull's bounding box in a (coarse) CT.

    The rule:

    1. body: the largest face-connected component of ``mean > body_threshold``; this drops the couch,
       head rests, immobilisation masks and noise, which air separates from the head;
    2. bone: ``peak > bone_threshold`` inside the body (grown by one voxel, so thin bone whose block
       mean is air still counts), keeping components of at least ``min_bone_fraction`` of the largest
       (drops specks of noise, calcifications and small metal);
    3. cranial part: only bone within ``head_height`` mm below the highest bone voxel counts, so a scan
       that goes on through the neck to the shoulders is located by its skull, with the vertex kept
       inside the grid;
    4. fall back to the body's box (same rule) without bone, and to the whole scan without a body.

    Args:
        mean: (I, J, K) HU, block means of the CT (its voxels, or blocks of them).
        peak: (I, J, K) HU, block maxima on the same grid (``mean`` itself for a fine CT).
        affine: (4, 4) voxel index of that grid -> RAS+ mm.
        body_threshold: HU above which a voxel is body. Defaults to -500.
        bone_threshold: HU above which a voxel is bone. Defaults to 300.
        head_height: cranio-caudal extent of the head, mm. Defaults to 230 (an adult skull with its
            mandible).
        min_bone_fraction: smallest bone component kept, as a fraction of the largest. Defaults to 0.01.
    """
    # 1. body: the largest connected component above the body threshold
    labels, _ = connected_components(mean > body_threshold)
    body = labels == 0
    if not bool(body.any()):
        edges = np.array([[-0.5] * 3, [n - 0.5 for n in mean.shape]])  # voxel indices of the scan's faces
        corners = np.stack(np.meshgrid(*edges.T, indexing="ij"), -1).reshape(-1, 3)
        world = corners @ affine[:3, :3].T + affine[:3, 3]  # (8, 3) mm
        return HeadBox(world.min(axis=0), world.max(axis=0), "volume")

    # 2. bone inside the (slightly grown) body, without specks
    grown = F.max_pool3d(body[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
    bone_labels, sizes = connected_components((peak > bone_threshold) & grown)
    if len(sizes):
        keep = int((sizes >= min_bone_fraction * sizes[0]).sum())
        bone = (bone_labels >= 0) & (bone_labels < keep)
        return HeadBox(*_voxel_box(bone, affine, head_height), "bone")

    # 3. no bone: the body
    return HeadBox(*_voxel_box(body, affine, head_height), "body")


__all__ = ["LOCATE_SPACING", "HeadBox", "connected_components", "locate_head"]
