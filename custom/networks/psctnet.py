"""The PSCT-Net generator (arXiv 2606.19867), composed from its modules, with size presets.

Data flow for views (B, 2, H, W) (channel 0 frontal, 1 lateral) on a geometry with a CT grid (X, Y, Z)
and ``L = len(channels) - 1`` levels:

1. 2D encoders (``encoder.py``): features of both views at every level, (B, c_k, 2, H/2^k, W/2^k).
2. BP-I (``backprojection.py``): the views back-projected and averaged, (B, 1, X, Y, Z), feed a 3D
   encoder; BP-C adds each level's back-projected 2D features to the 3D encoder's.
3. The 2D->3D link at the bottleneck (X/2^L)^3: AGP-3D (``agp.py``) or the X2CT-GAN fully connected
   layer (``fully_connected.py``); with BP-I on, the link and the 3D encoder's bottleneck are merged.
4. BiM-3D (``bimamba.py``): bidirectional Mamba over the bottleneck tokens.
5. MV3D-C (``multiview.py``): per-view decoder streams whose level-wise mean joins the main decoder.
6. Decoder (``decoder.py``) with the 3D encoder's skips.
7. The head. ``residual=True`` (our default, a deviation from the paper): the CT is the floor of
   ``floor.py`` (the voxel-wise linear map of the BP-I prior, or the mean atlas without BP-I) plus a
   correction from ``refine.py``, a local linear combination of full-resolution guides (each view
   back-projected alone, when BP-I is on, and the floor) whose coefficients the decoder predicts,
   zero-initialised: an untrained network already reconstructs as well as the floor. With
   ``decode_factor`` f > 1 the encoder-decoder runs on views and a grid f times coarser, losslessly:
   the views and the prior enter folded (``folding.py``, each f x f pixel or f^3 voxel block as
   channels) and the head also unfolds f^3 detail channels per coarse voxel onto the full grid.
   Outside training the CT is clipped to [0, 1].
   ``residual=False`` (the ``paper`` preset): a 1x1x1 convolution and a sigmoid, from mid-grey, as
   PSCT-Net. Either way the CT is on the networks' scale, [0, 1] for
   ``custom.imaging.physics.NETWORK_HU_RANGE`` (-1024 to 2048 HU).

Every module is a constructor switch, so the paper's ablations and the X2CT-GAN-style baseline
(everything off except MV3D-C, fully connected link) are this class with flags. Per-view decoder
streams start from the per-view volumes of the fully connected link, or from the AGP-3D output for
both views (AGP-3D attends over both views at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from custom.imaging.geometry import VIEW_NAMES, BiplanarGeometry
from custom.imaging.projector import Projector
from custom.networks.agp import AttentionGuidedProjection
from custom.networks.backprojection import BackProjectionConditioning
from custom.networks.bimamba import BiMamba3d
from custom.networks.blocks import conv
from custom.networks.decoder import Decoder
from custom.networks.encoder import Encoder, ViewEncoders
from custom.networks.floor import VoxelwiseLinearFloor
from custom.networks.folding import space_to_depth
from custom.networks.fully_connected import FullyConnectedLink
from custom.networks.multiview import MultiViewFusion
from custom.networks.refine import GuidedRefinement
from torch import nn


class PSCTNet(nn.Module):
    """PSCT-Net generator: two X-rays (B, 2, H, W) in [0, 1] -> CT (B, 1, X, Y, Z) in [0, 1].

    Args:
        geometry: the acquisition; its CT grid and detector fix the output and input shapes.
            Defaults to ``BiplanarGeometry()``.
        channels: feature channels per level, level 0 (full resolution) first; ``len - 1`` levels
            halve the grid down to the bottleneck. Defaults to (16, 24, 32, 64, 96).
        shared_encoder: one 2D encoder for both views. Defaults to False.
        bp_input: BP-I prior and the 3D encoder. Defaults to True.
        bp_conditioning: BP-C at every 3D encoder level below the stem (needs ``bp_input``).
            Defaults to True.
        agp: AGP-3D link; False uses the X2CT-GAN fully connected link. Defaults to True.
        agp_prior: AGP-3D geometric prior, ``none``, ``bias`` or ``mask``. Defaults to ``bias``.
        agp_prior_sigma: width of the geometric prior, bottleneck pixels. Defaults to 1.
        agp_heads: attention heads. Defaults to 4.
        bimamba: BiM-3D at the bottleneck. Defaults to True.
        bimamba_depth: BiM-3D blocks. Defaults to 2.
        bimamba_shared: one Mamba for both scan directions (PSCT-Net) or two. Defaults to True.
        multiview: MV3D-C per-view decoder streams. Defaults to True.
        fc_squeeze: channels either side of the fully connected link's linear layer. Defaults to 8.
        norm_name: MONAI normalisation name. Defaults to ``INSTANCE``.
        act_name: MONAI activation name. Defaults to ``RELU``.
        dropout_rate: dropout in AGP-3D (attention and MLP) and in BiM-3D's MLP. Defaults to 0.
        residual: predict a zero-initialised guided correction to the floor (the voxel-wise linear
            BP-I map with ``bp_input``, else the mean atlas; fit it with
            :meth:`VoxelwiseLinearFloor.fit` before training) instead of the CT through a sigmoid.
            Defaults to True.
        decode_factor: the encoder-decoder runs on views and a grid this many times coarser, fed by
            space-to-depth folding (needs ``residual``: the guided correction returns to the full
            grid). Defaults to 1.
        projector: the projector of BP-I, BP-C and the floor, shared with the loss and the trainer (the
            bundle's configs build one ``projector`` item and hand it to all three); its geometry is the
            network's. Built from ``geometry`` when omitted.

    Options of a module that is switched off (e.g. ``agp_prior`` with ``agp=False``) are ignored.

    Raises:
        ValueError: fewer than two levels, grid or detector sides not divisible by ``2^L``, BP-C
            without BP-I, invalid module options, or a geometry other than the projector's.
    """

    def __init__(
        self,
        geometry: BiplanarGeometry | None = None,
        channels: Sequence[int] = (16, 24, 32, 64, 96),
        shared_encoder: bool = False,
        bp_input: bool = True,
        bp_conditioning: bool = True,
        agp: bool = True,
        agp_prior: str = "bias",
        agp_prior_sigma: float = 1.0,
        agp_heads: int = 4,
        bimamba: bool = True,
        bimamba_depth: int = 2,
        bimamba_shared: bool = True,
        multiview: bool = True,
        fc_squeeze: int = 8,
        norm_name: str | tuple = "INSTANCE",
        act_name: str | tuple = "RELU",
        dropout_rate: float = 0.0,
        residual: bool = True,
        decode_factor: int = 1,
        projector: Projector | None = None,
    ) -> None:
        super().__init__()
        if projector is not None and geometry is not None and geometry != projector.geometry:
            raise ValueError(f"the geometry {geometry} is not the projector's, {projector.geometry}.")
        geometry = projector.geometry if projector is not None else geometry or BiplanarGeometry()
        channels = tuple(int(c) for c in channels)
        levels = len(channels) - 1
        # 1. check the configuration
        if levels < 1 or min(channels) < 1:
            raise ValueError(f"channels needs at least two positive entries (two levels), got {channels}.")
        if decode_factor < 1 or (decode_factor > 1 and not residual):
            raise ValueError(f"decode_factor must be 1, or above 1 with residual=True; got {decode_factor}.")
        divisor = decode_factor * 2**levels
        for name, shape in (("vol_shape", geometry.vol_shape), ("det_shape", geometry.det_shape)):
            if any(n % divisor for n in shape):
                raise ValueError(
                    f"geometry {name} {shape} must be divisible by {divisor} for {levels} levels "
                    f"below a decode factor of {decode_factor}."
                )
        if bp_conditioning and not bp_input:
            raise ValueError("bp_conditioning (BP-C) conditions the BP-I encoder: it needs bp_input=True.")
        grid = tuple(n // divisor for n in geometry.vol_shape)
        det = tuple(n // divisor for n in geometry.det_shape)
        self.geometry = geometry
        self.projector = projector or Projector(geometry)
        self.decode_factor = decode_factor
        coarse = geometry.resampled(
            tuple(n // decode_factor for n in geometry.vol_shape), tuple(n // decode_factor for n in geometry.det_shape)
        )  # the encoder-decoder's acquisition: same field of view and detector area

        # 2. the modules, each present only when switched on
        # with decode_factor f, views and the prior enter folded (space-to-depth): f^2 and f^3 channels
        self.encoder_2d = ViewEncoders(channels, shared_encoder, norm_name, act_name, in_channels=decode_factor**2)
        self.encoder_3d = Encoder(3, decode_factor**3, channels, norm_name, act_name) if bp_input else None
        self.bp_conditioning = (
            nn.ModuleList(BackProjectionConditioning(c, c, norm_name, act_name) for c in channels[1:])
            if bp_conditioning
            else None
        )
        bottleneck = channels[-1]
        if agp:
            self.link = AttentionGuidedProjection(
                bottleneck,
                bottleneck,
                grid,
                det,
                agp_heads,
                coarse,
                agp_prior,
                agp_prior_sigma,
                dropout_rate=dropout_rate,
            )
        else:
            self.link = FullyConnectedLink(bottleneck, bottleneck, det, grid, fc_squeeze)
        self.merge = conv(3, 2 * bottleneck, bottleneck, norm_name, act_name, kernel_size=1) if bp_input else None
        self.bimamba = (
            BiMamba3d(bottleneck, bimamba_depth, shared=bimamba_shared, dropout_rate=dropout_rate) if bimamba else None
        )
        self.multiview = MultiViewFusion(channels, norm_name, act_name) if multiview else None
        self.grids = [tuple(n // 2**k for n in coarse.vol_shape) for k in range(levels + 1)]  # voxels per level
        bpc_levels = set(range(1, levels + 1)) if bp_conditioning else set()
        mv_levels = set(range(levels)) if multiview else set()
        self.lifted_levels = sorted(bpc_levels | mv_levels)  # levels whose 2D features BP-C or MV3D-C lift
        self.decoder = Decoder(channels, bp_input, multiview, norm_name, act_name)
        self.floor = (
            VoxelwiseLinearFloor(geometry, "voxelwise" if bp_input else "atlas", self.projector) if residual else None
        )
        if residual:  # guides: each view back-projected alone (with BP-I), and the floor
            self.head = GuidedRefinement(channels[0], 2 * int(bp_input) + 1, decode_factor)
        else:
            self.head = nn.Sequential(nn.Conv3d(channels[0], 1, 1), nn.Sigmoid())

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) views in [0, 1] -> (B, 1, X, Y, Z) CT on the networks' [0, 1] scale."""
        # 1. both views' 2D features at every level, on the encoder-decoder's detector (H/f, W/f)
        full_views, f = views, self.decode_factor
        folded = space_to_depth(views, f).unflatten(1, (len(VIEW_NAMES), f * f))  # (B, 2, f^2, H/f, W/f)
        features_2d = self.encoder_2d(folded)  # [(B, c_k, 2, H/f/2^k, W/f/2^k)]
        lifted = {  # each view's features back-projected alone onto its level's grid, once for BP-C and MV3D-C
            k: self.projector.backproject(features_2d[k], vol_shape=self.grids[k], reduction="none")
            for k in self.lifted_levels
        }  # {k: (B, c_k, 2, X/f/2^k, Y/f/2^k, Z/f/2^k)}
        # 2. BP-I prior through the 3D encoder; BP-C adds each level's lifted 2D features before the next stage
        skips = prior = lifted_views = None
        if self.encoder_3d is not None:
            conditioning = None
            if self.bp_conditioning is not None:
                conditioning = [partial(bpc, lifted[k].mean(2)) for k, bpc in enumerate(self.bp_conditioning, 1)]
            lifted_views = self.projector.backproject(full_views, reduction="none")[:, 0]  # (B, 2, X, Y, Z)
            prior = lifted_views.mean(1, keepdim=True)  # BP-I: both views averaged, (B, 1, X, Y, Z)
            skips = self.encoder_3d(space_to_depth(prior, f), conditioning)  # [(B, c_k, X/f/2^k, Y/f/2^k, Z/f/2^k)]
        # 3. the 2D->3D link at the bottleneck; per-view seeds for MV3D-C
        linked = self.link(features_2d[-1])  # AGP: (B, C, x, y, z); FC: (B, C, 2, x, y, z)
        per_view = linked if linked.dim() == 6 else None
        bottleneck = linked.mean(2) if per_view is not None else linked
        if self.merge is not None:
            bottleneck = self.merge(torch.cat((bottleneck, skips[-1]), dim=1))
        # 4. BiM-3D over the bottleneck tokens
        if self.bimamba is not None:
            bottleneck = self.bimamba(bottleneck)
        # 5. MV3D-C per-view streams, fused level by level
        fused = None
        if self.multiview is not None:
            seeds = (
                per_view
                if per_view is not None
                else bottleneck.unsqueeze(2).expand(-1, -1, len(VIEW_NAMES), -1, -1, -1)
            )
            fused = self.multiview(seeds, [lifted[k] for k in range(len(self.grids) - 1)])
        # 6. decoder to the encoder-decoder's grid
        features = self.decoder(bottleneck, skips, fused)  # (B, c_0, X/f, Y/f, Z/f)
        # 7. the head: a guided correction to the floor, or the CT through a sigmoid
        if self.floor is None:
            return self.head(features)
        floor = self.floor(full_views, prior)  # (B, 1, X, Y, Z)
        guides = [*lifted_views.split(1, dim=1), floor] if lifted_views is not None else [floor]
        ct = floor + self.head(features, guides)
        return ct if self.training else ct.clamp(0, 1)


PRESETS: dict[str, dict[str, Any]] = {
    # tests and CI: a few thousand parameters, any grid divisible by 4
    "tiny": dict(channels=(4, 8, 16), agp_heads=2, bimamba_depth=1, fc_squeeze=2),
    # the shipped weights: decoding on a 4x coarser grid (32^3 for 128^3, 8^3 bottleneck: 512 BiM-3D tokens)
    # with the guided full-resolution head; one 128^3 training iteration in under 4 s on 2 CPU cores
    "default": dict(channels=(24, 48, 96), decode_factor=4, agp_heads=4, bimamba_depth=2),
    # close to the published model: five levels to a 4^3 bottleneck, BatchNorm, MLP dropout 0.5, sigmoid head
    "paper": dict(
        channels=(16, 32, 64, 128, 256, 256),
        agp_heads=8,
        bimamba_depth=1,
        norm_name="BATCH",
        dropout_rate=0.5,
        residual=False,
    ),
}

ABLATIONS: dict[str, dict[str, bool]] = {  # the paper's ablation table and the X2CT-GAN-style baseline
    "x2ct": dict(bp_input=False, bp_conditioning=False, agp=False, bimamba=False, multiview=True),
    "bp_i": dict(bp_input=True, bp_conditioning=False, agp=False, bimamba=False),
    "bp_i_bp_c": dict(bp_input=True, bp_conditioning=True, agp=False, bimamba=False),
    "agp": dict(bp_input=False, bp_conditioning=False, agp=True, bimamba=False),
    "bim": dict(bp_input=False, bp_conditioning=False, agp=False, bimamba=True),
    "bp_agp": dict(bp_input=True, bp_conditioning=True, agp=True, bimamba=False),
    "bp_bim": dict(bp_input=True, bp_conditioning=True, agp=False, bimamba=True),
    "psctnet": dict(bp_input=True, bp_conditioning=True, agp=True, bimamba=True, multiview=True),
}


def psctnet(
    preset: str = "default", geometry: BiplanarGeometry | None = None, variant: str = "psctnet", **overrides: Any
) -> PSCTNet:
    """A PSCT-Net generator from a size preset, an ablation variant and any constructor overrides.

    Args:
        preset: ``tiny``, ``default`` or ``paper`` (see :data:`PRESETS`). Defaults to ``default``.
        geometry: the acquisition. Defaults to the projector's geometry, or ``BiplanarGeometry()``.
        variant: a module set from :data:`ABLATIONS`. Defaults to ``psctnet`` (all modules).
        **overrides: :class:`PSCTNet` arguments, applied last.

    Raises:
        ValueError: an unknown preset or variant.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}.")
    if variant not in ABLATIONS:
        raise ValueError(f"variant must be one of {sorted(ABLATIONS)}, got {variant!r}.")
    return PSCTNet(geometry, **{**PRESETS[preset], **ABLATIONS[variant], **overrides})


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameters per top-level module (absent modules omitted) and in total."""
    counts = {
        name: sum(p.numel() for p in child.parameters() if p.requires_grad)
        for name, child in model.named_children()
        if any(True for _ in child.parameters())
    }
    counts["total"] = sum(counts.values())
    return counts


__all__ = ["ABLATIONS", "PRESETS", "PSCTNet", "parameter_counts", "psctnet"]
