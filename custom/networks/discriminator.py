"""The 3D PatchGAN discriminator for LSGAN training, at several scales, optionally conditioned on the prior.

As in pix2pixHD and X2CT-GAN, the same patch discriminator design judges the volume at full
resolution and at successive 2x average-pooled scales; each returns a map of patch logits (LSGAN
targets 1 for real, 0 for generated). Conditioned, it sees the BP-I prior beside the volume, so it
judges whether a CT fits its X-rays, not only whether it looks like a CT.
"""

from __future__ import annotations

import torch
from monai.networks.nets import PatchDiscriminator
from torch import nn
from torch.nn import functional as F


class MultiScalePatchDiscriminator3d(nn.Module):
    """Patch discriminators on the volume at ``num_scales`` scales (MONAI ``PatchDiscriminator`` each).

    Args:
        channels: channels of the first layer (doubling per layer). Defaults to 8: with 32 (X2CT-GAN's
            width at this depth) the three discriminator passes of a 128^3 training iteration cost
            about 3.5 s on 2 CPU cores, more than the generator; with 8, about 0.7 s.
        num_layers: stride-2 layers per discriminator. Defaults to 3.
        num_scales: input scales (full, 1/2, 1/4 ...). Defaults to 2.
        conditioned: take the BP-I prior as a second input channel. Defaults to True.
        norm_name: MONAI normalisation name. Defaults to ``INSTANCE``.

    ``forward(volume (B, 1, X, Y, Z), prior (B, 1, X, Y, Z) or None)`` -> patch logits per scale,
    full resolution first: ``[(B, 1, x_s, y_s, z_s) for s]``.

    Raises:
        ValueError: non-positive sizes; at call time, a missing or unexpected prior, or a volume too
            small for the scales (each needs ``2^(num_layers + 2)`` voxels per side).
    """

    def __init__(
        self,
        channels: int = 8,
        num_layers: int = 3,
        num_scales: int = 2,
        conditioned: bool = True,
        norm_name: str | tuple = "INSTANCE",
    ) -> None:
        super().__init__()
        if min(channels, num_layers, num_scales) < 1:
            raise ValueError(
                f"channels, num_layers and num_scales must be >= 1, got {channels, num_layers, num_scales}."
            )
        self.conditioned = conditioned
        self.num_layers = num_layers
        self.minimum_size = 2 ** (num_layers + 2)  # voxels per side each scale needs (one patch left at the end)
        self.scales = nn.ModuleList(
            PatchDiscriminator(3, channels, 1 + int(conditioned), 1, num_layers_d=num_layers, norm=norm_name)
            for _ in range(num_scales)
        )

    def forward(self, volume: torch.Tensor, prior: torch.Tensor | None = None) -> list[torch.Tensor]:
        if (prior is not None) != self.conditioned:
            raise ValueError("a conditioned discriminator needs the prior, an unconditioned one takes none.")
        smallest = min(volume.shape[2:]) // 2 ** (len(self.scales) - 1)
        if smallest < self.minimum_size:
            raise ValueError(
                f"the coarsest scale sees {smallest} voxels per side; {len(self.scales)} scales of "
                f"{self.num_layers} layers need at least {self.minimum_size}: use fewer scales or layers."
            )
        x = volume if prior is None else torch.cat((volume, prior), dim=1)
        logits = []
        for scale, discriminator in enumerate(self.scales):
            if scale:
                x = F.avg_pool3d(x, 2)
            logits.append(discriminator(x)[-1])
        return logits
