"""The X2CT-GAN 2D->3D link (Ying et al., CVPR 2019): a fully connected layer per view.

Each view's bottleneck feature map is squeezed to a few channels, flattened, mapped by one linear
layer to a small 3D feature volume and expanded back to the bottleneck channels. The layer learns
where each pixel's information goes; PSCT-Net's AGP-3D (``agp.py``) replaces it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from custom.imaging.geometry import VIEW_NAMES
from torch import nn


class FullyConnectedLink(nn.Module):
    """Per-view fully connected lifting of the 2D bottleneck to the 3D bottleneck grid.

    Args:
        in_channels: channels of the 2D bottleneck features.
        out_channels: channels of the 3D output.
        det_shape: (h, w) of the 2D bottleneck, pixels.
        grid_shape: (x, y, z) of the 3D bottleneck, voxels.
        squeeze_channels: channels each side of the linear layer (it has
            ``(squeeze * h * w) * (squeeze * x * y * z)`` weights). Defaults to 8.

    ``forward(features (B, C, 2, h, w))`` -> (per-view volumes (B, out_channels, 2, x, y, z)).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        det_shape: Sequence[int],
        grid_shape: Sequence[int],
        squeeze_channels: int = 8,
    ) -> None:
        super().__init__()
        self.grid_shape = tuple(grid_shape)
        self.squeeze_channels = squeeze_channels
        views = len(VIEW_NAMES)
        self.squeeze = nn.ModuleList(nn.Conv2d(in_channels, squeeze_channels, 1) for _ in range(views))
        self.linear = nn.ModuleList(
            nn.Linear(squeeze_channels * math.prod(det_shape), squeeze_channels * math.prod(grid_shape))
            for _ in range(views)
        )
        self.expand = nn.ModuleList(nn.Conv3d(squeeze_channels, out_channels, 1) for _ in range(views))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        volumes = []
        for i, (squeeze, linear, expand) in enumerate(zip(self.squeeze, self.linear, self.expand)):
            flat = torch.relu(squeeze(features[:, :, i])).flatten(1)  # (B, squeeze * h * w)
            volume = torch.relu(linear(flat)).view(-1, self.squeeze_channels, *self.grid_shape)
            volumes.append(expand(volume))
        return torch.stack(volumes, dim=2)
