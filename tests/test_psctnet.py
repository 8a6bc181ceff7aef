from __future__ import annotations

import io

import pytest
import torch
from custom.data.simulate import SimulateBiplanarXRay
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.physics import hu_to_network
from custom.imaging.projector import Projector
from custom.networks.encoder import Encoder
from custom.networks.fully_connected import FullyConnectedLink
from custom.networks.psctnet import ABLATIONS, PRESETS, PSCTNet, parameter_counts, psctnet
from custom.phantom import make_phantom


def _geometry(size: int) -> BiplanarGeometry:
    return BiplanarGeometry(vol_shape=(size,) * 3, vol_spacing=192 / size, det_shape=(size, size))


SMALL = _geometry(32)


def _move_head(model: PSCTNet) -> PSCTNet:
    """Move a zero-initialised head off zero, as a first update would, so the layers before it count."""
    if model.floor is not None:
        torch.nn.init.normal_(model.head.coefficients.weight, std=0.1)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("size", [16, 32, 48])
@pytest.mark.parametrize("variant", sorted(ABLATIONS))
def test_tiny_generator_maps_two_views_to_the_ct_grid(size, variant):
    model = psctnet("tiny", _geometry(size), variant).eval()
    with torch.no_grad():
        ct = model(torch.rand(2, 2, size, size))
    assert ct.shape == (2, 1, size, size, size) and 0 <= ct.min() and ct.max() <= 1


def test_default_preset_fits_the_model_zoo_and_paper_preset_is_larger():
    default, paper = psctnet("default"), psctnet("paper")
    size_mb = sum(t.numel() * t.element_size() for t in default.state_dict().values()) / 1e6
    assert size_mb < 25
    assert parameter_counts(paper)["total"] > parameter_counts(default)["total"]
    assert default.bimamba is not None and default.link.grid_shape == (8, 8, 8)  # 512 bottleneck tokens


@pytest.mark.slow
def test_paper_preset_runs_at_64():
    model = psctnet("paper", _geometry(64)).eval()  # five levels: a 2^3 bottleneck
    with torch.no_grad():
        assert model(torch.rand(1, 2, 64, 64)).shape == (1, 1, 64, 64, 64)


@pytest.mark.slow
def test_default_preset_runs_at_128():
    model = psctnet("default").eval()
    with torch.no_grad():
        assert model(torch.rand(1, 2, 128, 128)).shape == (1, 1, 128, 128, 128)


@pytest.mark.slow
@pytest.mark.parametrize(
    "switch, module",
    [
        (dict(bp_input=False, bp_conditioning=False), "encoder_3d"),
        (dict(bp_conditioning=False), "bp_conditioning"),
        (dict(bimamba=False), "bimamba"),
        (dict(multiview=False), "multiview"),
    ],
)
def test_each_module_switches_off_alone(switch, module):
    full = parameter_counts(psctnet("tiny", SMALL))
    reduced_model = psctnet("tiny", SMALL, **switch)
    reduced = parameter_counts(reduced_model)
    assert module in full and module not in reduced and reduced["total"] < full["total"]
    with torch.no_grad():
        assert reduced_model(torch.rand(1, 2, 32, 32)).shape == (1, 1, 32, 32, 32)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs, holds",
    [
        (dict(agp=False), lambda m, full: isinstance(m.link, FullyConnectedLink)),
        (dict(agp_prior="none"), lambda m, full: m.link.attention_prior is None),
        (dict(agp_prior="mask"), lambda m, full: torch.isinf(m.link.attention_prior).any()),
        (dict(shared_encoder=True), lambda m, full: len(m.encoder_2d.encoders) == 1),
        (dict(bimamba_shared=False), lambda m, full: parameter_counts(m)["bimamba"] > full["bimamba"]),
    ],
)
def test_module_options(kwargs, holds):
    model = psctnet("tiny", SMALL, **kwargs)
    assert holds(model, parameter_counts(psctnet("tiny", SMALL)))
    with torch.no_grad():
        assert model(torch.rand(1, 2, 32, 32)).shape == (1, 1, 32, 32, 32)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(channels=(8,)),
        dict(channels=(4, 8, 0)),
        dict(geometry=BiplanarGeometry(vol_shape=(30,) * 3, det_shape=(32, 32))),
        dict(geometry=BiplanarGeometry(vol_shape=(32,) * 3, det_shape=(30, 30))),
        dict(bp_input=False, bp_conditioning=True),
        dict(agp_prior="gaussian"),
        dict(agp_heads=3),
    ],
)
def test_ill_arg(kwargs):
    arguments = {**PRESETS["tiny"], "geometry": SMALL, **kwargs}
    with pytest.raises(ValueError):
        PSCTNet(**arguments)


def test_ill_arg_factory():
    with pytest.raises(ValueError):
        psctnet("huge")
    with pytest.raises(ValueError):
        psctnet("tiny", variant="everything")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["psctnet", "x2ct"])
def test_gradients_reach_every_parameter(variant):
    model = psctnet("tiny", SMALL, variant)
    _move_head(model)
    loss = model(torch.rand(2, 2, 32, 32)).square().mean()
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_eval_mode_is_deterministic_even_with_dropout():
    model = _move_head(psctnet("tiny", SMALL, dropout_rate=0.5)).eval()
    views = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(views), model(views))
    model.train()
    assert not torch.equal(model(views), model(views))


def test_the_network_uses_the_projector_it_is_given():
    projector = Projector(SMALL)  # the bundle configs' one projector, shared with the loss and the trainer
    model = psctnet("tiny", projector=projector)
    assert model.projector is projector and model.geometry == SMALL
    assert psctnet("tiny", SMALL, projector=projector).projector is projector
    with pytest.raises(ValueError, match="not the projector's"):
        psctnet("tiny", _geometry(16), projector=projector)


@pytest.mark.slow
def test_tiny_generator_overfits_one_phantom_case():
    torch.manual_seed(0)
    geometry = _geometry(16)  # 12 mm voxels: enough to see the skull, fast on two cores
    hu = make_phantom(0, geometry, age_months=12.0).hu
    views = SimulateBiplanarXRay(geometry)(hu)[None]  # (1, 2, 16, 16)
    target = hu_to_network(hu)[None, None]
    model = psctnet("tiny", geometry)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        optimiser.zero_grad()
        loss = (model(views) - target).abs().mean()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    best_constant = (target - target.median()).abs().mean().item()  # what ignoring the views achieves
    assert losses[-1] < 0.2 * losses[0] and losses[-1] < 0.5 * best_constant


@pytest.mark.slow
def test_torchscript_trace_round_trips():
    model = psctnet("tiny", _geometry(16)).eval()
    views = torch.rand(1, 2, 16, 16)
    with torch.no_grad():
        traced = torch.jit.trace(model, views, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
        other = torch.rand(1, 2, 16, 16)
        assert torch.allclose(loaded(other), model(other), atol=1e-6)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_encoder_levels_sit_on_the_geometry_grids(spatial_dims):
    # coarse sample i of level k is centred on fine sample 2^k i + (2^k - 1) / 2, as BiplanarGeometry.resampled
    # places it, so back-projected 2D features and 3D features of one level describe the same place
    encoder = Encoder(
        spatial_dims, 1, (2, 2, 2), None, None
    ).eval()  # linear: the gradient support is the field of view
    image = torch.rand(1, 1, *(48,) * spatial_dims, requires_grad=True)
    level = encoder(image)[2]  # (1, 2, 12, ...)
    index = (4,) * spatial_dims  # far enough from the border that the support is not clipped
    level[(0, 0, *index)].backward()
    support = image.grad[0, 0].abs().nonzero().float()
    centre = (support.min(0).values + support.max(0).values) / 2
    # the support reaches a few samples either side; its centre is what must match
    assert torch.allclose(centre, torch.full((spatial_dims,), 4 * 4 + 1.5)), centre


def test_bp_conditioning_reaches_the_deeper_encoder_levels():
    encoder = Encoder(3, 1, (2, 2, 2), "INSTANCE", "RELU").eval()
    volume = torch.rand(1, 1, 16, 16, 16)
    plain = encoder(volume)
    conditioned = encoder(volume, [lambda h: h + torch.randn_like(h), lambda h: h])
    assert torch.equal(plain[0], conditioned[0]) and not torch.allclose(plain[2], conditioned[2])
