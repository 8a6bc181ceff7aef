"""The physics floor a learned reconstruction starts from: a voxel-wise linear map of the BP-I prior.

The unfiltered back-projection of the two views (PSCT-Net's BP-I, :class:`BackProjectionPrior`)
already says where the attenuation lies along every ray, but not on the CT scale: its value at a voxel
is the mean of the two rays' line integrals through it. A per-voxel gain and offset, fitted by least
squares from the prior to the CT over a training set, turns it into a CT estimate with no network at
all:

    floor(v) = gain(v) * prior(v) + offset(v)

With the gain held at zero the offset is the training set's mean CT, the mean atlas. The generators
of this bundle predict a correction added to this floor through a zero-initialised last layer, so an
untrained generator already scores the floor (our deviation from PSCT-Net, which regresses the CT
from mid-grey through a sigmoid; the model card gives the ablation). :class:`VoxelwiseLinearFloor`
holds both maps as buffers (saved with the weights, never trained by the optimiser) and fits them in
one pass over a data loader; the benchmark uses it alone as the voxel-wise linear back-projection
baseline. Fit it on clean simulated views (the bundle's ``train#floor_loader``: the training cases
through the validation pipeline, no detector augmentation or pose jitter): fitted on augmented views,
the same maps scored 0.55 dB less PSNR3D on clean validation views (23.53 against 24.08 dB over 17
phantoms), the augmentation's spread being regression noise to a linear fit. The network sees
augmented views and learns the rest. The maps are stored in half precision (8 MB instead of 16 MB at
128^3, which keeps the shipped weights under the model zoo's 25 MB): a relative error below 1e-3,
under 3 HU on the networks' 3072 HU scale.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.projector import Projector
from custom.networks.backprojection import BackProjectionPrior
from torch import nn

FLOORS = ("voxelwise", "atlas")
MAP_DTYPE = torch.float16  # storage of the gain and offset maps (see the module docstring)

# gain is left at 0 where the prior barely varies over the training set (the voxel is then the atlas):
# a voxel whose prior spread is below this fraction of the mean spread carries no usable signal.
MIN_RELATIVE_VARIANCE = 1e-6


class VoxelwiseLinearFloor(nn.Module):
    """``gain * BP-I(views) + offset`` per voxel on the networks' [0, 1] CT scale.

    Args:
        geometry: the acquisition; its CT grid is the maps' grid. Defaults to ``BiplanarGeometry()``.
        kind: ``voxelwise`` (gain and offset fitted per voxel) or ``atlas`` (gain 0: the training mean,
            for methods that do not use the BP-I prior). Defaults to ``voxelwise``.
        projector: the projector to back-project with (shared with the generator). Defaults to one on
            ``geometry``.

    ``forward(views (B, 2, H, W), prior (B, 1, X, Y, Z) or None)`` -> (B, 1, X, Y, Z). Before
    :meth:`fit` the maps are gain 0, offset 0 (an all-air floor, -1024 HU).

    Raises:
        ValueError: an unknown kind.
    """

    def __init__(
        self, geometry: BiplanarGeometry | None = None, kind: str = "voxelwise", projector: Projector | None = None
    ) -> None:
        super().__init__()
        if kind not in FLOORS:
            raise ValueError(f"kind must be one of {FLOORS}, got {kind!r}.")
        geometry = geometry or BiplanarGeometry()
        self.kind = kind
        self.prior = BackProjectionPrior(projector or Projector(geometry))
        # an atlas never uses its gain (always 0): kept out of the saved weights
        self.register_buffer("gain", torch.zeros(1, 1, *geometry.vol_shape, dtype=MAP_DTYPE), kind == "voxelwise")
        self.register_buffer("offset", torch.zeros(1, 1, *geometry.vol_shape, dtype=MAP_DTYPE))

    @torch.no_grad()
    def fit(
        self, loader: Iterable[Mapping[str, torch.Tensor]], image_key: str = "image", label_key: str = "label"
    ) -> VoxelwiseLinearFloor:
        """Least-squares gain and offset per voxel from batches of views (B, 2, H, W) and CTs (B, 1, X, Y, Z).

        ``image_key`` and ``label_key`` name them in each batch (``image`` and ``label`` by default).
        Accumulates in float64 on the maps' device; voxels whose prior is (nearly) constant over the
        data get gain 0 and the mean CT.

        Raises:
            ValueError: the loader yields no case.
        """
        device = self.gain.device
        n = 0
        sums = {k: torch.zeros_like(self.gain, dtype=torch.float64) for k in ("p", "pp", "y", "py")}
        for batch in loader:
            views = torch.as_tensor(batch[image_key]).to(device).float()
            label = torch.as_tensor(batch[label_key]).to(device).double()
            prior = self.prior(views).double() if self.kind == "voxelwise" else torch.zeros_like(label)
            n += label.shape[0]
            for key, value in (("p", prior), ("pp", prior * prior), ("y", label), ("py", prior * label)):
                sums[key] += value.sum(0, keepdim=True)
        if n == 0:
            raise ValueError("the training data is empty; no floor can be fitted.")
        mean_p, mean_y = sums["p"] / n, sums["y"] / n
        variance = sums["pp"] / n - mean_p.square()
        covariance = sums["py"] / n - mean_p * mean_y
        usable = variance > MIN_RELATIVE_VARIANCE * variance.mean().clamp_min(torch.finfo(torch.float64).tiny)
        gain = torch.where(usable, covariance / variance.where(usable, torch.ones_like(variance)), 0.0)
        self.gain.copy_(gain)
        self.offset.copy_(mean_y - gain * mean_p)
        return self

    def forward(self, views: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 2, H, W) views (or their BP-I prior, when already computed) -> (B, 1, X, Y, Z)."""
        offset = self.offset.to(torch.promote_types(views.dtype, torch.float32)).expand(views.shape[0], -1, -1, -1, -1)
        if self.kind == "atlas":
            return offset
        prior = self.prior(views) if prior is None else prior
        return torch.addcmul(offset, self.gain.to(offset.dtype), prior.to(offset.dtype))


def fit_floor(network: nn.Module, loader: Iterable[Mapping[str, torch.Tensor]], **keys: str) -> nn.Module:
    """Fit the floor of ``network`` (its ``floor`` attribute; DDP-wrapped or not) on ``loader``; returns it.

    ``keys``: ``image_key`` and ``label_key`` of :meth:`VoxelwiseLinearFloor.fit`.

    Networks without a floor (the ``paper`` preset) are returned untouched.
    """
    module = getattr(network, "module", network)
    if getattr(module, "floor", None) is not None:
        module.floor.fit(loader, **keys)
    return network


__all__ = ["FLOORS", "MAP_DTYPE", "MIN_RELATIVE_VARIANCE", "VoxelwiseLinearFloor", "fit_floor"]
