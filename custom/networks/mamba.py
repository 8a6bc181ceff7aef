"""The Mamba mixer: a gated, selective state space layer over token sequences.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", arXiv 2312.00752, Section 3.4 and
Figure 3. Parameter names and shapes are those of ``mamba_ssm.Mamba`` (``in_proj``, ``conv1d``, ``x_proj``,
``dt_proj``, ``A_log``, ``D``, ``out_proj``), so state dicts load in either direction.

The depthwise causal convolution always runs through ``self.conv1d`` and the scan through
:func:`~custom.networks.selective_scan.selective_scan`; mamba_ssm's own fast path fuses the convolution into
the kernel, which we deliberately do not, so that the CUDA kernel and the PyTorch scan compute the same function.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from custom.networks.selective_scan import selective_scan
from torch import nn


class Mamba(nn.Module):
    """Mamba block (mixer): ``(B, L, d_model) -> (B, L, d_model)``, causal along L.

    Gu & Dao, arXiv 2312.00752. With ``d_inner = expand * d_model``::

        x, z = in_proj(tokens)                      two (B, d_inner, L) streams
        x    = silu(causal depthwise conv1d(x))
        dt, B, C = x_proj(x)                        (B, dt_rank | d_state | d_state, L)
        y    = selective_scan(x, dt_proj.weight dt, -exp(A_log), B, C, D, z, dt_proj.bias, softplus)
        out  = out_proj(y)

    Args:
        d_model: token (model) width.
        d_state: SSM state size N per channel. Defaults to 16.
        d_conv: width of the causal depthwise convolution. Defaults to 4.
        expand: ``d_inner = int(expand * d_model)``. Defaults to 2.
        dt_rank: rank of the step-size projection; ``"auto"`` is ``ceil(d_model / 16)``. Defaults to "auto".
        dt_min: smallest initial step size. Defaults to 0.001.
        dt_max: largest initial step size. Defaults to 0.1.
        dt_init_floor: initial step sizes are clamped below at this value. Defaults to 1e-4.
        conv_bias: bias in the convolution. Defaults to True.
        bias: biases in ``in_proj`` and ``out_proj``. Defaults to False.

    Raises:
        ValueError: for non-positive sizes, an invalid ``dt_rank`` or step-size range.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        d_inner = int(expand * d_model)
        if d_inner < 1:
            raise ValueError(f"expand * d_model must be at least 1, got expand={expand!r}.")
        if dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        if not isinstance(dt_rank, int) or dt_rank < 1:
            raise ValueError(f"dt_rank must be 'auto' or a positive integer, got {dt_rank!r}.")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}.")
        if dt_init_floor < 0:
            raise ValueError(f"dt_init_floor must be non-negative, got {dt_init_floor}.")
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = d_inner
        self.dt_rank = dt_rank
        self.dt_min = dt_min
        self.dt_max = dt_max
        self.dt_init_floor = dt_init_floor

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(d_inner, d_state))
        self.D = nn.Parameter(torch.empty(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        # Optimisers may skip weight decay on the SSM parameters, as the reference implementation marks them.
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise the SSM parameters as in the Mamba paper (Gu & Dao, arXiv 2312.00752, Section 3.6).

        ``in_proj``, ``conv1d``, ``x_proj`` and ``out_proj`` keep PyTorch's default initialisation. Then:

        1. ``dt_proj.weight`` uniform in ``[-dt_rank^-0.5, dt_rank^-0.5]`` (variance-preserving).
        2. ``dt_proj.bias`` = inverse softplus of a step size drawn log-uniformly in ``[dt_min, dt_max]`` and
           clamped below at ``dt_init_floor``, so that ``softplus(bias)`` starts in that range.
        3. S4D-real ``A = -(1, 2, ..., d_state)`` for every channel, stored as ``A_log = log(1..d_state)``.
        4. ``D = 1`` (identity skip).
        """
        # 1. Step-size projection weight.
        bound = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        # 2. Step-size bias: softplus^-1(dt) = dt + log(1 - exp(-dt)).
        log_min, log_max = math.log(self.dt_min), math.log(self.dt_max)
        dt = torch.exp(torch.rand(self.d_inner) * (log_max - log_min) + log_min).clamp(min=self.dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # 3. A_log (kept in float32 by the forward).
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32).expand(self.d_inner, -1)  # noqa: N806
        self.A_log.copy_(torch.log(A))
        # 4. Skip.
        self.D.fill_(1.0)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Mix a token sequence causally.

        Args:
            hidden_states: (B, L, d_model).

        Returns:
            (B, L, d_model); output ``t`` depends on tokens ``0..t`` only.

        Raises:
            ValueError: when the input is not (B, L, d_model).
        """
        if hidden_states.ndim != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"expected (B, L, {self.d_model}) tokens, got shape {tuple(hidden_states.shape)}.")
        length = hidden_states.shape[1]
        # 1. Input projection into the SSM stream x and the gate z.
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (B, 2 d_inner, L)
        x, z = xz.chunk(2, dim=1)  # (B, d_inner, L) each
        # 2. Causal depthwise convolution (left padding d_conv - 1, truncated to L), then SiLU.
        x = F.silu(self.conv1d(x)[..., :length])  # (B, d_inner, L)
        # 3. Input-dependent step size, B and C.
        x_dbl = self.x_proj(x.transpose(1, 2))  # (B, L, dt_rank + 2 d_state)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)  # noqa: N806
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # (B, d_inner, L), bias added in the scan
        B = B.transpose(1, 2).contiguous()  # (B, d_state, L)  # noqa: N806
        C = C.transpose(1, 2).contiguous()  # (B, d_state, L)  # noqa: N806
        # 4. Selective scan with the skip D and the gate silu(z).
        A = -torch.exp(self.A_log.float())  # (d_inner, d_state)  # noqa: N806
        y = selective_scan(
            x, delta, A, B, C, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True
        )  # (B, d_inner, L)
        # 5. Output projection.
        return self.out_proj(y.transpose(1, 2))  # (B, L, d_model)
