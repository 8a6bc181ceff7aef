from __future__ import annotations

import math

import custom.networks.mamba as mamba_module
import custom.networks.selective_scan as ss
import pytest
import torch
import torch.nn.functional as F
from custom.networks.mamba import Mamba
from custom.networks.selective_scan import (
    SELECTIVE_SCAN_ENV,
    selective_scan,
    selective_scan_backend,
    selective_scan_parallel,
    selective_scan_reference,
)

# mamba_ssm's fp32 tolerances for its selective scan tests.
RTOL, ATOL = 6e-4, 2e-3
SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def scan_inputs(batch, dim, d_state, length, dtype=torch.float32, device="cpu", seed=0, realistic=True):
    """Inputs of a selective scan with Mamba's magnitudes: softplus(delta + bias) ~ 0.001..0.1, A = -(1..N)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    if realistic:
        dt = torch.exp(torch.rand(dim, generator=g, dtype=torch.float64) * math.log(100) + math.log(1e-3))
        delta_bias = dt + torch.log(-torch.expm1(-dt))  # inverse softplus
        delta = 0.1 * randn(batch, dim, length)
        A = -torch.arange(1, d_state + 1, dtype=torch.float64).repeat(dim, 1)
    else:
        delta_bias = 0.5 * randn(dim)
        delta = randn(batch, dim, length)
        A = -torch.exp(randn(dim, d_state))
    tensors = {
        "u": randn(batch, dim, length),
        "delta": delta,
        "A": A,
        "B": randn(batch, d_state, length),
        "C": randn(batch, d_state, length),
        "D": randn(dim),
        "z": randn(batch, dim, length),
        "delta_bias": delta_bias,
    }
    return {name: t.to(device=device, dtype=dtype).requires_grad_() for name, t in tensors.items()}


def outputs_and_grads(scan, inputs, seed=1):
    """The scan's output and the gradients of <output, g> for a random g w.r.t. every input."""
    out = scan(**inputs, delta_softplus=True)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype).to(out.device)
    # A receives no gradient when L = 1 (h_{-1} = 0): materialise it as zeros.
    grads = torch.autograd.grad((out * g).sum(), [inputs[name] for name in SCAN_ARGS], materialize_grads=True)
    return out, dict(zip(SCAN_ARGS, grads))


def assert_close(actual, expected, rtol=RTOL, atol=ATOL):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


# --- selective scan: parallel vs sequential reference -------------------------------------------------------


@pytest.mark.parametrize(
    "batch, dim, d_state, length, realistic",
    [
        (1, 1, 1, 1, True),  # L = 1
        (2, 3, 4, 2, False),
        (2, 3, 4, 7, False),  # odd, not a power of two
        (1, 4, 16, 33, True),
        (2, 5, 3, 100, False),
        (2, 8, 16, 512, True),  # PSCT-Net-like: 8^3 tokens, A = -(1..16)
    ],
)
def test_parallel_matches_reference(batch, dim, d_state, length, realistic):
    inputs = scan_inputs(batch, dim, d_state, length, realistic=realistic)
    out, grads = outputs_and_grads(selective_scan_parallel, inputs)
    ref_out, ref_grads = outputs_and_grads(selective_scan_reference, inputs)
    assert out.shape == (batch, dim, length) and out.dtype == torch.float32
    assert_close(out, ref_out)
    for name in SCAN_ARGS:
        assert_close(grads[name], ref_grads[name])


@pytest.mark.parametrize("length", [1, 6, 37, 256])
def test_parallel_matches_reference_float64(length):
    inputs = scan_inputs(2, 3, 5, length, dtype=torch.float64, realistic=False)
    out, grads = outputs_and_grads(selective_scan_parallel, inputs)
    ref_out, ref_grads = outputs_and_grads(selective_scan_reference, inputs)
    assert out.dtype == torch.float64
    assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    for name in SCAN_ARGS:
        assert_close(grads[name], ref_grads[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scan", [selective_scan_reference, selective_scan_parallel])
def test_optional_arguments_and_last_state(scan):
    """Without D, z, delta_bias and softplus the scan is the bare recurrence; the last state is h_{L-1}."""
    inputs = scan_inputs(2, 3, 4, 9, dtype=torch.float64, realistic=False)
    u, delta, A, B, C = (inputs[name].detach() for name in ("u", "delta", "A", "B", "C"))
    delta = delta.abs()
    out, last = scan(u, delta, A, B, C, return_last_state=True)
    h = torch.zeros(2, 3, 4, dtype=torch.float64)
    for t in range(9):
        h = torch.exp(delta[:, :, t, None] * A) * h + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        assert_close(out[:, :, t], (h * C[:, None, :, t]).sum(-1), rtol=1e-12, atol=1e-12)
    assert_close(last, h, rtol=1e-12, atol=1e-12)


def test_long_sequence_stays_finite():
    """exp(-cumsum(delta A)) overflows float32 here; products of decays never do."""
    inputs = scan_inputs(1, 2, 16, 4096, realistic=False)
    with torch.no_grad():
        inputs["delta_bias"].fill_(1.0)  # softplus(delta + 1) ~ 1.3: sum over L of |delta A| ~ 1e5
        delta = F.softplus(inputs["delta"] + 1.0)
        assert torch.isinf(torch.exp(-(delta[..., None] * inputs["A"][:, None]).cumsum(-2))).any()
    out, grads = outputs_and_grads(selective_scan_parallel, inputs)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads.values())
    with torch.no_grad():
        ref = selective_scan_reference(**inputs, delta_softplus=True)
    assert_close(out.detach(), ref)


def test_half_precision_computes_in_float32():
    inputs = scan_inputs(2, 4, 8, 50, dtype=torch.float16)
    out = selective_scan_parallel(**inputs, delta_softplus=True)
    assert out.dtype == torch.float16
    ref = selective_scan_reference(**{k: v.float() for k, v in inputs.items()}, delta_softplus=True)
    assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)
    out.float().sum().backward()
    assert inputs["u"].grad.dtype == torch.float16 and torch.isfinite(inputs["u"].grad).all()


@pytest.mark.parametrize("scan", [selective_scan_reference, selective_scan_parallel, selective_scan])
@pytest.mark.parametrize(
    "name, shape",
    [("u", (2, 3)), ("u", (2, 3, 0)), ("delta", (2, 3, 6)), ("A", (4, 4)), ("B", (2, 4, 6)), ("C", (2, 3, 5)),
     ("D", (4,)), ("z", (2, 3, 4)), ("delta_bias", (1,))],
)  # fmt: skip
def test_ill_arg_scan(scan, name, shape):
    inputs = {k: v.detach() for k, v in scan_inputs(2, 3, 4, 5).items()}
    inputs[name] = torch.zeros(shape)
    with pytest.raises(ValueError):
        scan(**inputs)


# --- dispatch -----------------------------------------------------------------------------------------------


def fake_kernel(*args, **kwargs):
    raise AssertionError("the fake kernel must not run")


def test_cpu_uses_torch(monkeypatch):
    monkeypatch.delenv(SELECTIVE_SCAN_ENV, raising=False)
    assert selective_scan_backend("cpu") == "torch"
    inputs = {k: v.detach() for k, v in scan_inputs(2, 3, 4, 10).items()}
    expected = selective_scan_parallel(**inputs, delta_softplus=True)
    torch.testing.assert_close(selective_scan(**inputs, delta_softplus=True), expected, rtol=0, atol=0)


def test_auto_prefers_kernel_on_cuda_only(monkeypatch):
    monkeypatch.delenv(SELECTIVE_SCAN_ENV, raising=False)
    monkeypatch.setattr(ss, "_load_kernel", lambda: (fake_kernel, ""))
    assert selective_scan_backend("cuda") == "cuda"
    assert selective_scan_backend(torch.device("cuda", 1), torch.bfloat16) == "cuda"
    assert selective_scan_backend("cuda", torch.float64) == "torch"  # the kernel has no float64
    assert selective_scan_backend("cpu") == "torch"
    monkeypatch.setattr(ss, "_load_kernel", lambda: (None, "ImportError: no mamba_ssm"))
    assert selective_scan_backend("cuda") == "torch"


@pytest.mark.parametrize("value", ["torch", "TORCH", " torch "])
def test_env_forces_torch(monkeypatch, value):
    monkeypatch.setenv(SELECTIVE_SCAN_ENV, value)
    monkeypatch.setattr(ss, "_load_kernel", lambda: (fake_kernel, ""))
    assert selective_scan_backend("cuda") == "torch"
    inputs = {k: v.detach() for k, v in scan_inputs(1, 2, 3, 4).items()}
    selective_scan(**inputs)  # the fake kernel would raise


def test_env_cuda_requires_kernel(monkeypatch):
    monkeypatch.setenv(SELECTIVE_SCAN_ENV, "cuda")
    monkeypatch.setattr(ss, "_load_kernel", lambda: (None, "ImportError: no mamba_ssm"))
    with pytest.raises(RuntimeError, match="could not be imported"):
        selective_scan_backend("cuda")
    inputs = {k: v.detach() for k, v in scan_inputs(1, 2, 3, 4).items()}
    with pytest.raises(RuntimeError, match=SELECTIVE_SCAN_ENV):
        selective_scan(**inputs)
    monkeypatch.setattr(ss, "_load_kernel", lambda: (fake_kernel, ""))
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        selective_scan_backend("cpu")
    with pytest.raises(RuntimeError, match="float64"):
        selective_scan_backend("cuda", torch.float64)


def test_env_unknown_value(monkeypatch):
    monkeypatch.setenv(SELECTIVE_SCAN_ENV, "triton")
    with pytest.raises(ValueError, match=SELECTIVE_SCAN_ENV):
        selective_scan_backend("cpu")


def test_missing_mamba_ssm_is_not_an_error():
    kernel, reason = ss._load_kernel()
    assert (kernel is None) == bool(reason)


def test_kernel_path_forwards_arguments_in_mamba_ssm_order(monkeypatch):
    """The kernel is called as mamba_ssm's selective_scan_fn(u, delta, A, B, C, D, z=, delta_bias=, ...)."""
    calls = []

    def recording_kernel(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False):  # fmt: skip
        calls.append((A.dtype, D.dtype, delta_bias.dtype))
        return selective_scan_parallel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

    monkeypatch.setattr(ss, "_load_kernel", lambda: (recording_kernel, ""))
    monkeypatch.setattr(ss, "selective_scan_backend", lambda device, dtype: "cuda")
    inputs = {k: v.detach() for k, v in scan_inputs(2, 3, 4, 6, dtype=torch.float64).items()}
    out = selective_scan(**inputs, delta_softplus=True)
    assert calls == [(torch.float32, torch.float32, torch.float32)]
    assert_close(out, selective_scan_parallel(**inputs, delta_softplus=True).to(out.dtype))


# --- Mamba --------------------------------------------------------------------------------------------------

# mamba_ssm.Mamba(d_model=16) (mamba_ssm/modules/mamba_simple.py): d_inner 32, dt_rank 1, d_state 16, d_conv 4.
MAMBA_SSM_PARAMETERS_D16 = {
    "in_proj.weight": (64, 16),
    "conv1d.weight": (32, 1, 4),
    "conv1d.bias": (32,),
    "x_proj.weight": (33, 32),
    "dt_proj.weight": (32, 1),
    "dt_proj.bias": (32,),
    "A_log": (32, 16),
    "D": (32,),
    "out_proj.weight": (16, 32),
}


def test_parameters_match_mamba_ssm():
    model = Mamba(16)
    assert {name: tuple(p.shape) for name, p in model.state_dict().items()} == MAMBA_SSM_PARAMETERS_D16
    assert {name for name, _ in model.named_parameters()} == set(MAMBA_SSM_PARAMETERS_D16)
    biased = {name for name, _ in Mamba(16, bias=True, conv_bias=False).named_parameters()}
    assert biased == set(MAMBA_SSM_PARAMETERS_D16) - {"conv1d.bias"} | {"in_proj.bias", "out_proj.bias"}
    assert Mamba(40, dt_rank=3).dt_proj.weight.shape == (80, 3) and Mamba(40).dt_rank == 3


def test_init():
    torch.manual_seed(0)
    model = Mamba(32, d_state=8, dt_min=0.01, dt_max=0.05)
    torch.testing.assert_close(model.A_log, torch.log(torch.arange(1.0, 9.0)).expand(64, 8))
    torch.testing.assert_close(-torch.exp(model.A_log), -torch.arange(1.0, 9.0).expand(64, 8))
    assert (model.D == 1).all()
    dt = F.softplus(model.dt_proj.bias)
    assert (dt >= 0.01 * (1 - 1e-5)).all() and (dt <= 0.05 * (1 + 1e-5)).all() and dt.std() > 0
    assert model.dt_proj.weight.abs().max() <= model.dt_rank**-0.5
    default = F.softplus(Mamba(16).dt_proj.bias)
    assert (default >= 1e-3 * (1 - 1e-5)).all() and (default <= 0.1 * (1 + 1e-5)).all()


def test_forward_shape_and_causality():
    torch.manual_seed(0)
    model = Mamba(16)
    x = torch.randn(2, 10, 16)
    y = model(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, 6] += torch.randn(2, 16)
    y2 = model(x2)
    assert_close(y2[:, :6], y[:, :6], rtol=0, atol=1e-6)
    assert (y2[:, 6:] - y[:, 6:]).abs().amax(dim=(0, 2)).min() > 1e-4


def recurrent_mamba(model: Mamba, tokens: torch.Tensor) -> torch.Tensor:
    """Mamba evaluated one token at a time: a rolling convolution window and an explicit SSM state."""
    batch, length, _ = tokens.shape
    window = tokens.new_zeros(batch, model.d_inner, model.d_conv)
    h = tokens.new_zeros(batch, model.d_inner, model.d_state)
    A = -torch.exp(model.A_log)
    outs = []
    for t in range(length):
        x, z = model.in_proj(tokens[:, t]).chunk(2, dim=-1)  # (batch, d_inner)
        window = torch.cat((window[:, :, 1:], x[:, :, None]), dim=-1)
        x = F.silu((window * model.conv1d.weight[:, 0]).sum(-1) + model.conv1d.bias)
        dt, B, C = model.x_proj(x).split([model.dt_rank, model.d_state, model.d_state], dim=-1)
        delta = F.softplus(model.dt_proj(dt))  # (batch, d_inner)
        h = torch.exp(delta[..., None] * A) * h + (delta * x)[..., None] * B[:, None]
        y = (h * C[:, None]).sum(-1) + model.D * x
        outs.append(model.out_proj(y * F.silu(z)))
    return torch.stack(outs, dim=1)


def test_forward_equals_recurrent_evaluation():
    torch.manual_seed(0)
    model = Mamba(16, d_state=4).double()
    x = torch.randn(2, 13, 16, dtype=torch.float64)
    assert_close(model(x), recurrent_mamba(model, x), rtol=1e-10, atol=1e-10)


def test_forward_parallel_scan_equals_reference_scan(monkeypatch):
    torch.manual_seed(0)
    model = Mamba(16)
    x = torch.randn(2, 40, 16, requires_grad=True)
    out = model(x)
    grads = torch.autograd.grad(out.square().sum(), [x, *model.parameters()])
    monkeypatch.setattr(mamba_module, "selective_scan", selective_scan_reference)
    ref = model(x)
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, *model.parameters()])
    assert_close(out, ref)
    for grad, ref_grad in zip(grads, ref_grads):
        assert_close(grad, ref_grad)


@pytest.mark.parametrize(
    "kwargs",
    [{"d_model": 0}, {"d_model": 8, "d_state": 0}, {"d_model": 8, "d_conv": 0}, {"d_model": 8, "expand": 0},
     {"d_model": 8, "dt_rank": 0}, {"d_model": 8, "dt_rank": "full"}, {"d_model": 8, "dt_min": 0.2},
     {"d_model": 8, "dt_min": 0.0}, {"d_model": 8, "dt_init_floor": -1.0}],
)  # fmt: skip
def test_ill_arg_mamba(kwargs):
    with pytest.raises(ValueError):
        Mamba(**kwargs)


@pytest.mark.parametrize("shape", [(2, 5, 8), (5, 16), (1, 2, 5, 16)])
def test_ill_arg_mamba_forward(shape):
    with pytest.raises(ValueError):
        Mamba(16)(torch.randn(shape))


# --- CUDA: mamba_ssm's kernel vs the PyTorch scan -----------------------------------------------------------

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@requires_cuda
@pytest.mark.parametrize(
    "batch, dim, d_state, length", [(1, 1, 1, 1), (2, 3, 4, 7), (2, 16, 16, 100), (2, 64, 16, 512)]
)
def test_cuda_kernel_matches_parallel_scan(monkeypatch, batch, dim, d_state, length):
    interface = pytest.importorskip("mamba_ssm.ops.selective_scan_interface")
    monkeypatch.delenv(SELECTIVE_SCAN_ENV, raising=False)
    assert selective_scan_backend("cuda") == "cuda"
    inputs = scan_inputs(batch, dim, d_state, length, device="cuda")
    out, grads = outputs_and_grads(interface.selective_scan_fn, inputs)
    par_out, par_grads = outputs_and_grads(selective_scan_parallel, inputs)
    disp_out, _ = outputs_and_grads(selective_scan, inputs)
    assert_close(par_out, out)
    assert_close(disp_out, out)
    for name in SCAN_ARGS:
        assert_close(par_grads[name], grads[name])


@requires_cuda
def test_cuda_mamba_backends_and_mamba_ssm_agree(monkeypatch):
    mamba_ssm = pytest.importorskip("mamba_ssm")
    torch.manual_seed(0)
    model = Mamba(16).cuda()
    x = torch.randn(2, 64, 16, device="cuda", requires_grad=True)
    results = {}
    for backend in ("cuda", "torch"):
        monkeypatch.setenv(SELECTIVE_SCAN_ENV, backend)
        out = model(x)
        results[backend] = (out, torch.autograd.grad(out.square().sum(), [x, *model.parameters()]))
    assert_close(results["torch"][0], results["cuda"][0])
    for grad, ref_grad in zip(results["torch"][1], results["cuda"][1]):
        assert_close(grad, ref_grad)
    # The same state dict in mamba_ssm's own module computes the same function.
    theirs = mamba_ssm.Mamba(d_model=16, use_fast_path=False).cuda()
    theirs.load_state_dict(model.state_dict())
    their_out = theirs(x)
    their_out = their_out[0] if isinstance(their_out, tuple) else their_out
    assert_close(their_out, results["cuda"][0])
