"""Axis-aligned ellipsoids with closed-form line integrals, and their partial-volume rasterisation.

They give the projector exact answers to be checked against (a ray through an ellipsoid of constant
value ``v`` integrates to ``v`` times its chord length) and a small built-in head-like object for the
demo. Positions are world millimetres (RAS), as in :mod:`custom.imaging.geometry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from custom.imaging.geometry import BiplanarGeometry, Vector


@dataclass(frozen=True)
class Ellipsoid:
    """A solid ellipsoid of constant value, axes along x, y, z.

    Args:
        centre: centre, mm (RAS).
        semi_axes: semi-axis lengths along x, y, z, mm.
        value: value inside (e.g. attenuation in 1/mm, or HU).
    """

    centre: Vector  # mm
    semi_axes: Vector  # mm
    value: float

    def __post_init__(self) -> None:
        if len(self.centre) != 3 or len(self.semi_axes) != 3 or min(self.semi_axes) <= 0:
            raise ValueError(f"an ellipsoid needs a 3D centre and three positive semi-axes, got {self}.")

    def chord(self, origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """Length inside the ellipsoid of the lines ``origins + t * directions``.

        Args:
            origins: (..., 3) points on the lines, mm.
            directions: (..., 3) unit directions.

        Returns:
            (...) chord lengths, mm (zero for lines that miss).
        """
        centre, semi_axes = (
            torch.tensor(v, dtype=origins.dtype, device=origins.device) for v in (self.centre, self.semi_axes)
        )
        o, d = (origins - centre) / semi_axes, directions / semi_axes  # the unit sphere's frame
        a, half_b, c = (d * d).sum(-1), (o * d).sum(-1), (o * o).sum(-1) - 1
        return torch.sqrt((half_b**2 - a * c).clamp(min=0)) * 2 / a

    def coverage(self, geometry: BiplanarGeometry, supersampling: int = 3) -> tuple[tuple[slice, ...], torch.Tensor]:
        """Fraction of each voxel inside, over the ellipsoid's bounding box on the grid.

        Args:
            geometry: the CT grid.
            supersampling: sub-samples per voxel along each axis. Defaults to 3.

        Returns:
            The box as index slices into (X, Y, Z) and the float64 fractions there.
        """
        offsets = (
            (torch.arange(supersampling, dtype=torch.float64) + 0.5) / supersampling - 0.5
        ) * geometry.vol_spacing
        box, inside = [], []
        for axis, centres in enumerate(geometry.voxel_coordinates()):
            # 1. voxels touched by the ellipsoid along this axis
            touched = ((centres - self.centre[axis]).abs() < self.semi_axes[axis] + geometry.vol_spacing / 2).nonzero()
            start, stop = (int(touched[0]), int(touched[-1]) + 1) if len(touched) else (0, 0)
            box.append(slice(start, stop))
            # 2. squared sub-sample positions in the unit-sphere frame
            mm = centres[start:stop, None] + offsets  # (voxels, supersampling)
            inside.append(((mm - self.centre[axis]) / self.semi_axes[axis]).flatten() ** 2)
        # 3. inside test on the supersampled box, averaged back to voxels
        radius2 = inside[0][:, None, None] + inside[1][None, :, None] + inside[2][None, None, :]
        shape = [s.stop - s.start for s in box]
        fraction = (
            (radius2 <= 1).double().reshape(shape[0], supersampling, shape[1], supersampling, shape[2], supersampling)
        )
        return tuple(box), fraction.mean(dim=(1, 3, 5))


def rasterise(
    ellipsoids: Sequence[Ellipsoid], geometry: BiplanarGeometry, background: float = 0.0, supersampling: int = 3
) -> torch.Tensor:
    """Paint ellipsoids in order onto the CT grid, each over what lies beneath (partial volume blended).

    Returns:
        (X, Y, Z) float32 volume.
    """
    volume = torch.full(geometry.vol_shape, background, dtype=torch.float64)
    for ellipsoid in ellipsoids:
        box, fraction = ellipsoid.coverage(geometry, supersampling)
        volume[box] = torch.lerp(volume[box], torch.full_like(fraction, ellipsoid.value), fraction)
    return volume.float()


def analytic_head() -> tuple[list[Ellipsoid], float]:
    """A coarse child's head in HU, painted in order, and its background (air, -1000 HU).

    Sized like a 2-year-old (about 17 cm long, 14.5 cm wide): scalp and face soft tissue, a bony vault
    around the brain with two ventricles, skull base, mandible, air in the nasal cavity, eyes in their
    orbits, and a radiographer's lead marker beside the patient's LEFT temple, so the demo images show
    which way round they are.
    """
    e = Ellipsoid
    layers = [
        e((0, -5, 10), (72, 85, 80), 40),  # scalp and soft tissue
        e((0, 45, -45), (48, 42, 42), 40),  # face
        e((0, -10, 20), (67, 78, 68), 1000),  # cranial vault
        e((0, -10, 22), (62, 73, 62), 30),  # brain
        e((-8, -8, 30), (4, 20, 9), 5),  # left lateral ventricle
        e((8, -8, 30), (4, 20, 9), 5),  # right lateral ventricle
        e((0, 35, -35), (35, 25, 12), 800),  # skull base and maxilla
        e((0, 45, -70), (38, 30, 10), 900),  # mandible ...
        e((0, 30, -70), (30, 30, 12), 40),  # ... hollowed to an arch
        e((0, 55, -30), (8, 18, 15), -900),  # nasal cavity
        e((-25, 52, -10), (13, 14, 13), -100),  # left orbit (fat)
        e((25, 52, -10), (13, 14, 13), -100),  # right orbit (fat)
        e((-25, 55, -10), (9.5, 9.5, 9.5), 10),  # left eye
        e((25, 55, -10), (9.5, 9.5, 9.5), 10),  # right eye
        e((-77, 0, 60), (4, 4, 4), 10000),  # lead "L" marker at the patient's left
    ]
    return layers, -1000.0


__all__ = ["Ellipsoid", "analytic_head", "rasterise"]
