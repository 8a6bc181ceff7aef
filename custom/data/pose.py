"""Head pose jitter for training: one small random rigid motion applied to a CT and its label maps.

The X-rays are simulated from the moved CT afterwards, so input and target stay consistent. Rotation
is about the grid centre (the isocentre); voxels that come in from outside the grid are air in a CT
and background in a label map.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from custom.data.canonicalise import interpolate_at
from custom.imaging.geometry import rotation_matrix
from custom.imaging.physics import AIR_HU
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform


def rigid_motion(
    volume: torch.Tensor, rotation: np.ndarray, shift_voxels: Sequence[float], mode: str, padding: float
) -> torch.Tensor:
    """Resample ``volume`` (C, X, Y, Z) moved by ``rotation`` (3 x 3) about its centre and then shifted.

    Args:
        volume: (C, X, Y, Z) values on an isotropic grid.
        rotation: (3, 3) rotation matrix in voxel axes (x, y, z).
        shift_voxels: translation along x, y, z, voxels.
        mode: ``bilinear`` (trilinear) or ``nearest``.
        padding: the value of voxels moved in from outside.
    """
    # 1. the input voxel each output voxel comes from: in = R^T (out - centre - shift) + centre
    axes = [torch.arange(n, dtype=torch.float64) for n in volume.shape[1:]]
    out = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (X, Y, Z, 3)
    centre = (torch.tensor(volume.shape[1:], dtype=torch.float64) - 1) / 2
    shift = torch.as_tensor(np.asarray(shift_voxels, dtype=np.float64))
    index = (out - centre - shift) @ torch.from_numpy(np.asarray(rotation, dtype=np.float64)) + centre
    # 2. sample there, with the padding value outside the grid
    return interpolate_at(volume, index, padding, mode)


class RandHeadPosed(MapTransform, RandomizableTransform):
    """Rotate (about each axis, uniform in +-``max_rotation_deg``) and shift (+-``max_shift_mm``) the head.

    Args:
        keys: CT keys, resampled trilinearly and padded with air. Defaults to ``"ct"``.
        label_keys: label-map keys, resampled by nearest neighbour and padded with 0. Defaults to ().
        max_rotation_deg: largest rotation about each axis, degrees. Defaults to 3.
        max_shift_mm: largest shift along each axis, mm. Defaults to 3.
        spacing: voxel size of the canonical grid, mm. Defaults to None: read from the CT's affine
            (a MetaTensor, as canonical CTs and phantoms are).
        prob: probability of moving a case. Defaults to 1.
        allow_missing_keys: skip missing keys. Defaults to False.
    """

    def __init__(
        self,
        keys: KeysCollection = "ct",
        label_keys: KeysCollection = (),
        max_rotation_deg: float = 3.0,
        max_shift_mm: float = 3.0,
        spacing: float | None = None,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        label_keys = (label_keys,) if isinstance(label_keys, str) else tuple(label_keys)
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if max_rotation_deg < 0 or max_shift_mm < 0 or (spacing is not None and spacing <= 0):
            raise ValueError("max_rotation_deg and max_shift_mm must be >= 0 and spacing > 0 (mm).")
        self.label_keys = label_keys
        self.max_rotation_deg, self.max_shift_mm, self.spacing = max_rotation_deg, max_shift_mm, spacing
        self._rotation, self._shift = np.eye(3), np.zeros(3)

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._rotation = rotation_matrix(self.R.uniform(-1, 1, 3) * self.max_rotation_deg)
        self._shift = self.R.uniform(-1, 1, 3) * self.max_shift_mm  # mm

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        shift = self._shift / self._spacing(d[keys[0]])  # voxels
        for key in keys:
            d[key] = rigid_motion(d[key], self._rotation, shift, "bilinear", AIR_HU)
        for key in self.label_keys:
            if key in d or not self.allow_missing_keys:
                d[key] = rigid_motion(d[key], self._rotation, shift, "nearest", 0.0)
        return d

    def _spacing(self, volume: torch.Tensor) -> float:
        """The isotropic voxel size (mm): the argument, or the MetaTensor's affine."""
        if self.spacing is not None:
            return self.spacing
        if not isinstance(volume, MetaTensor):
            raise ValueError("RandHeadPosed needs a spacing (mm) or a MetaTensor CT with an affine.")
        sizes = np.linalg.norm(np.asarray(volume.affine, dtype=float)[:3, :3], axis=0)
        if not np.allclose(sizes, sizes[0], rtol=1e-4):
            raise ValueError(f"RandHeadPosed needs an isotropic grid, got voxel sizes {sizes} mm; canonicalise first.")
        return float(sizes[0])
