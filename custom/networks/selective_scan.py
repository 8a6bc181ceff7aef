"""The selective scan of Mamba: a sequential reference, an exact parallel PyTorch scan and a dispatcher.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", arXiv 2312.00752, Algorithm 2.
For every batch element and channel ``d`` the input-dependent (selective) state space model is discretised with
zero-order hold for ``A`` and Euler for ``B`` and run as a linear recurrence over time ``t``::

    delta_t = softplus(delta_t + delta_bias)              (bias and softplus optional)
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,    h_{-1} = 0     (h_t: N states)
    y_t     = C_t . h_t + D * u_t
    y_t     = y_t * silu(z_t)                             (optional gate)

All three functions share the signature of mamba_ssm's ``selective_scan_fn`` (its argument names too, hence
the capitals A, B, C, D that linters flag) and compute the same function:

``selective_scan_reference``
    The recurrence as a plain Python loop over time: slow, obviously right, the yardstick for the others.
``selective_scan_parallel``
    The same recurrence as an associative scan over the pairs ``(a_t, b_t) = (exp(delta_t A), delta_t B_t u_t)``
    with ``(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)`` (Blelloch, "Prefix sums and their applications", 1990),
    evaluated by recursive odd-even reduction: combine neighbouring pairs, scan the half-length sequence, then
    fill in the even positions. O(L) work, O(log L) sequential steps, exact up to rounding (only products of
    the ``a_t``, never ``exp`` of cumulative sums that overflow on long sequences), differentiable by autograd,
    on any device. Memory is O(batch * dim * L * N).
``selective_scan``
    Dispatch: mamba_ssm's fused CUDA kernel where it is installed and the tensors are on CUDA, the parallel
    PyTorch scan otherwise. The environment variable ``PSCTNET_SELECTIVE_SCAN`` overrides: ``torch`` forces
    PyTorch, ``cuda`` requires the kernel (and raises when it cannot be used), ``auto`` or unset chooses.
    :func:`selective_scan_backend` says which one a device would get.

Half-precision inputs are computed in float32 (float64 stays float64); the output has the dtype of ``u``, as
in mamba_ssm. The kernel is imported lazily, once, and any failure to import it (missing package, CUDA
build mismatch) only disables it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F

SELECTIVE_SCAN_ENV = "PSCTNET_SELECTIVE_SCAN"
BACKEND_CHOICES = ("auto", "torch", "cuda")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

ScanResult = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def _check_shapes(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,  # noqa: N803
    B: torch.Tensor,  # noqa: N803
    C: torch.Tensor,  # noqa: N803
    D: torch.Tensor | None,  # noqa: N803
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
) -> None:
    """Raise ``ValueError`` unless the arguments have the shapes of :func:`selective_scan_reference`."""
    if u.ndim != 3:
        raise ValueError(f"u must be (batch, dim, L), got shape {tuple(u.shape)}.")
    batch, dim, length = u.shape
    if length < 1:
        raise ValueError("the sequence length L must be at least 1.")
    if A.ndim != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be (dim, N) = ({dim}, N), got shape {tuple(A.shape)}.")
    d_state = A.shape[1]
    expected = {
        "delta": (delta, (batch, dim, length)),
        "B": (B, (batch, d_state, length)),
        "C": (C, (batch, d_state, length)),
        "D": (D, (dim,)),
        "z": (z, (batch, dim, length)),
        "delta_bias": (delta_bias, (dim,)),
    }
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}.")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half and single precision inputs, float64 for double."""
    return torch.promote_types(dtype, torch.float32)


def _discretisation_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,  # noqa: N803
    B: torch.Tensor,  # noqa: N803
    C: torch.Tensor,  # noqa: N803
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
) -> tuple[torch.Tensor, ...]:
    """Shared step 1: cast to the compute dtype and form the step size ``delta`` (bias, softplus)."""
    dtype = _compute_dtype(u.dtype)
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))  # noqa: N806
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A, B, C


def _skip_and_gate(
    y: torch.Tensor, u: torch.Tensor, skip: torch.Tensor | None, z: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """Shared last step: ``y + D u`` (``skip`` is ``D``), gated by ``silu(z)``, in the output dtype."""
    if skip is not None:
        y = y + skip.to(y.dtype)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype)


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,  # noqa: N803
    B: torch.Tensor,  # noqa: N803
    C: torch.Tensor,  # noqa: N803
    D: torch.Tensor | None = None,  # noqa: N803
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> ScanResult:
    """Selective scan as a sequential loop over time (Gu & Dao, arXiv 2312.00752, Algorithm 2).

    Args:
        u: input, (batch, dim, L).
        delta: step size before ``delta_bias`` and softplus, (batch, dim, L).
        A: state matrix (diagonal per channel; negative for a stable model), (dim, N).
        B: input-dependent input matrix, (batch, N, L).
        C: input-dependent output matrix, (batch, N, L).
        D: skip connection, (dim,). Defaults to None (no skip).
        z: gate, (batch, dim, L); the output is multiplied by ``silu(z)``. Defaults to None (no gate).
        delta_bias: added to ``delta`` before the softplus, (dim,). Defaults to None.
        delta_softplus: apply softplus to ``delta`` (after the bias). Defaults to False.
        return_last_state: also return the last hidden state. Defaults to False.

    Returns:
        y, (batch, dim, L), in the dtype of ``u``; with ``return_last_state`` the pair (y, h_{L-1}) with the
        state (batch, dim, N) in the compute dtype (float32, or float64 for double inputs).

    Raises:
        ValueError: when the shapes do not match.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    # 1. Step size and compute dtype.
    u, delta, A, B, C = _discretisation_inputs(u, delta, A, B, C, delta_bias, delta_softplus)  # noqa: N806
    # 2. Recurrence h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, read out y_t = C_t . h_t.
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])  # (batch, dim, N)
    ys = []
    for t in range(u.shape[-1]):
        decay = torch.exp(delta[:, :, t, None] * A)  # (batch, dim, N)
        drive = (delta[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]  # (batch, dim, N)
        h = decay * h + drive
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    y = torch.stack(ys, dim=-1)  # (batch, dim, L)
    # 3. Skip connection and gate.
    out = _skip_and_gate(y, u, D, z, dtype_in)
    return (out, h) if return_last_state else out


def _linear_recurrence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All states of ``h_t = a_t h_{t-1} + b_t`` (``h_{-1} = 0``) along dim -2, by recursive odd-even reduction.

    Args:
        a: decays, (..., L, N).
        b: drives, (..., L, N).

    Returns:
        h, (..., L, N).
    """
    length = a.shape[-2]
    if length == 1:
        return b
    # 1. Pad odd lengths with the identity element (a, b) = (1, 0) so that positions pair up.
    if length % 2:
        a = torch.cat((a, torch.ones_like(a[..., :1, :])), dim=-2)
        b = torch.cat((b, torch.zeros_like(b[..., :1, :])), dim=-2)
    a_even, a_odd = a[..., 0::2, :], a[..., 1::2, :]
    b_even, b_odd = b[..., 0::2, :], b[..., 1::2, :]
    # 2. Combine the pairs (2i, 2i+1): (a_e, b_e) o (a_o, b_o) = (a_e a_o, a_o b_e + b_o), and scan the
    #    half-length sequence: its states are the states at the odd positions.
    h_odd = _linear_recurrence(a_even * a_odd, a_odd * b_even + b_odd)
    # 3. The even positions take one more step from the preceding odd state: h_2i = a_2i h_{2i-1} + b_2i.
    h_before = torch.cat((torch.zeros_like(h_odd[..., :1, :]), h_odd[..., :-1, :]), dim=-2)
    h_even = a_even * h_before + b_even
    # 4. Interleave even and odd positions and drop the padding.
    h = torch.stack((h_even, h_odd), dim=-2).flatten(-3, -2)
    return h[..., :length, :]


def selective_scan_parallel(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,  # noqa: N803
    B: torch.Tensor,  # noqa: N803
    C: torch.Tensor,  # noqa: N803
    D: torch.Tensor | None = None,  # noqa: N803
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> ScanResult:
    """Selective scan as an exact parallel (associative) scan in PyTorch.

    Computes the function of :func:`selective_scan_reference` (same arguments, shapes and returns) in
    O(log L) sequential steps: the pairs ``(exp(delta_t A), delta_t B_t u_t)`` are combined with the associative
    ``(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)`` by recursive odd-even reduction (Blelloch 1990). Only products
    of decays are formed, so long sequences stay finite; gradients come from autograd; CPU and CUDA.

    Raises:
        ValueError: when the shapes do not match.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    # 1. Step size and compute dtype.
    u, delta, A, B, C = _discretisation_inputs(u, delta, A, B, C, delta_bias, delta_softplus)  # noqa: N806
    # 2. Discretised decays and drives, time on dim -2.
    decay = torch.exp(delta[..., None] * A[:, None, :])  # (batch, dim, L, N)
    drive = (delta * u)[..., None] * B.transpose(1, 2)[:, None]  # (batch, dim, L, N)
    # 3. All states by the associative scan, then the read-out y_t = C_t . h_t.
    h = _linear_recurrence(decay, drive)  # (batch, dim, L, N)
    y = torch.einsum("bdln,bnl->bdl", h, C)  # (batch, dim, L)
    # 4. Skip connection and gate.
    out = _skip_and_gate(y, u, D, z, dtype_in)
    return (out, h[:, :, -1]) if return_last_state else out


@functools.cache
def _load_kernel() -> tuple[Callable[..., ScanResult] | None, str]:
    """mamba_ssm's fused ``selective_scan_fn`` and an empty reason, or None and why it could not be imported.

    Imported on first use and cached. Any exception disables the kernel: mamba_ssm raises ImportError when
    absent but OSError or RuntimeError when its CUDA build does not match the installed torch.
    """
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as error:  # an optional accelerator must never break the import
        return None, f"{type(error).__name__}: {error}"
    return selective_scan_fn, ""


def _requested_backend() -> str:
    """The backend asked for by ``PSCTNET_SELECTIVE_SCAN`` ("auto" when unset or empty)."""
    value = os.environ.get(SELECTIVE_SCAN_ENV, "").strip().lower() or "auto"
    if value not in BACKEND_CHOICES:
        raise ValueError(f"{SELECTIVE_SCAN_ENV} must be one of {BACKEND_CHOICES} (or unset), got {value!r}.")
    return value


def selective_scan_backend(device: torch.device | str, dtype: torch.dtype = torch.float32) -> str:
    """Which implementation :func:`selective_scan` uses for inputs ``u`` on ``device`` with ``dtype``.

    Args:
        device: device of the tensors, e.g. ``"cuda:0"`` or ``torch.device("cpu")``.
        dtype: dtype of ``u``; the kernel takes float32, float16 and bfloat16. Defaults to float32.

    Returns:
        ``"cuda"`` (mamba_ssm's fused kernel) or ``"torch"`` (:func:`selective_scan_parallel`).

    Raises:
        ValueError: when ``PSCTNET_SELECTIVE_SCAN`` is not ``auto``, ``torch``, ``cuda`` or unset.
        RuntimeError: when ``PSCTNET_SELECTIVE_SCAN=cuda`` but the kernel cannot run these inputs.
    """
    requested = _requested_backend()
    if requested == "torch":
        return "torch"
    device = torch.device(device)
    kernel, reason = _load_kernel()
    usable = kernel is not None and device.type == "cuda" and dtype in KERNEL_DTYPES
    if usable:
        return "cuda"
    if requested == "cuda":
        if kernel is None:
            why = f"mamba_ssm's selective scan kernel could not be imported ({reason})"
        elif device.type != "cuda":
            why = f"the kernel needs CUDA tensors, got device {device}"
        else:
            why = f"the kernel takes {KERNEL_DTYPES}, got {dtype}"
        raise RuntimeError(f"{SELECTIVE_SCAN_ENV}=cuda but {why}; unset it or set it to 'torch'.")
    return "torch"


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,  # noqa: N803
    B: torch.Tensor,  # noqa: N803
    C: torch.Tensor,  # noqa: N803
    D: torch.Tensor | None = None,  # noqa: N803
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> ScanResult:
    """Selective scan by the best available backend (see :func:`selective_scan_backend`).

    Same arguments, shapes and returns as :func:`selective_scan_reference`. TorchScript tracing always takes the
    PyTorch scan, so exported models run anywhere. On the kernel path ``delta``, ``B``,
    ``C`` and ``z`` are cast to the dtype of ``u`` and ``A``, ``D``, ``delta_bias`` to float32, as the kernel
    requires.

    Raises:
        ValueError: when the shapes do not match or ``PSCTNET_SELECTIVE_SCAN`` has an unknown value.
        RuntimeError: when ``PSCTNET_SELECTIVE_SCAN=cuda`` but the kernel cannot run these inputs.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    exporting = torch.jit.is_tracing() or torch.jit.is_scripting()  # a saved graph cannot hold the kernel's Function
    if exporting or selective_scan_backend(u.device, u.dtype) == "torch":
        return selective_scan_parallel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    kernel, _ = _load_kernel()
    dtype = u.dtype

    def as_float(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor.float()

    return kernel(
        u,
        delta.to(dtype),
        A.float(),
        B.to(dtype),
        C.to(dtype),
        as_float(D),
        z=None if z is None else z.to(dtype),
        delta_bias=as_float(delta_bias),
        delta_softplus=delta_softplus,
        return_last_state=return_last_state,
    )
