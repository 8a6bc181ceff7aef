"""SPIDER: a structure-preferential implicit decoder for biplanar X-ray reconstruction.

Yu et al., "Structure-Preferential Implicit Deep Network for Biplanar X-ray Reconstruction", arXiv
2507.04684. The CT is a function of position, queried point by point:

1. one 2D UNet (MONAI ``BasicUNet``), shared by both views, maps each X-ray to a feature map:
   (B, 2, H, W) -> (B, 2, F, H, W), one feature space for both views;
2. a query point x (world mm, the canonical CT frame) is projected onto both detectors with the
   acquisition geometry (the same :class:`~custom.imaging.geometry.BiplanarGeometry` the projector uses; cone
   or parallel) and each view's feature map is sampled there (bilinear; zero off the detector);
3. x, scaled to the unit cube of the CT grid's field of view, gets a multiresolution hash code
   (:class:`~custom.networks.hash_encoding.HashEncoding`);
4. ``[f_frontal, f_lateral, h(x)]`` goes through the decoder: one shared MLP with ``1 + C`` outputs
   (SPIDER), or the paper's ablations: two branches from the same input, or two stages (structure
   first, its probabilities then feeding the intensity).

Outputs per point: the intensity on the networks' [0, 1] scale (:mod:`custom.imaging.physics`) and ``C``
structure logits (phantom labels: background, soft tissue, brain, bone). :meth:`SPIDER.forward`
queries every voxel centre of the configured grid in chunks, so the bundle treats SPIDER like any
network; :meth:`SPIDER.volume` queries any other grid over the same field of view.

The intensity, as in the paper, comes through a sigmoid from mid-grey with ``residual=False``. By
default (``residual=True``, our deviation, shared with the bundle's PSCT-Net) it is the training set's
mean CT (the atlas of :class:`~custom.networks.floor.VoxelwiseLinearFloor`, fitted before training and
sampled trilinearly at the point) plus the decoder's correction, whose output layer starts at zero:
an untrained SPIDER returns the atlas, so a benchmark compares what the methods learn, not how far
each starts from the CT scale. Outside training the intensity is clipped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from custom.imaging.geometry import VIEW_NAMES, BiplanarGeometry
from custom.imaging.projector import Projector
from custom.networks.floor import VoxelwiseLinearFloor
from custom.networks.hash_encoding import HashEncoding
from monai.networks.nets import BasicUNet
from torch import nn

DECODERS = ("shared", "two_branch", "two_stage")


def mlp(in_channels: int, hidden: Sequence[int], out_channels: int) -> nn.Sequential:
    """Linear layers with ReLU between them: in -> hidden... -> out."""
    widths = [in_channels, *hidden]
    layers: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Linear(widths[-1], out_channels))


class SPIDER(nn.Module):
    """Two X-rays (B, 2, H, W) in [0, 1] -> CT intensity and structure logits (B, 1 + C, X, Y, Z).

    Args:
        geometry: the acquisition; fixes the detector, the field of view and the default grid.
            Defaults to ``BiplanarGeometry()``.
        num_classes: structure classes C. Defaults to 4 (the phantom labels).
        unet_features: ``BasicUNet`` features (six numbers). Defaults to (16, 16, 32, 64, 128, 16).
        feature_channels: channels F of each view's feature map. Defaults to 32.
        hash_levels, hash_features, hash_log2_table_size: the hash encoding's L, F and log2 T.
            Defaults to 11, 8 (the paper's) and 19.
        hash_base_resolution, hash_finest_resolution: its coarsest and finest cells per side.
            Defaults to 16 and 512.
        hidden: the decoder MLP's hidden widths. Defaults to (128, 128, 128).
        decoder: ``shared`` (SPIDER), ``two_branch`` or ``two_stage``. Defaults to ``shared``.
        chunk_size: points per decoder call when querying a whole grid. Defaults to 2^16.
        residual: the intensity is the atlas plus a zero-initialised correction (see the module
            docstring) instead of a sigmoid. Defaults to True.
        projector: the bundle configs' shared projector; its geometry is the network's and its atlas
            floor's. Built from ``geometry`` when omitted.

    Raises:
        ValueError: an unknown decoder, fewer than two classes, or a geometry other than the projector's.
    """

    def __init__(
        self,
        geometry: BiplanarGeometry | None = None,
        num_classes: int = 4,
        unet_features: Sequence[int] = (16, 16, 32, 64, 128, 16),
        feature_channels: int = 32,
        hash_levels: int = 11,
        hash_features: int = 8,
        hash_log2_table_size: int = 19,
        hash_base_resolution: int = 16,
        hash_finest_resolution: int = 512,
        hidden: Sequence[int] = (128, 128, 128),
        decoder: str = "shared",
        chunk_size: int = 2**16,
        residual: bool = True,
        projector: Projector | None = None,
    ) -> None:
        super().__init__()
        if projector is not None and geometry is not None and geometry != projector.geometry:
            raise ValueError(f"the geometry {geometry} is not the projector's, {projector.geometry}.")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}.")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        self.geometry = projector.geometry if projector is not None else geometry or BiplanarGeometry()
        self.num_classes, self.decoder, self.chunk_size = num_classes, decoder, chunk_size
        self.encoder = BasicUNet(2, 1, feature_channels, tuple(unet_features))
        self.hash = HashEncoding(
            hash_levels, hash_features, hash_log2_table_size, hash_base_resolution, hash_finest_resolution
        )
        code = len(VIEW_NAMES) * feature_channels + self.hash.out_channels
        if decoder == "shared":
            self.heads = nn.ModuleList([mlp(code, hidden, 1 + num_classes)])
        elif decoder == "two_branch":
            self.heads = nn.ModuleList([mlp(code, hidden, 1), mlp(code, hidden, num_classes)])
        else:  # two_stage: structure first, then intensity from the code and the class probabilities
            self.heads = nn.ModuleList([mlp(code, hidden, num_classes), mlp(code + num_classes, hidden, 1)])
        self.floor = VoxelwiseLinearFloor(self.geometry, "atlas", projector) if residual else None
        if residual:  # the intensity output starts at zero: an untrained SPIDER returns the atlas
            last = (self.heads[0] if decoder != "two_stage" else self.heads[1])[-1]
            nn.init.zeros_(last.weight[:1])
            nn.init.zeros_(last.bias[:1])

    def view_features(self, views: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) -> (B, 2, F, H, W): the shared UNet applied to each view."""
        b, v, h, w = views.shape
        return self.encoder(views.reshape(b * v, 1, h, w)).reshape(b, v, -1, h, w)

    def pixels(self, points: torch.Tensor) -> torch.Tensor:
        """Where world points (..., 3) in mm fall on each detector: (2, ..., 2) as (row, column) pixels."""
        return torch.stack([view.project(points.double()) for view in self.geometry.views]).to(points.dtype)

    def unit_cube(self, points: torch.Tensor) -> torch.Tensor:
        """World points (..., 3) in mm -> the CT grid's field of view scaled to [0, 1]^3."""
        fov = torch.tensor(self.geometry.fov, dtype=points.dtype, device=points.device)
        return points / fov + 0.5

    def query(self, features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Decode points (B, N, 3), world mm, given view features (B, 2, F, H, W): (B, N, 1 + C).

        Channel 0 is the intensity on the [0, 1] scale, the others the structure logits.
        """
        b, v, f, h, w = features.shape
        rows_columns = self.pixels(points)  # (2, B, N, 2)
        size = torch.tensor([h - 1, w - 1], dtype=points.dtype, device=points.device)
        grid = (rows_columns / size * 2 - 1).flip(-1)  # grid_sample wants (x = column, y = row) in [-1, 1]
        sampled = [  # per view (B, N, F)
            nn.functional.grid_sample(
                features[:, i], grid[i][:, :, None, :], mode="bilinear", padding_mode="zeros", align_corners=True
            )[..., 0].transpose(1, 2)
            for i in range(v)
        ]
        code = torch.cat([*sampled, self.hash(self.unit_cube(points))], dim=-1)
        if self.decoder == "shared":
            out = self.heads[0](code)
            intensity, logits = out[..., :1], out[..., 1:]
        elif self.decoder == "two_branch":
            intensity, logits = self.heads[0](code), self.heads[1](code)
        else:
            logits = self.heads[0](code)
            intensity = self.heads[1](torch.cat([code, logits.softmax(-1)], dim=-1))
        if self.floor is None:
            return torch.cat([intensity.sigmoid(), logits], dim=-1)
        intensity = self.atlas(points) + intensity
        return torch.cat([intensity if self.training else intensity.clamp(0, 1), logits], dim=-1)

    def atlas(self, points: torch.Tensor) -> torch.Tensor:
        """The floor's atlas at world points (B, N, 3), mm, trilinear: (B, N, 1)."""
        atlas = self.floor.offset.to(points.dtype).expand(points.shape[0], -1, -1, -1, -1)  # (B, 1, X, Y, Z)
        grid = (self.unit_cube(points) * 2 - 1).flip(-1)  # grid_sample wants (z, y, x) for (X, Y, Z) volumes
        sampled = nn.functional.grid_sample(atlas, grid[:, :, None, None], align_corners=False)  # (B, 1, N, 1, 1)
        return sampled[:, 0, :, :, 0]

    def volume(self, views: torch.Tensor, vol_shape: Sequence[int] | None = None) -> torch.Tensor:
        """Query every voxel centre of a grid over the field of view: (B, 1 + C, X, Y, Z).

        Args:
            views: (B, 2, H, W) X-rays in [0, 1].
            vol_shape: the grid; any size (e.g. twice the training grid). Defaults to the geometry's.
        """
        geometry = self.geometry if vol_shape is None else self.geometry.resampled(vol_shape)
        centres = geometry.voxel_centres(dtype=views.dtype, device=views.device).reshape(-1, 3)  # (X*Y*Z, 3)
        features = self.view_features(views)
        points = centres.expand(views.shape[0], -1, -1)
        out = torch.cat([self.query(features, chunk) for chunk in points.split(self.chunk_size, dim=1)], dim=1)
        return out.transpose(1, 2).reshape(views.shape[0], -1, *geometry.vol_shape)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) -> (B, 1 + C, X, Y, Z) on the configured grid."""
        return self.volume(views)


__all__ = ["DECODERS", "SPIDER", "mlp"]
