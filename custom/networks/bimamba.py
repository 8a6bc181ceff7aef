"""BiM-3D: a bidirectional Mamba over the tokens of a 3D feature grid (PSCT-Net's bottleneck).

PSCT-Net (arXiv 2606.19867) flattens the 3D bottleneck into a token sequence and runs pre-LayerNorm residual
blocks around a Mamba mixer (Gu & Dao, arXiv 2312.00752) applied to the sequence and to its flip, so that every
token sees the whole grid, followed by a SiLU MLP. :class:`BiMambaBlock` is one block on token sequences,
:class:`BiMamba3d` the stack on (B, C, X, Y, Z) grids.
"""

from __future__ import annotations

import torch
from custom.networks.mamba import Mamba
from torch import nn


class BiMambaBlock(nn.Module):
    """Pre-LayerNorm bidirectional Mamba block, ``(B, L, channels) -> (B, L, channels)`` (PSCT-Net BiM-3D).

    ::

        n = LN1(x)
        x = x + Mamba_f(n) + flip(Mamba_b(flip(n)))       (flip along L; the two directions are summed)
        x = x + MLP(LN2(x))                               (Linear -> SiLU -> Dropout -> Linear -> Dropout)

    With ``shared=True`` (PSCT-Net's choice) ``Mamba_b`` is ``Mamba_f``: the same weights scan both directions,
    and the block is flip-equivariant (``block(flip(x)) == flip(block(x))``). With ``shared=False`` the backward
    direction has its own Mamba (``mamba_backward``). Either way every output token depends on every input token.

    Args:
        channels: token width.
        d_state: Mamba state size. Defaults to 16.
        d_conv: Mamba convolution width. Defaults to 4.
        expand: Mamba expansion factor. Defaults to 2.
        shared: one Mamba for both scan directions. Defaults to True.
        mlp_ratio: MLP hidden width as a multiple of ``channels``. Defaults to 2.0.
        dropout_rate: dropout in the MLP (PSCT-Net uses 0.5). Defaults to 0.0.

    Raises:
        ValueError: for non-positive ``channels`` or ``mlp_ratio``, or ``dropout_rate`` outside [0, 1].
    """

    def __init__(
        self,
        channels: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        shared: bool = True,
        mlp_ratio: float = 2.0,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}.")
        hidden = int(mlp_ratio * channels)
        if mlp_ratio <= 0 or hidden < 1:
            raise ValueError(f"mlp_ratio must give at least one hidden unit, got {mlp_ratio!r}.")
        if not 0.0 <= dropout_rate <= 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1], got {dropout_rate!r}.")
        self.channels = channels
        self.norm1 = nn.LayerNorm(channels)
        self.mamba = Mamba(channels, d_state=d_state, d_conv=d_conv, expand=expand)
        self.mamba_backward = None if shared else Mamba(channels, d_state=d_state, d_conv=d_conv, expand=expand)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.SiLU(),
            nn.Dropout(dropout_rate),
            nn.Linear(hidden, channels),
            nn.Dropout(dropout_rate),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix the tokens in both directions, then per token.

        Args:
            x: (B, L, channels).

        Returns:
            (B, L, channels).

        Raises:
            ValueError: when the input is not (B, L, channels).
        """
        if x.ndim != 3 or x.shape[-1] != self.channels:
            raise ValueError(f"expected (B, L, {self.channels}) tokens, got shape {tuple(x.shape)}.")
        backward = self.mamba if self.mamba_backward is None else self.mamba_backward
        # 1. Bidirectional Mamba on the normalised tokens, directions summed, residual.
        n = self.norm1(x)  # (B, L, C)
        x = x + self.mamba(n) + backward(n.flip(1)).flip(1)  # (B, L, C)
        # 2. Per-token MLP, residual.
        return x + self.mlp(self.norm2(x))  # (B, L, C)


class BiMamba3d(nn.Module):
    """BiM-3D: bidirectional Mamba blocks over a 3D grid, ``(B, C, X, Y, Z) -> (B, C, X, Y, Z)``.

    PSCT-Net (arXiv 2606.19867) applies it at the 4^3 bottleneck (64 tokens, d_state 16, d_conv 4, expand 2,
    shared weights, dropout 0.5). The grid is flattened in row-major (C) order, z fastest: token
    ``x * Y * Z + y * Z + z``. Flipping the sequence therefore flips all three axes, so with ``shared=True``
    ``BiMamba3d(v.flip(2, 3, 4)) == BiMamba3d(v).flip(2, 3, 4)``. After ``depth`` :class:`BiMambaBlock` s a
    final LayerNorm normalises the tokens before they are folded back into the grid.

    Args:
        channels: feature channels C (the token width).
        depth: number of blocks, at least 1. Defaults to 2.
        d_state: Mamba state size. Defaults to 16.
        d_conv: Mamba convolution width. Defaults to 4.
        expand: Mamba expansion factor. Defaults to 2.
        shared: one Mamba for both scan directions in each block. Defaults to True.
        mlp_ratio: MLP hidden width as a multiple of ``channels``. Defaults to 2.0.
        dropout_rate: MLP dropout. Defaults to 0.0.

    Raises:
        ValueError: for ``depth < 1`` and the arguments :class:`BiMambaBlock` rejects.
    """

    def __init__(
        self,
        channels: int,
        depth: int = 2,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        shared: bool = True,
        mlp_ratio: float = 2.0,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}.")
        self.channels = channels
        self.blocks = nn.ModuleList(
            BiMambaBlock(channels, d_state, d_conv, expand, shared, mlp_ratio, dropout_rate) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix the grid's tokens.

        Args:
            x: (B, C, X, Y, Z).

        Returns:
            (B, C, X, Y, Z).

        Raises:
            ValueError: when the input is not (B, channels, X, Y, Z).
        """
        if x.ndim != 5 or x.shape[1] != self.channels:
            raise ValueError(f"expected (B, {self.channels}, X, Y, Z), got shape {tuple(x.shape)}.")
        grid = x.shape[2:]
        # 1. Grid to tokens, z fastest.
        tokens = x.flatten(2).transpose(1, 2)  # (B, X*Y*Z, C)
        # 2. Bidirectional Mamba blocks and the final norm.
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)  # (B, X*Y*Z, C)
        # 3. Tokens back to the grid.
        return tokens.transpose(1, 2).reshape(x.shape[0], self.channels, *grid)  # (B, C, X, Y, Z)
