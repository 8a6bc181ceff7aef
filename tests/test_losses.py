from __future__ import annotations

import pytest
import torch
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.projector import Projector
from custom.training.losses import (
    GeneratorLoss,
    ProjectionConsistencyLoss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
)

PARALLEL = BiplanarGeometry(vol_shape=(16,) * 3, vol_spacing=4.0, det_shape=(16, 16), beam="parallel")
CONE = BiplanarGeometry(vol_shape=(16,) * 3, vol_spacing=4.0, det_shape=(16, 16))


def test_lsgan_losses_by_hand():
    ones, zeros, halves = torch.ones(2, 1, 3, 3, 3), torch.zeros(2, 1, 3, 3, 3), torch.full((2, 1, 3, 3, 3), 0.5)
    assert lsgan_discriminator_loss([ones, ones], [zeros, zeros]) == 0  # a perfect judge
    assert lsgan_discriminator_loss([halves], [halves]) == pytest.approx(0.25)  # 0.5 * (0.25 + 0.25)
    assert lsgan_discriminator_loss([halves, halves], [halves, halves]) == pytest.approx(0.5)  # scales add up
    assert lsgan_generator_loss([ones]) == 0 and lsgan_generator_loss([zeros, ones]) == pytest.approx(1.0)


def test_parallel_projection_loss_is_the_mean_difference_of_axis_means():
    target = torch.rand(1, 1, 16, 16, 16)
    loss = ProjectionConsistencyLoss(Projector(PARALLEL), "parallel")
    assert loss(target, target) == 0
    assert loss(target + 0.3, target).item() == pytest.approx(0.3, rel=1e-5)


def test_projections_of_ones_are_one_on_a_non_cubic_grid():
    ones = torch.ones(1, 1, 16, 12, 8)
    for beam in ("parallel", "cone"):
        geometry = BiplanarGeometry(vol_shape=(16, 12, 8), vol_spacing=4.0, det_shape=(16, 16), beam=beam)
        frontal, lateral = ProjectionConsistencyLoss(Projector(geometry)).project(ones)
        for view in (frontal, lateral):  # the mean along each ray that crosses the whole grid
            assert view.max().item() == pytest.approx(1.0, rel=2e-3)


def test_geometry_projection_is_the_mean_along_each_views_rays():
    # a parallel beam with a matching detector projects exactly along y (frontal) and x (lateral): the
    # geometry mode then equals the axis means, up to the images' flips that L1 does not see
    pred, target = torch.rand(2, 1, 1, 16, 16, 16)
    geometry = ProjectionConsistencyLoss(Projector(PARALLEL), "geometry")(pred, target)
    by_axis = [(pred.mean(axis) - target.mean(axis)).abs().mean() for axis in (3, 2)]  # frontal: y; lateral: x
    assert geometry.item() == pytest.approx(torch.stack(by_axis).mean().item(), rel=1e-5)
    cone = ProjectionConsistencyLoss(Projector(CONE))  # the cone beam sees the same order of difference
    assert 0.5 * geometry < cone(pred, target) < 2 * geometry


def test_generator_loss_weights_its_terms_and_passes_gradients():
    pred = torch.rand(1, 1, 16, 16, 16, requires_grad=True)
    target = torch.rand(1, 1, 16, 16, 16)
    logits = [torch.zeros(1, 1, 2, 2, 2)]
    unit = GeneratorLoss(Projector(CONE), 1.0, 1.0, 1.0)(pred, target, logits)
    weighted = GeneratorLoss(Projector(CONE))(pred, target, logits)  # 0.1, 10, 10
    for name, weight in (("adv", 0.1), ("rec", 10.0), ("proj", 10.0)):
        assert weighted[name].item() == pytest.approx(weight * unit[name].item(), rel=1e-5)
    assert weighted["loss"].item() == pytest.approx(sum(weighted[k].item() for k in ("adv", "rec", "proj")))
    assert unit["adv"].item() == pytest.approx(1.0)  # D(fake) = 0 -> (0 - 1)^2
    weighted["loss"].backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert GeneratorLoss(Projector(CONE))(pred, target)["adv"] == 0  # no discriminator, no adversarial term


@pytest.mark.parametrize(
    "build", [lambda: ProjectionConsistencyLoss(Projector(CONE), "fan"), lambda: GeneratorLoss(Projector(CONE), -1.0)]
)
def test_ill_arg(build):
    with pytest.raises(ValueError):
        build()
