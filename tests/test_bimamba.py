from __future__ import annotations

import pytest
import torch
from custom.networks.bimamba import BiMamba3d, BiMambaBlock
from custom.networks.mamba import Mamba

SMALL = {"d_state": 4}  # a small state keeps the tests fast; the behaviour does not depend on it


def n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "batch, channels, grid, depth",
    [(1, 8, (2, 2, 2), 1), (2, 16, (4, 4, 4), 2), (1, 4, (3, 5, 2), 3), (2, 6, (1, 1, 1), 1)],
)
@pytest.mark.parametrize("shared", [True, False])
def test_shapes(batch, channels, grid, depth, shared):
    model = BiMamba3d(channels, depth=depth, shared=shared, **SMALL)
    x = torch.randn(batch, channels, *grid)
    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_token_order_is_z_fastest():
    """The grid is read in row-major order (z fastest), as the docstring says."""
    torch.manual_seed(0)
    model = BiMamba3d(8, depth=1, **SMALL).eval()
    x = torch.randn(2, 8, 2, 3, 4)
    tokens = torch.stack([x[:, :, i, j, k] for i in range(2) for j in range(3) for k in range(4)], dim=1)
    expected = model.norm(model.blocks[0](tokens))  # (2, 24, 8)
    torch.testing.assert_close(model(x), expected.transpose(1, 2).reshape(x.shape))


def test_shared_vs_separate_parameter_counts():
    depth, channels = 3, 16
    mamba = n_parameters(Mamba(channels, **SMALL))
    shared = BiMamba3d(channels, depth=depth, shared=True, **SMALL)
    separate = BiMamba3d(channels, depth=depth, shared=False, **SMALL)
    assert n_parameters(separate) == n_parameters(shared) + depth * mamba
    mlp_and_norms = 2 * (2 * channels) + (channels * 2 * channels + 2 * channels) + (2 * channels * channels + channels)
    assert n_parameters(BiMambaBlock(channels, shared=True, **SMALL)) == mamba + mlp_and_norms
    assert BiMambaBlock(channels, shared=True).mamba_backward is None


def test_shared_block_is_flip_equivariant():
    torch.manual_seed(0)
    block = BiMambaBlock(8, shared=True, **SMALL)
    x = torch.randn(2, 11, 8)
    torch.testing.assert_close(block(x.flip(1)), block(x).flip(1), rtol=1e-5, atol=1e-5)
    # With separate weights the two directions differ, so the flip is no symmetry.
    separate = BiMambaBlock(8, shared=False, **SMALL)
    assert (separate(x.flip(1)) - separate(x).flip(1)).abs().max() > 1e-3


def test_shared_bimamba3d_is_equivariant_to_flipping_all_axes():
    torch.manual_seed(0)
    model = BiMamba3d(8, depth=2, shared=True, **SMALL)
    x = torch.randn(1, 8, 3, 2, 4)
    torch.testing.assert_close(model(x.flip(2, 3, 4)), model(x).flip(2, 3, 4), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_each_token_sees_both_directions(shared):
    """Changing token t changes outputs before and after t; a single Mamba only changes those from t on."""
    torch.manual_seed(0)
    block = BiMambaBlock(8, shared=shared, **SMALL)
    mamba = Mamba(8, **SMALL)
    x = torch.randn(1, 12, 8)
    x2 = x.clone()
    x2[:, 6] += torch.randn(8)  # not a constant shift, which LayerNorm would remove
    change = (block(x2) - block(x)).abs().amax(dim=(0, 2))
    assert (change > 1e-6).all()
    causal_change = (mamba(x2) - mamba(x)).abs().amax(dim=(0, 2))
    assert (causal_change[:6] < 1e-6).all() and (causal_change[6:] > 1e-6).all()


@pytest.mark.parametrize("shared", [True, False])
def test_gradients_reach_every_parameter(shared):
    torch.manual_seed(0)
    model = BiMamba3d(8, depth=2, shared=shared, **SMALL)
    x = torch.randn(2, 8, 2, 2, 3, requires_grad=True)
    (model(x) * torch.randn(2, 8, 2, 2, 3)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name
    assert x.grad.abs().max() > 0


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = BiMamba3d(8, depth=1, dropout_rate=0.5, **SMALL)
    x = torch.randn(1, 8, 2, 2, 2)
    model.eval()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    model.train()
    assert (model(x) - model(x)).abs().max() > 1e-4


@pytest.mark.parametrize(
    "kwargs",
    [{"channels": 8, "depth": 0}, {"channels": 8, "depth": -1}, {"channels": 8, "depth": 1.5}, {"channels": 0},
     {"channels": -4}, {"channels": 8.0}, {"channels": 8, "dropout_rate": 1.5}, {"channels": 8, "dropout_rate": -0.1},
     {"channels": 8, "mlp_ratio": 0.0}, {"channels": 8, "d_state": 0}],
)  # fmt: skip
def test_ill_arg(kwargs):
    with pytest.raises(ValueError):
        BiMamba3d(**kwargs)


@pytest.mark.parametrize("shape", [(1, 4, 2, 2, 2), (1, 8, 2, 2), (8, 2, 2, 2)])
def test_ill_arg_forward(shape):
    with pytest.raises(ValueError):
        BiMamba3d(8, depth=1, **SMALL)(torch.randn(shape))
    with pytest.raises(ValueError):
        BiMambaBlock(8, **SMALL)(torch.randn(1, 5, 4))
