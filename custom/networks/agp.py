"""AGP-3D of PSCT-Net (arXiv 2606.19867): attention-guided projection of 2D view tokens into 3D.

One learnable query per bottleneck voxel (plus a fixed sinusoidal 3D position) cross-attends over the
tokens of both views' 2D bottlenecks (each with a 2D position and a learned view embedding), in a
pre-norm transformer decoder block without self-attention (attention, then MLP, each residual). With
a geometric prior, each voxel's attention is biased toward, or masked to, the pixels it projects to
in each view under the acquisition geometry: the geometry tells the attention where to look, the
attention decides what to take.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from custom.imaging.geometry import VIEW_NAMES, BiplanarGeometry
from torch import nn

PRIORS = ("none", "bias", "mask")


def sinusoidal_encoding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sine/cosine features of positions (Vaswani et al., 2017), split evenly over the axes.

    Args:
        positions: (N, A) coordinates along A axes (any unit; grid indices here).
        dim: encoding width; each axis gets ``2 * (dim // (2 A))`` features, zeros pad the rest.

    Returns:
        (N, dim) float32.
    """
    count, axes = positions.shape
    per_axis = dim // (2 * axes)
    frequencies = 1.0 / (10000 ** (torch.arange(per_axis, dtype=torch.float64) / max(per_axis, 1)))
    angles = positions.double()[:, :, None] * frequencies  # (N, A, per_axis)
    encoding = torch.cat((angles.sin(), angles.cos()), dim=-1).reshape(count, -1)
    return torch.nn.functional.pad(encoding, (0, dim - encoding.shape[1])).float()


def _grid_indices(shape: Sequence[int]) -> torch.Tensor:
    """(prod(shape), len(shape)) integer coordinates of a grid in C order (last axis fastest)."""
    return torch.stack(torch.meshgrid(*(torch.arange(n) for n in shape), indexing="ij"), dim=-1).reshape(-1, len(shape))


def geometric_attention_prior(
    geometry: BiplanarGeometry, grid_shape: Sequence[int], det_shape: Sequence[int], sigma: float, kind: str
) -> torch.Tensor:
    """Additive attention prior of every bottleneck voxel (query) over every view pixel (key).

    Each voxel centre is projected onto both detectors (coarsened to ``det_shape``) and clamped to
    them; ``bias`` adds ``-d^2 / (2 sigma^2)`` for a pixel at distance ``d`` (pixels) from the
    projection, ``mask`` allows only pixels within ``max(2 sigma, 1)`` of it (so each view keeps at least
    its nearest pixels).

    Returns:
        (X*Y*Z, 2*h*w) float32, queries in C order of the grid, keys as (view, row, column).
    """
    coarse = geometry.resampled(grid_shape, det_shape)
    centres = coarse.voxel_centres(torch.float64).reshape(-1, 3)  # mm
    pixels = _grid_indices(det_shape).double()  # (h*w, 2): row, column
    priors = []
    for view in coarse.views:
        projected = view.project(centres)  # (N, 2) row, column in pixels
        projected = torch.stack([projected[:, i].clamp(0, n - 1) for i, n in enumerate(det_shape)], dim=-1)
        distance2 = torch.cdist(projected, pixels) ** 2  # (N, h*w)
        if kind == "bias":
            priors.append(-distance2 / (2 * sigma**2))
        else:
            priors.append(torch.where(distance2 <= max(2 * sigma, 1.0) ** 2, 0.0, float("-inf")))
    return torch.cat(priors, dim=1).float()


class AttentionGuidedProjection(nn.Module):
    """AGP-3D: learnable voxel queries cross-attending over both views' 2D bottleneck tokens.

    Args:
        in_channels: channels of the 2D bottleneck features.
        out_channels: channels of the 3D output (the attention width).
        grid_shape: (x, y, z) of the 3D bottleneck, voxels.
        det_shape: (h, w) of the 2D bottleneck, pixels.
        num_heads: attention heads; must divide ``out_channels``. Defaults to 4.
        geometry: the acquisition, needed by a geometric prior. Defaults to None.
        prior: ``none``, ``bias`` (Gaussian in pixel distance) or ``mask``. Defaults to ``none``.
        prior_sigma: width of the prior, bottleneck pixels. Defaults to 1.
        mlp_ratio: hidden width of the MLP over ``out_channels``. Defaults to 2.
        dropout_rate: dropout in attention and MLP. Defaults to 0.

    ``forward(features (B, C, 2, h, w))`` -> (B, out_channels, x, y, z).

    Raises:
        ValueError: heads that do not divide the width, an unknown prior, or a prior without geometry.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        grid_shape: Sequence[int],
        det_shape: Sequence[int],
        num_heads: int = 4,
        geometry: BiplanarGeometry | None = None,
        prior: str = "none",
        prior_sigma: float = 1.0,
        mlp_ratio: float = 2.0,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if out_channels % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide out_channels ({out_channels}).")
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}.")
        if prior != "none" and (geometry is None or prior_sigma <= 0):
            raise ValueError("a geometric prior needs the geometry and a positive prior_sigma (pixels).")
        self.grid_shape = tuple(grid_shape)
        width, queries = out_channels, math.prod(grid_shape)
        self.queries = nn.Parameter(torch.zeros(queries, width))
        self.view_embedding = nn.Parameter(torch.zeros(len(VIEW_NAMES), 1, width))
        self.register_buffer("query_position", sinusoidal_encoding(_grid_indices(grid_shape), width), persistent=False)
        self.register_buffer("token_position", sinusoidal_encoding(_grid_indices(det_shape), width), persistent=False)
        prior_matrix = (
            geometric_attention_prior(geometry, grid_shape, det_shape, prior_sigma, prior) if prior != "none" else None
        )
        self.register_buffer("attention_prior", prior_matrix, persistent=False)  # (queries, tokens) or None
        self.tokens = nn.Linear(in_channels, width)
        self.query_norm, self.token_norm, self.mlp_norm = (nn.LayerNorm(width) for _ in range(3))
        self.attention = nn.MultiheadAttention(width, num_heads, dropout=dropout_rate, batch_first=True)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout_rate), nn.Linear(hidden, width)
        )
        nn.init.trunc_normal_(self.queries, std=0.02)
        nn.init.trunc_normal_(self.view_embedding, std=0.02)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch = features.shape[0]
        # 1. tokens: (B, 2 * h * w, width) with 2D positions and view embeddings
        tokens = self.tokens(features.flatten(3).permute(0, 2, 3, 1))  # (B, 2, h*w, width)
        tokens = (tokens + self.token_position + self.view_embedding).flatten(1, 2)
        # 2. queries: one per voxel, with 3D positions
        queries = (self.queries + self.query_position).expand(batch, -1, -1)  # (B, N, width)
        # 3. cross-attention (geometric prior added to the scores) and MLP, both residual
        keys = self.token_norm(tokens)
        attended, _ = self.attention(
            self.query_norm(queries), keys, keys, attn_mask=self.attention_prior, need_weights=False
        )
        out = queries + attended
        out = out + self.mlp(self.mlp_norm(out))
        return out.transpose(1, 2).reshape(batch, -1, *self.grid_shape)  # (B, width, x, y, z)
