"""Lossless resolution changes: fold each f^n block of a grid into channels (space-to-depth) and back.

A network that works on a grid ``f`` times coarser loses nothing of its input when the input is folded
instead of pooled: every f x f pixel block of a view (or f x f x f voxel block of a volume) becomes
f^2 (or f^3) channels of one coarse sample (the 2D case is :func:`torch.nn.functional.pixel_unshuffle`).
Unfolding does the inverse, so coarse features can place full-resolution detail (sub-pixel
convolution: Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient
Sub-Pixel Convolutional Neural Network", CVPR 2016).
"""

from __future__ import annotations

import torch


def space_to_depth(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, *S) -> (B, C * factor^n, *S / factor) for n spatial dims; channel ``c * factor^n + offset``."""
    batch, channels, *size = x.shape
    n = len(size)
    if any(s % factor for s in size):
        raise ValueError(f"every spatial size {tuple(size)} must be divisible by {factor}.")
    x = x.reshape(batch, channels, *[v for s in size for v in (s // factor, factor)])  # (B, C, s1/f, f, ...)
    order = [0, 1, *(3 + 2 * i for i in range(n)), *(2 + 2 * i for i in range(n))]
    return x.permute(order).reshape(batch, channels * factor**n, *(s // factor for s in size))


def depth_to_space(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C * factor^n, *S) -> (B, C, *S * factor): the inverse of :func:`space_to_depth`."""
    batch, channels, *size = x.shape
    n = len(size)
    if channels % factor**n:
        raise ValueError(f"{channels} channels cannot unfold into {factor}^{n} blocks.")
    x = x.reshape(batch, channels // factor**n, *([factor] * n), *size)  # (B, C, f, ..., s1, ...)
    order = [0, 1, *(v for i in range(n) for v in (2 + n + i, 2 + i))]
    return x.permute(order).reshape(batch, channels // factor**n, *(s * factor for s in size))


__all__ = ["depth_to_space", "space_to_depth"]
