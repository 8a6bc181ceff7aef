from __future__ import annotations

import pytest
import torch
from custom.data.points import sample_voxels
from custom.data.simulate import SimulateBiplanarXRay
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.physics import hu_to_network
from custom.imaging.projector import Projector
from custom.networks.floor import fit_floor
from custom.networks.spider import DECODERS, SPIDER
from custom.phantom import LABELS, make_phantom
from custom.training.losses import SpiderLoss

GEOMETRY = BiplanarGeometry().resampled((16, 16, 16), (32, 32))  # BasicUNet halves the views 4 times
ONE_TO_ONE = BiplanarGeometry().resampled((16, 16, 16), (16, 16))  # one pixel spans one voxel
SMALL = dict(
    unet_features=(4, 4, 8, 8, 16, 4),
    feature_channels=4,
    hash_levels=4,
    hash_features=2,
    hash_log2_table_size=10,
    hash_base_resolution=4,
    hash_finest_resolution=32,
    hidden=(16, 16),
)


def _spider(geometry: BiplanarGeometry = GEOMETRY, **options) -> SPIDER:
    torch.manual_seed(0)
    return SPIDER(geometry, **{**SMALL, **options})


@pytest.mark.parametrize("decoder", DECODERS)
def test_every_decoder_gives_intensity_in_0_1_and_class_logits_on_the_grid(decoder):
    volume = _spider(decoder=decoder)(torch.rand(2, 2, 32, 32))
    assert volume.shape == (2, 5, 16, 16, 16)
    assert volume[:, 0].min() >= 0 and volume[:, 0].max() <= 1


@pytest.mark.parametrize("decoder", DECODERS)
def test_an_untrained_spider_returns_its_fitted_atlas_at_every_voxel(decoder):
    spider = _spider(decoder=decoder)
    cases = [{"image": torch.rand(1, 2, 32, 32), "label": torch.rand(1, 1, 16, 16, 16)} for _ in range(3)]
    fit_floor(spider, cases)
    atlas = torch.stack([c["label"] for c in cases]).mean(0)
    volume = spider.train()(torch.rand(1, 2, 32, 32))  # trilinear sampling at voxel centres: the voxels
    assert torch.allclose(volume[:, :1], atlas, atol=1e-3)
    paper = _spider(decoder=decoder, residual=False)
    assert paper.floor is None and 0 < paper(torch.rand(1, 2, 32, 32))[:, 0].min()


def test_query_points_project_where_the_projector_puts_a_bright_voxel():
    spider, projector = _spider(ONE_TO_ONE), Projector(ONE_TO_ONE)
    centres = ONE_TO_ONE.voxel_centres()
    for voxel in [(8, 8, 8), (3, 11, 6), (12, 2, 13)]:
        volume = torch.zeros(1, 1, 16, 16, 16)
        volume[(0, 0, *voxel)] = 1.0
        drr = projector(volume)[0, 0]  # (2, H, W)
        pixels = spider.pixels(centres[voxel].float()[None])[:, 0]  # (2, 2) row, column per view
        for view in range(2):
            brightest = divmod(int(drr[view].argmax()), 16)
            assert tuple(pixels[view].round().long().tolist()) == brightest, (voxel, view)


def test_a_finer_grid_is_the_same_function_sampled_more_densely():
    spider = _spider().eval()
    views = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        coarse = spider(views)
        triple = spider.volume(views, (48, 48, 48))  # its centres include every coarse centre
        double = spider.volume(views, (32, 32, 32))  # its 2x2x2 blocks average around each coarse centre
    assert torch.allclose(triple[:, :, 1::3, 1::3, 1::3], coarse, atol=1e-5)
    assert double.shape == (1, 5, 32, 32, 32)  # its consistency is checked on a fitted network below


def test_gradients_reach_the_unet_the_hash_tables_and_the_decoder():
    spider = _spider()
    spider(torch.rand(1, 2, 32, 32)).sum().backward()
    for name, module in (("encoder", spider.encoder), ("hash", spider.hash), ("heads", spider.heads)):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), name


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="decoder"):
        _spider(decoder="three_stage")
    with pytest.raises(ValueError, match="num_classes"):
        _spider(num_classes=1)


@pytest.mark.slow
def test_one_phantom_is_overfitted_from_sampled_points_and_a_finer_grid_agrees():
    torch.manual_seed(0)
    geometry = BiplanarGeometry().resampled((32, 32, 32), (32, 32))
    phantom = make_phantom(0, geometry)
    views = SimulateBiplanarXRay(geometry)(phantom.hu)[None]
    target, labels = hu_to_network(phantom.hu), phantom.labels.long()
    bone = labels == LABELS["bone"]
    spider = _spider(
        geometry, feature_channels=8, hash_levels=6, hash_features=4, hash_log2_table_size=14, hidden=(64, 64)
    )
    loss, optimiser = SpiderLoss(), torch.optim.Adam(spider.parameters(), lr=3e-3)
    centres, generator = geometry.voxel_centres(torch.float32), torch.Generator().manual_seed(0)

    def scores() -> tuple[float, float]:
        with torch.no_grad():
            volume = spider(views)[0]
        predicted_bone = volume[1:].argmax(0) == LABELS["bone"]
        dice = 2 * (predicted_bone & bone).sum() / (predicted_bone.sum() + bone.sum())
        return (volume[0] - target).abs().mean().item(), dice.item()

    l1_before, dice_before = scores()
    for _ in range(120):
        x, y, z = sample_voxels(bone, 2048, boundary_fraction=0.5, generator=generator).unbind(-1)
        terms = loss(
            spider.query(spider.view_features(views), centres[x, y, z][None]),
            target[x, y, z][None],
            labels[x, y, z][None],
        )
        optimiser.zero_grad()
        terms["loss"].backward()
        optimiser.step()
    l1_after, dice_after = scores()
    # unfitted, the atlas is all air (-1024 HU), so the start is the air-vs-phantom L1, not mid-grey's
    assert l1_after < 0.3 * l1_before and dice_after > dice_before + 0.7, (l1_before, l1_after, dice_before, dice_after)
    with torch.no_grad():  # the fitted function at twice the resolution, pooled back, matches the grid
        coarse, fine = spider(views)[:, :1], spider.volume(views, (64, 64, 64))[:, :1]
    per_voxel_change = (coarse - coarse.roll(1, 2)).abs().mean()
    assert (torch.nn.functional.avg_pool3d(fine, 2) - coarse).abs().mean() < 0.5 * per_voxel_change


def test_a_traced_spider_equals_the_eager_one():
    """The model zoo's TorchScript export of this bundle is traced (see the model card); it must be exact."""
    network = _spider(num_classes=13).eval()
    with torch.no_grad():
        traced = torch.jit.trace(network, torch.rand(1, 2, 32, 32))
        views = torch.rand(1, 2, 32, 32)  # other views than those traced on
        assert torch.equal(traced(views), network(views))
