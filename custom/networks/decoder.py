"""The main 3D decoder: up stages from the bottleneck to the CT grid, with same-level inputs.

At each level the upsampled features are concatenated with whatever that level offers: the 3D
encoder's skip (when the BP-I encoder runs) and the MV3D-C fused view features (when on).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from custom.networks.blocks import UpStage
from torch import nn


class Decoder(nn.Module):
    """Up stages from level L to level 0.

    Args:
        channels: channels per level, level 0 first.
        encoder_skips: concatenate the 3D encoder's features of each level.
        fused_views: concatenate MV3D-C's fused features of each level.
        norm_name, act_name: MONAI normalisation and activation names.

    ``forward(bottleneck (B, C_L, *grid_L), skips [(B, c_k, *grid_k) for k = 0..L] or None,
    fused [(B, c_k, *grid_k) for k = L-1..0] or None)`` -> (B, c_0, *grid_0).
    """

    def __init__(
        self,
        channels: Sequence[int],
        encoder_skips: bool,
        fused_views: bool,
        norm_name: str | tuple,
        act_name: str | tuple,
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            UpStage(
                channels[k + 1], channels[k] * (int(encoder_skips) + int(fused_views)), channels[k], norm_name, act_name
            )
            for k in range(len(channels) - 2, -1, -1)
        )

    def forward(
        self, bottleneck: torch.Tensor, skips: list[torch.Tensor] | None, fused: list[torch.Tensor] | None
    ) -> torch.Tensor:
        x = bottleneck
        levels = len(self.stages)
        for step, stage in enumerate(self.stages):
            k = levels - 1 - step
            extras = ([skips[k]] if skips is not None else []) + ([fused[step]] if fused is not None else [])
            x = stage(x, extras)
        return x
