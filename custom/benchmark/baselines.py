"""The two baselines without a learned network, fitted in one pass over the training data.

Both map views (B, 2, H, W) to a CT (B, 1, X, Y, Z) on the networks' [0, 1] scale, like the generators,
so the benchmark trains, saves, times and evaluates every method the same way:

- :class:`MeanAtlas`: the training set's mean volume, whatever the views (what a method scores by
  knowing only the population);
- :class:`CalibratedBackProjection`: the BP-I prior of PSCT-Net (the unfiltered back-projection of
  both views, averaged) mapped to the CT scale by the least-squares line fitted over every training
  voxel (what geometry alone gives, with no learning beyond two numbers);
- :class:`VoxelwiseBackProjection`: the same prior mapped by a least-squares gain and offset fitted
  per voxel (:class:`~custom.networks.floor.VoxelwiseLinearFloor`, the floor the residual generators
  start from): what geometry and the population give with no network at all. A learned model that
  does not beat it clearly has learned nothing the geometry did not already give.

Call :meth:`fit` with batches ``{"image": views, "label": CT}`` (a MONAI data loader) before use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.projector import Projector
from custom.networks.backprojection import BackProjectionPrior
from custom.networks.floor import VoxelwiseLinearFloor
from torch import nn


def _batches(loader: Iterable[Mapping[str, torch.Tensor]], device: torch.device):
    """(views, CT) of each batch as float64 tensors on ``device``."""
    for batch in loader:
        views = torch.as_tensor(batch["image"]).to(device).double()
        yield views, torch.as_tensor(batch["label"]).to(device).double()


class MeanAtlas(nn.Module):
    """The mean training CT, returned for any views.

    Args:
        geometry: the acquisition; fixes the CT grid. Defaults to ``BiplanarGeometry()``.
    """

    def __init__(self, geometry: BiplanarGeometry | None = None) -> None:
        super().__init__()
        geometry = geometry or BiplanarGeometry()
        self.register_buffer("atlas", torch.zeros(1, 1, *geometry.vol_shape))

    @torch.no_grad()
    def fit(self, loader: Iterable[Mapping[str, torch.Tensor]]) -> MeanAtlas:
        """The voxel-wise mean of every training CT (``label``, (B, 1, X, Y, Z))."""
        total, count = torch.zeros_like(self.atlas, dtype=torch.float64), 0
        for _, label in _batches(loader, self.atlas.device):
            total += label.sum(0, keepdim=True)
            count += label.shape[0]
        if count == 0:
            raise ValueError("the training data is empty; there is nothing to average.")
        self.atlas.copy_(total / count)
        return self

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) -> (B, 1, X, Y, Z): the atlas for every case."""
        return self.atlas.expand(views.shape[0], -1, -1, -1, -1).to(views.dtype)


class CalibratedBackProjection(nn.Module):
    """BP-I, ``scale * backproject(views) + offset``, clipped to [0, 1].

    Args:
        geometry: the acquisition. Defaults to ``BiplanarGeometry()``.
    """

    def __init__(self, geometry: BiplanarGeometry | None = None) -> None:
        super().__init__()
        geometry = geometry or BiplanarGeometry()
        self.prior = BackProjectionPrior(Projector(geometry))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("offset", torch.zeros(()))

    @torch.no_grad()
    def fit(self, loader: Iterable[Mapping[str, torch.Tensor]]) -> CalibratedBackProjection:
        """The least-squares line from the prior to the CT over every voxel of every training case."""
        n = sum_p = sum_pp = sum_y = sum_py = 0.0
        for views, label in _batches(loader, self.scale.device):
            prior = self.prior(views.float()).double()
            n += prior.numel()
            sum_p, sum_pp = sum_p + prior.sum().item(), sum_pp + prior.square().sum().item()
            sum_y, sum_py = sum_y + label.sum().item(), sum_py + (prior * label).sum().item()
        spread = n * sum_pp - sum_p**2
        if n == 0 or spread <= 0:
            raise ValueError("the training priors are empty or constant; no line can be fitted.")
        scale = (n * sum_py - sum_p * sum_y) / spread
        self.scale.fill_(scale)
        self.offset.fill_((sum_y - scale * sum_p) / n)
        return self

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) -> (B, 1, X, Y, Z) on the [0, 1] scale."""
        return (self.scale * self.prior(views) + self.offset).clamp(0, 1)


class VoxelwiseBackProjection(nn.Module):
    """BP-I, ``gain * backproject(views) + offset`` with a gain and an offset per voxel, clipped to [0, 1].

    Args:
        geometry: the acquisition. Defaults to ``BiplanarGeometry()``.
    """

    def __init__(self, geometry: BiplanarGeometry | None = None) -> None:
        super().__init__()
        geometry = geometry or BiplanarGeometry()
        self.floor = VoxelwiseLinearFloor(geometry)

    def fit(self, loader: Iterable[Mapping[str, torch.Tensor]]) -> VoxelwiseBackProjection:
        """The least-squares gain and offset of every voxel over the training cases."""
        self.floor.fit(loader)
        return self

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) -> (B, 1, X, Y, Z) on the [0, 1] scale."""
        return self.floor(views).clamp(0, 1)


__all__ = ["CalibratedBackProjection", "MeanAtlas", "VoxelwiseBackProjection"]
