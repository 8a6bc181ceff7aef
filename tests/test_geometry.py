from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from custom.imaging.geometry import BiplanarGeometry

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"


def test_defaults_and_their_derived_values():
    g = BiplanarGeometry()
    assert g.vol_shape == (128, 128, 128) and g.det_shape == (128, 128)
    assert g.fov == (192.0, 192.0, 192.0)
    assert g.det_spacing == pytest.approx(1.5 * 1200 / 1000)  # one pixel spans one voxel at the isocentre
    assert BiplanarGeometry(beam="parallel").det_spacing == 1.5


def test_views_place_source_and_detector_on_opposite_sides():
    frontal, lateral = BiplanarGeometry().views
    assert frontal.source == pytest.approx((0, -1000, 0))  # PA: source behind the head
    assert frontal.detector_centre == pytest.approx((0, 200, 0))  # detector in front of the face
    assert lateral.source == pytest.approx((1000, 0, 0))  # source on the patient's right
    assert lateral.detector_centre == pytest.approx((-200, 0, 0))  # detector against the left side
    for view in (frontal, lateral):
        axes = torch.tensor([view.direction, view.row_axis, view.col_axis])
        assert torch.allclose(axes @ axes.T, torch.eye(3, dtype=axes.dtype))
        assert view.row_axis == (0, 0, -1)  # image rows run superior -> inferior


def test_affine_matches_voxel_centres_and_centres_the_grid():
    g = BiplanarGeometry(vol_shape=(4, 6, 8), vol_spacing=2.0)
    centres = g.voxel_centres().numpy()
    index = np.stack(np.meshgrid(*[np.arange(n) for n in g.vol_shape], indexing="ij"), -1)
    world = index @ g.affine[:3, :3].T + g.affine[:3, 3]
    np.testing.assert_allclose(world, centres)
    np.testing.assert_allclose(centres.mean(axis=(0, 1, 2)), 0, atol=1e-12)


@pytest.mark.parametrize("beam", ["cone", "parallel"])
def test_detector_points_project_onto_their_own_pixels(beam):
    g = BiplanarGeometry(det_shape=(6, 9), beam=beam)
    for view in g.views:
        pixels = view.project(view.detector_points())
        rows, cols = torch.meshgrid(torch.arange(6.0), torch.arange(9.0), indexing="ij")
        assert torch.allclose(pixels, torch.stack((rows, cols), -1).double(), atol=1e-9)


def test_cone_projection_magnifies_by_sdd_over_distance_from_source():
    g = BiplanarGeometry()
    centre = (g.det_shape[1] - 1) / 2
    point = torch.tensor([[-10.0, 100.0, 0.0]])  # 10 mm to the patient's left, 100 mm anterior
    row, col = g.frontal.project(point)[0]
    assert row == pytest.approx(centre)
    assert col - centre == pytest.approx(10 * 1200 / (1000 + 100) / g.det_spacing)


@pytest.mark.parametrize("beam", ["cone", "parallel"])
def test_rays_pass_through_source_and_pixel_centres(beam):
    view = BiplanarGeometry(det_shape=(5, 7), beam=beam).lateral
    origins, directions = view.rays()
    assert torch.allclose(directions.norm(dim=-1), torch.ones(5, 7, dtype=torch.float64))
    along = view.detector_points() - origins
    assert torch.allclose(
        torch.linalg.cross(along, directions).norm(dim=-1), torch.zeros(5, 7, dtype=torch.float64), atol=1e-9
    )
    if beam == "cone":
        assert torch.allclose(origins, torch.tensor(view.source, dtype=torch.float64).expand(5, 7, 3))


def test_resampled_keeps_field_of_view_and_detector_area():
    g = BiplanarGeometry()
    coarse = g.resampled((16, 16, 16), (32, 32))
    assert coarse.fov == g.fov
    assert coarse.vol_spacing == 12.0 and coarse.det_spacing == pytest.approx(g.det_spacing * 4)
    # a coarse voxel's centre is the mean of the fine voxel centres it covers
    fine_x, coarse_x = g.voxel_coordinates()[0], coarse.voxel_coordinates()[0]
    assert torch.allclose(fine_x.view(16, 8).mean(1), coarse_x)
    assert g.resampled() == g


def test_numpy_and_torch_values_are_accepted():
    g = BiplanarGeometry(vol_shape=np.array([64, 64, 64]), vol_spacing=np.float32(3.0), det_shape=torch.Size([64, 64]))
    assert g == BiplanarGeometry().resampled((64, 64, 64), (64, 64))


def test_dict_round_trip_through_json():
    g = BiplanarGeometry(
        vol_shape=(96, 112, 128), vol_spacing=2.0, det_shape=(100, 120), sod=900, sdd=1300, beam="parallel"
    )
    text = json.dumps(g.to_dict())
    assert BiplanarGeometry.from_dict(json.loads(text)) == g
    assert hash(BiplanarGeometry.from_dict(json.loads(text))) == hash(g)


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_bundle_configs_instantiate_the_documented_default_geometry(config):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(CONFIGS / config)
    assert parser.get_parsed_content("geometry") == BiplanarGeometry()
    assert parser.get_parsed_content("network_def").projector.geometry == BiplanarGeometry()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(vol_shape=(0, 128, 128)),
        dict(vol_shape=(128, 128)),
        dict(vol_shape=(128.5, 128, 128)),
        dict(vol_shape="128"),
        dict(vol_shape=([1], 128, 128)),
        dict(det_shape=(128,)),
        dict(det_shape=(128, -1)),
        dict(vol_spacing=0),
        dict(vol_spacing=-1.5),
        dict(vol_spacing=math.nan),
        dict(det_spacing=0.0),
        dict(sod=0),
        dict(sod=1200, sdd=1200),
        dict(sod=1300, sdd=1200),
        dict(beam="fan"),
        dict(sod="1000"),
        dict(vol_spacing=10.0),  # a 1280 mm grid would reach the detector
    ],
)
def test_ill_arg(kwargs):
    with pytest.raises(ValueError):
        BiplanarGeometry(**kwargs)


@pytest.mark.parametrize("vol_shape, det_shape", [((64, 64, 32), None), (None, (64, 32)), ((64, 64), None)])
def test_ill_arg_resampled(vol_shape, det_shape):
    with pytest.raises(ValueError):
        BiplanarGeometry().resampled(vol_shape, det_shape)


def test_ill_arg_from_dict_unknown_key():
    with pytest.raises(ValueError, match="unknown geometry keys"):
        BiplanarGeometry.from_dict({"vol_shape": [64, 64, 64], "pixel_size": 1.0})
