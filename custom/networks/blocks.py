"""Convolutional stages shared by the 2D and 3D paths: stride-2 down stages and x2 up stages.

Thin compositions of MONAI's ``Convolution`` and ``ResidualUnit`` so that normalisation and
activation are chosen by name everywhere (``norm_name``, ``act_name``), as in MONAI's networks.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn


def conv(
    spatial_dims: int, in_channels: int, out_channels: int, norm_name, act_name, kernel_size: int = 3, strides: int = 1
) -> Convolution:
    """Convolution -> norm -> activation."""
    return Convolution(
        spatial_dims, in_channels, out_channels, strides=strides, kernel_size=kernel_size, norm=norm_name, act=act_name
    )


class DownStage(nn.Sequential):
    """Halve the resolution (2-wide stride-2 convolution), then a two-layer residual unit.

    (B, in_channels, *S) -> (B, out_channels, *S / 2). Coarse sample ``i`` is made from fine samples
    ``2i`` and ``2i + 1`` and centred between them, where :meth:`BiplanarGeometry.resampled` puts it, so
    2D and 3D features of one level stay on the geometry's grids (a 3-wide kernel with padding 1
    would shift each level by half a fine sample, toward opposite world directions in 2D and 3D).
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, norm_name: str | tuple, act_name: str | tuple
    ) -> None:
        super().__init__(
            Convolution(
                spatial_dims,
                in_channels,
                out_channels,
                strides=2,
                kernel_size=2,
                padding=0,
                norm=norm_name,
                act=act_name,
            ),
            ResidualUnit(spatial_dims, out_channels, out_channels, subunits=2, norm=norm_name, act=act_name),
        )


class UpStage(nn.Module):
    """Double the resolution (trilinear), then fuse with same-level inputs by convolution.

    Args:
        in_channels: channels of the coarser input.
        extra_channels: total channels of the same-level inputs concatenated after upsampling (0: none).
        out_channels: output channels.

    ``forward(x (B, in, *S), extras: list of (B, c_i, *2S))`` -> (B, out, *2S).
    """

    def __init__(
        self, in_channels: int, extra_channels: int, out_channels: int, norm_name: str | tuple, act_name: str | tuple
    ) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
            conv(3, in_channels, out_channels, norm_name, act_name),
        )
        self.fuse = ResidualUnit(
            3, out_channels + extra_channels, out_channels, subunits=2, norm=norm_name, act=act_name
        )

    def forward(self, x: torch.Tensor, extras: list[torch.Tensor]) -> torch.Tensor:
        return self.fuse(torch.cat([self.up(x), *extras], dim=1))
