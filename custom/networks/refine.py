"""Guided refinement: a correction on the full CT grid from coefficients predicted on a coarser one.

A 3D convolution costs in proportion to the voxels it runs on, and on a CPU the full 128^3 grid makes
every convolution there the most expensive layer of the generator. The full-resolution detail of a
skull vault 1-2 mm thick is, however, already in volumes that need no learning: each view
back-projected alone (the two halves of BP-I) and the floor of ``floor.py``. So the network predicts,
on its coarse grid, the coefficients of a local linear combination of these guides and the
refinement applies it on the full grid (in the spirit of guided filtering and bilateral guided
upsampling: He et al., TPAMI 2013; Chen et al., SIGGRAPH 2016):

    correction(v) = b(v) + sum_j a_j(v) * guide_j(v) + d(v),

with ``a_j`` and ``b`` upsampled (trilinear) from the coarse grid, and ``d`` a detail term that each
coarse voxel writes into its own ``factor^3`` fine voxels (``factor^3`` channels unfolded by
:func:`~custom.networks.folding.depth_to_space`, a sub-pixel convolution), so that coarse features can
also place detail the guides do not hold. With ``factor`` 1 there is no upsampling and no detail term
(it would be ``b`` again): the same head serves a network decoding at full resolution. Everything
comes from one zero-initialised 1x1x1 convolution, so the correction starts at exactly zero.
"""

from __future__ import annotations

import torch
from custom.networks.folding import depth_to_space
from torch import nn


class GuidedRefinement(nn.Module):
    """Coarse features -> full-resolution correction, linear in the guide volumes.

    Args:
        in_channels: channels of the coarse features.
        guides: number of full-resolution guide volumes (one channel each).
        factor: how many times finer the guides' grid is, per axis.

    ``forward(features (B, in_channels, *S), guides [(B, 1, *factor S)] * guides)`` -> (B, 1, *factor S).

    Raises:
        ValueError: ``factor`` below 1 or a negative number of guides.
    """

    def __init__(self, in_channels: int, guides: int, factor: int = 1) -> None:
        super().__init__()
        if factor < 1 or guides < 0:
            raise ValueError(f"factor must be >= 1 and guides >= 0, got {factor} and {guides}.")
        self.guides, self.factor = guides, factor
        self.detail = factor**3 if factor > 1 else 0
        self.coefficients = nn.Conv3d(in_channels, guides + 1 + self.detail, kernel_size=1)  # a_1..a_G, b, d
        nn.init.zeros_(self.coefficients.weight)
        nn.init.zeros_(self.coefficients.bias)

    def forward(self, features: torch.Tensor, guides: list[torch.Tensor]) -> torch.Tensor:
        if len(guides) != self.guides:
            raise ValueError(f"expected {self.guides} guide volumes, got {len(guides)}.")
        out = self.coefficients(features)  # (B, G + 1 + factor^3, *S)
        coefficients = out[:, : self.guides + 1]  # (B, G + 1, *S)
        if self.factor > 1:
            coefficients = nn.functional.interpolate(
                coefficients, scale_factor=self.factor, mode="trilinear", align_corners=False
            )  # (B, G + 1, *factor S)
        correction = coefficients[:, -1:]
        if self.detail:
            correction = correction + depth_to_space(out[:, self.guides + 1 :], self.factor)  # (B, 1, *factor S)
        for j, guide in enumerate(guides):
            correction = torch.addcmul(correction, coefficients[:, j : j + 1], guide)
        return correction


__all__ = ["GuidedRefinement"]
