"""Multi-scale encoders: one 2D encoder per view (or one shared), and the 3D encoder stages.

Each level halves the resolution: level 0 is the stem at full resolution, level k has ``channels[k]``
channels at 1 / 2^k of it. View features travel as (B, C, 2, h, w), the projector's layout (view 0
frontal, 1 lateral), so they can be back-projected directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from custom.imaging.geometry import VIEW_NAMES
from custom.networks.blocks import DownStage, conv
from torch import nn


class Encoder(nn.Module):
    """A stem and ``len(channels) - 1`` down stages; returns the features of every level.

    Args:
        spatial_dims: 2 for a view, 3 for the CT grid.
        in_channels: input channels.
        channels: channels per level, level 0 first.
        norm_name, act_name: MONAI normalisation and activation names.

    ``forward(x (B, in_channels, *S), conditioning)`` -> ``[(B, channels[k], *S / 2^k) for k]``;
    ``conditioning[k - 1]``, when given, transforms level ``k``'s features before the next stage sees
    them (PSCT-Net's BP-C).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int],
        norm_name: str | tuple,
        act_name: str | tuple,
    ) -> None:
        super().__init__()
        self.stem = conv(spatial_dims, in_channels, channels[0], norm_name, act_name)
        self.stages = nn.ModuleList(
            DownStage(spatial_dims, c_in, c_out, norm_name, act_name) for c_in, c_out in zip(channels, channels[1:])
        )

    def forward(
        self, x: torch.Tensor, conditioning: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None
    ) -> list[torch.Tensor]:
        features = [self.stem(x)]
        for k, stage in enumerate(self.stages):
            level = stage(features[-1])
            features.append(level if conditioning is None else conditioning[k](level))
        return features


class ViewEncoders(nn.Module):
    """The 2D encoders of the frontal and lateral views, shared or one per view.

    Args:
        channels: channels per level, level 0 first.
        shared: one encoder for both views (one feature space) or one per view. Defaults to False.
        norm_name, act_name: MONAI normalisation and activation names.
        in_channels: channels of each view (more than one for a view folded by space-to-depth).
            Defaults to 1.

    ``forward(views (B, 2, H, W), or (B, 2, in_channels, H, W))`` ->
    ``[(B, channels[k], 2, H / 2^k, W / 2^k) for k]``.
    """

    def __init__(
        self,
        channels: Sequence[int],
        shared: bool = False,
        norm_name: str | tuple = "INSTANCE",
        act_name: str | tuple = "RELU",
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        self.shared = shared
        count = 1 if shared else len(VIEW_NAMES)
        self.encoders = nn.ModuleList(Encoder(2, in_channels, channels, norm_name, act_name) for _ in range(count))

    def forward(self, views: torch.Tensor) -> list[torch.Tensor]:
        views = views.unsqueeze(2) if views.dim() == 4 else views  # (B, 2, C, H, W)
        if self.shared:  # both views as one batch through one encoder
            batch = views.shape[0]
            levels = self.encoders[0](views.flatten(0, 1))
            return [f.reshape(batch, 2, *f.shape[1:]).transpose(1, 2) for f in levels]
        per_view = [encoder(views[:, i]) for i, encoder in enumerate(self.encoders)]
        return [torch.stack(levels, dim=2) for levels in zip(*per_view)]
