"""The CT grid seen from the head frame, and partial-volume painting on it.

The head frame has its origin at the centre of the calvarium's direction maps, x to the patient's
right, y anterior, z superior, mm. Shapes are implicit: a signed distance (mm, negative inside) at each
voxel centre becomes a partial-volume fraction, and :meth:`Canvas.paint` blends a CT number in by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.physics import AIR_HU
from custom.phantom.labels import BONE_LABELS, LABELS, OTHER_BONE


class Canvas:
    """The volumes being painted: HU, tissue labels and bone labels on the grid of ``geometry``.

    Head-frame coordinates of voxel centres are ``R^T (world - t)`` for the pose (R, t); they are made
    for the whole grid once (:attr:`full`) and for small boxes on demand.
    """

    def __init__(self, geometry: BiplanarGeometry, rotation: np.ndarray, translation: np.ndarray) -> None:
        self.spacing = geometry.vol_spacing  # mm
        self.axes = [c.float() for c in geometry.voxel_coordinates()]  # world x, y, z of voxel centres, mm
        self.rotation, self.translation = rotation, translation  # head -> world
        self.hu = torch.full(geometry.vol_shape, AIR_HU)
        self.labels = torch.zeros(geometry.vol_shape, dtype=torch.uint8)
        self.bones = torch.zeros(geometry.vol_shape, dtype=torch.uint8)
        self.full = self.coordinates((slice(None),) * 3)

    def coordinates(self, box: tuple[slice, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Head-frame x, y, z (mm) of the voxel centres in ``box``, each broadcast to the box shape."""
        shifted = [
            (axis[s] - t).view([-1 if i == k else 1 for k in range(3)])
            for i, (axis, s, t) in enumerate(zip(self.axes, box, self.translation))
        ]
        return tuple(sum(float(self.rotation[j, i]) * shifted[j] for j in range(3)) for i in range(3))

    def box(self, centre: Sequence[float], radius: float) -> tuple[slice, ...] | None:
        """Index box holding the ball of ``radius`` mm around a head-frame ``centre``; None if off grid."""
        world = self.rotation @ np.asarray(centre, dtype=float) + self.translation
        box = []
        for axis, w in zip(self.axes, world):
            start = int(np.searchsorted(axis.numpy(), w - radius - self.spacing))
            stop = int(np.searchsorted(axis.numpy(), w + radius + self.spacing))
            if stop <= start:
                return None
            box.append(slice(start, stop))
        return tuple(box)

    def paint(
        self, fraction: torch.Tensor, hu: float | torch.Tensor, label: str, box=None, bone: int | torch.Tensor = 0
    ):
        """Blend ``hu`` over the volume by ``fraction`` (0..1); relabel where ``fraction >= 0.5``.

        ``bone`` is the bone-map value (:data:`BONE_LABELS`) of bone voxels; a bone label defaults to
        the base, face and spine class.
        """
        box = box or (slice(None),) * 3
        self.hu[box] = torch.lerp(self.hu[box], torch.as_tensor(hu, dtype=torch.float32), fraction)
        covered = fraction >= 0.5
        self.labels[box] = torch.where(covered, LABELS[label], self.labels[box])
        if label == "bone" and isinstance(bone, int) and bone == 0:
            bone = BONE_LABELS[OTHER_BONE]
        self.bones[box] = torch.where(covered, torch.as_tensor(bone, dtype=torch.uint8), self.bones[box])

    def inside(self, distance: torch.Tensor) -> torch.Tensor:
        """Partial-volume fraction of a voxel from the signed distance (mm) of its centre to a surface."""
        return (0.5 - distance / self.spacing).clamp(0, 1)

    def band(self, distance: torch.Tensor, half_width: float) -> torch.Tensor:
        """Partial-volume fraction of a voxel inside the slab ``|distance| < half_width`` (mm)."""
        return (0.5 + (half_width - distance.abs()) / self.spacing).clamp(0, 1)


def ellipsoid_distance(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, semi: Sequence[float]) -> torch.Tensor:
    """Approximate signed distance (mm) to an ellipsoid at the origin; exact on the surface, first order near it."""
    ux, uy, uz = x / semi[0], y / semi[1], z / semi[2]
    radius = torch.sqrt(ux * ux + uy * uy + uz * uz)
    gradient = torch.sqrt((ux / semi[0]) ** 2 + (uy / semi[1]) ** 2 + (uz / semi[2]) ** 2)  # |grad radius| * radius
    return torch.where(gradient > 1e-9, (radius - 1) * radius / gradient.clamp(min=1e-9), -min(semi))


def ball(canvas: Canvas, centre: Sequence[float], semi: Sequence[float], yaw_deg: float = 0.0, box=None):
    """Box and fraction of an ellipsoid at a head-frame ``centre``, turned by ``yaw_deg`` about z.

    The box is the smallest one holding the ellipsoid unless given; (None, None) when off the grid.
    """
    box = box or canvas.box(centre, max(semi))
    if box is None:
        return None, None
    x, y, z = (q - c for q, c in zip(canvas.coordinates(box), centre))
    cos, sin = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    x, y = cos * x + sin * y, -sin * x + cos * y
    return box, canvas.inside(ellipsoid_distance(x, y, z, semi))


def pose_matrix(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(4, 4) homogeneous matrix of a rotation followed by a translation (mm)."""
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, translation
    return pose


__all__ = ["Canvas", "ball", "ellipsoid_distance", "pose_matrix"]
