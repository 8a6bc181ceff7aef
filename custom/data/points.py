"""Query points for training an implicit network: uniform voxels plus voxels on bone boundaries.

SPIDER learns from N points per case instead of whole volumes. Uniform points cover the field of view;
boundary points (voxels whose 3 x 3 x 3 neighbourhood holds both bone and not bone) put weight where
the structure changes, which is what sharpens bone edges. Points sit at voxel centres, so their
targets are the CT's and the labels' voxel values, exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def boundary_mask(mask: torch.Tensor) -> torch.Tensor:
    """Voxels (X, Y, Z) whose 3 x 3 x 3 neighbourhood holds both values of a boolean mask."""
    volume = mask.float()[None, None]
    dilated = F.max_pool3d(volume, 3, stride=1, padding=1)
    eroded = -F.max_pool3d(-volume, 3, stride=1, padding=1)
    return (dilated != eroded)[0, 0]


def sample_voxels(
    mask: torch.Tensor, n: int, boundary_fraction: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices (n, 3) of voxels: ``boundary_fraction`` of them on the mask's boundary, the rest uniform.

    Args:
        mask: (X, Y, Z) boolean structure mask (e.g. bone).
        n: points to draw (with replacement).
        boundary_fraction: share drawn from the boundary, in [0, 1]; all uniform when it is empty.
        generator: random source. Defaults to torch's global one.
    """
    if not 0 <= boundary_fraction <= 1:
        raise ValueError(f"boundary_fraction must be in [0, 1], got {boundary_fraction}.")
    boundary = boundary_mask(mask).flatten().nonzero()[:, 0]
    n_boundary = round(n * boundary_fraction) if boundary.numel() else 0
    drawn = torch.randint(mask.numel(), (n - n_boundary,), generator=generator, device=mask.device)
    if n_boundary:
        pick = torch.randint(boundary.numel(), (n_boundary,), generator=generator, device=mask.device)
        drawn = torch.cat([drawn, boundary[pick]])
    return torch.stack(torch.unravel_index(drawn, mask.shape), dim=-1)


__all__ = ["boundary_mask", "sample_voxels"]
