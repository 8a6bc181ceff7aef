"""MV3D-C of PSCT-Net (X2CT-GAN's Connection-C): per-view decoder streams fused at every decoder level.

Each view has its own 3D decoder stream. At every level it takes that view's encoder features lifted
into the CT grid by back-projecting the view alone (X2CT-GAN copies features along the array depth and
then permutes each view's volume into the CT frame; the geometric back-projection lands in the CT
frame directly, so no permutation is needed). The two streams' features are averaged at each level
and handed to the main decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from custom.geometry import VIEW_NAMES
from custom.networks.blocks import UpStage
from custom.projector import Projector


class MultiViewFusion(nn.Module):
    """Per-view decoder streams whose level-wise mean conditions the main decoder.

    Args:
        projector: the geometry's projector.
        channels: channels per level, level 0 (full resolution) first.
        norm_name, act_name: MONAI normalisation and activation names.

    ``forward(seeds (B, C_L, 2, *bottleneck), features_2d [(B, c_k, 2, h_k, w_k) for k])`` ->
    fused features per decoder level, coarse to fine: ``[(B, c_k, *grid_k) for k = L-1 .. 0]``.
    """

    def __init__(
        self, projector: Projector, channels: Sequence[int], norm_name: str | tuple, act_name: str | tuple
    ) -> None:
        super().__init__()
        self.projector = projector
        levels = range(len(channels) - 2, -1, -1)
        self.streams = nn.ModuleList(
            nn.ModuleList(UpStage(channels[k + 1], channels[k], channels[k], norm_name, act_name) for k in levels)
            for _ in VIEW_NAMES
        )

    def forward(self, seeds: torch.Tensor, features_2d: list[torch.Tensor]) -> list[torch.Tensor]:
        streams = [seeds[:, :, v] for v in range(len(VIEW_NAMES))]
        fused = []
        for step, k in enumerate(range(len(features_2d) - 2, -1, -1)):
            grid = [2 * n for n in streams[0].shape[2:]]
            lifted = self.projector.backproject(features_2d[k], vol_shape=grid, reduction="none")  # (B, c, 2, *grid)
            streams = [self.streams[v][step](h, [lifted[:, :, v]]) for v, h in enumerate(streams)]
            fused.append(torch.stack(streams).mean(0))
        return fused
