"""BP-I and BP-C of PSCT-Net (arXiv 2606.19867): geometric lifting of 2D views and features into the CT grid.

Both go through the geometry's :class:`~custom.imaging.projector.Projector`, so the network lifts exactly as
the X-rays were taken (cone beam, magnification, orientation); nothing is learned in the lifting.
"""

from __future__ import annotations

import torch
from custom.imaging.projector import Projector
from custom.networks.blocks import conv
from torch import nn


class BackProjectionPrior(nn.Module):
    """BP-I: the unfiltered back-projection of both input views, averaged: a coarse volume prior.

    ``forward(views (B, 2, H, W))`` -> (B, 1, X, Y, Z) on the geometry's grid.
    """

    def __init__(self, projector: Projector) -> None:
        super().__init__()
        self.projector = projector

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.projector.backproject(views)


class BackProjectionConditioning(nn.Module):
    """BP-C: add one encoder level's back-projected 2D features (both views averaged) to its 3D features.

    The generator back-projects each level's 2D features onto that level's grid once (shared with
    MV3D-C); this module maps their mean over the views to the 3D channels (conv3 + norm + act) and
    adds the result to the 3D encoder features.

    Args:
        in_channels: channels of the 2D features.
        out_channels: channels of the 3D features.
        norm_name, act_name: MONAI normalisation and activation names.

    ``forward(lifted (B, C2, x, y, z), features_3d (B, C3, x, y, z))`` -> (B, C3, x, y, z).
    """

    def __init__(self, in_channels: int, out_channels: int, norm_name: str | tuple, act_name: str | tuple) -> None:
        super().__init__()
        self.fuse = conv(3, in_channels, out_channels, norm_name, act_name)

    def forward(self, lifted: torch.Tensor, features_3d: torch.Tensor) -> torch.Tensor:
        return features_3d + self.fuse(lifted)
