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
from custom.imaging.geometry import VIEW_NAMES
from custom.networks.blocks import UpStage
from torch import nn


class MultiViewFusion(nn.Module):
    """Per-view decoder streams whose level-wise mean conditions the main decoder.

    Args:
        channels: channels per level, level 0 (full resolution) first.
        norm_name, act_name: MONAI normalisation and activation names.

    ``forward(seeds (B, C_L, 2, *bottleneck), lifted [(B, c_k, 2, *grid_k) for k = 0..L-1])`` -> fused
    features per decoder level, coarse to fine: ``[(B, c_k, *grid_k) for k = L-1 .. 0]``. ``lifted[k]``
    holds each view's level-k encoder features back-projected alone onto level k's grid.
    """

    def __init__(self, channels: Sequence[int], norm_name: str | tuple, act_name: str | tuple) -> None:
        super().__init__()
        levels = range(len(channels) - 2, -1, -1)
        self.streams = nn.ModuleList(
            nn.ModuleList(UpStage(channels[k + 1], channels[k], channels[k], norm_name, act_name) for k in levels)
            for _ in VIEW_NAMES
        )

    def forward(self, seeds: torch.Tensor, lifted: list[torch.Tensor]) -> list[torch.Tensor]:
        streams = [seeds[:, :, v] for v in range(len(VIEW_NAMES))]
        fused = []
        for step, k in enumerate(range(len(lifted) - 1, -1, -1)):
            streams = [self.streams[v][step](h, [lifted[k][:, :, v]]) for v, h in enumerate(streams)]
            fused.append(torch.stack(streams).mean(0))
        return fused
