"""Multiresolution hash encoding of 3D points (Müller et al., "Instant Neural Graphics Primitives with a
Multiresolution Hash Encoding", SIGGRAPH 2022), in plain PyTorch for CPU and CUDA.

``L`` levels of grids whose resolution grows geometrically from ``base_resolution`` to
``finest_resolution``; each level keeps ``F`` learned features per grid vertex in a table of ``T``
entries. A level whose vertices fit in the table indexes them one to one; a finer level hashes each
vertex (coordinates times large primes, XOR, modulo ``T``), so distinct vertices may share an entry:
the collision is left to the network to resolve, as in the paper. A point's code is, per level, the
trilinear interpolation of its cell's 8 corner features; the levels are concatenated.
"""

from __future__ import annotations

import math

import torch
from torch import nn

PRIMES = (1, 2654435761, 805459861)  # the paper's per-axis hashing primes


class HashEncoding(nn.Module):
    """Points in the unit cube (..., 3) -> codes (..., levels * features).

    Args:
        levels: resolution levels L. Defaults to 11 (SPIDER's setting).
        features: features per level F. Defaults to 8 (SPIDER's setting).
        log2_table_size: log2 of the entries per level T. Defaults to 19.
        base_resolution: cells per side at the coarsest level. Defaults to 16.
        finest_resolution: cells per side at the finest level. Defaults to 512.
        init_scale: tables start uniform in [-init_scale, init_scale]. Defaults to 1e-4.

    Coordinates outside [0, 1] are clamped to it.
    """

    def __init__(
        self,
        levels: int = 11,
        features: int = 8,
        log2_table_size: int = 19,
        base_resolution: int = 16,
        finest_resolution: int = 512,
        init_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        if levels < 1 or features < 1 or log2_table_size < 1 or not 1 <= base_resolution <= finest_resolution:
            raise ValueError(
                "need levels, features, log2_table_size >= 1 and 1 <= base_resolution <= finest_resolution; got "
                f"{levels}, {features}, {log2_table_size}, {base_resolution}, {finest_resolution}."
            )
        growth = math.exp((math.log(finest_resolution) - math.log(base_resolution)) / max(levels - 1, 1))
        self.resolutions = [math.floor(base_resolution * growth**level + 1e-9) for level in range(levels)]
        self.table_size = 2**log2_table_size
        self.features = features
        self.tables = nn.Parameter(torch.empty(levels, self.table_size, features).uniform_(-init_scale, init_scale))

    @property
    def out_channels(self) -> int:
        return len(self.resolutions) * self.features

    def dense(self, level: int) -> bool:
        """Whether a level's vertices fit in its table (indexed one to one, no hashing)."""
        return (self.resolutions[level] + 1) ** 3 <= self.table_size

    def index(self, vertices: torch.Tensor, level: int) -> torch.Tensor:
        """Table entries (...,) of integer grid vertices (..., 3) of one level."""
        if self.dense(level):
            side = self.resolutions[level] + 1
            return vertices[..., 0] + side * (vertices[..., 1] + side * vertices[..., 2])
        hashed = vertices[..., 0] * PRIMES[0] ^ vertices[..., 1] * PRIMES[1] ^ vertices[..., 2] * PRIMES[2]
        return hashed % self.table_size

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        flat = points.reshape(-1, 3).clamp(0, 1)
        codes = []
        corners = torch.tensor(
            [[(c >> axis) & 1 for axis in range(3)] for c in range(8)], device=points.device
        )  # (8, 3)
        for level, resolution in enumerate(self.resolutions):
            scaled = flat.to(self.tables.dtype) * resolution
            low = scaled.floor().clamp(max=resolution - 1)  # the cell; the far face belongs to the last cell
            fraction = scaled - low  # (N, 3) in [0, 1]
            vertices = low.long()[:, None, :] + corners  # (N, 8, 3)
            weights = torch.where(corners.bool(), fraction[:, None, :], 1 - fraction[:, None, :]).prod(-1)  # (N, 8)
            features = self.tables[level][self.index(vertices, level)]  # (N, 8, F)
            codes.append((weights[..., None] * features).sum(1))
        return torch.cat(codes, dim=-1).reshape(*points.shape[:-1], self.out_channels)


__all__ = ["HashEncoding", "PRIMES"]
