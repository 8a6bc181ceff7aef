from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from custom.cli.phantoms import generate, validate
from custom.imaging.geometry import BiplanarGeometry
from custom.phantom import BONE_LABELS, LABELS, OPENINGS, SUTURES, VAULT_TYPES, make_phantom, sample_parameters
from custom.phantom.atlas import (
    FLOOR_SCALE,
    PACKAGED,
    build_atlas,
    direction_grid,
    load_atlas,
    map_coordinates,
    sample_map,
    surface_to_maps,
    unit_vectors,
)
from custom.phantom.calvarium import convex_perimeter
from custom.phantom.norms import anterior_closure_age, anterior_fontanelle_area, head_circumference
from custom.phantom.realism import cephalic_index, head_circumference_cm, measure
from PIL import Image

COARSE = BiplanarGeometry(vol_shape=(64,) * 3, vol_spacing=3.0)
FINE = BiplanarGeometry()  # 128^3 x 1.5 mm: sutures of 1-2 mm need it
ANATOMY = Path(__file__).resolve().parents[2] / "shared" / "data" / "anatomy"


def _open(phantom) -> set[str]:
    return {OPENINGS[i - 1] for i in torch.unique(phantom.openings).tolist() if i > 0}


def _head_points(phantom, geometry, *values) -> np.ndarray:
    """(N, 3) head-frame positions (mm) of the voxels whose bone label is one of ``values``."""
    index = torch.nonzero(torch.isin(phantom.bones, torch.tensor(values))).double().numpy()
    world = np.c_[index, np.ones(len(index))] @ geometry.affine.T
    return (world @ np.linalg.inv(phantom.head_to_world).T)[:, :3]


def _world_centroid(phantom, geometry, *values) -> np.ndarray:
    """Mean head-frame position (mm) of the voxels whose bone label is one of ``values``."""
    return _head_points(phantom, geometry, *values).mean(0)


# ---------------------------------------------------------------- draws


@pytest.mark.slow
def test_same_seed_same_phantom_and_other_seeds_differ():
    first, again, other = (make_phantom(s, COARSE) for s in (11, 11, 12))
    assert torch.equal(first.hu, again.hu) and torch.equal(first.bones, again.bones)
    assert first.parameters == again.parameters
    assert not torch.equal(first.hu, other.hu)


def test_given_arguments_do_not_shift_the_other_draws():
    drawn, chosen = sample_parameters(7), sample_parameters(7, age_months=5.0, variant="metopic", sex="female")
    assert (chosen.age_months, chosen.variant, chosen.sex) == (5.0, "metopic", "female")
    assert chosen.rotation_deg == drawn.rotation_deg and chosen.shape_modes == drawn.shape_modes


@pytest.mark.parametrize("kwargs", [dict(age_months=-1), dict(age_months=25), dict(variant="lambdoid"), dict(sex="x")])
def test_ill_arg(kwargs):
    with pytest.raises(ValueError):
        sample_parameters(0, **kwargs)


def test_published_growth_figures():
    assert head_circumference(0, "male") == pytest.approx(34.5) and head_circumference(12, "female") == pytest.approx(
        44.9
    )
    assert anterior_fontanelle_area(0, 16) == pytest.approx(770) and anterior_fontanelle_area(2, 16) == pytest.approx(
        1020
    )
    assert anterior_fontanelle_area(16, 16) == 0 and anterior_fontanelle_area(9, 16) == pytest.approx(1020 * 7 / 14)
    # closure ages follow the cumulative shares of Pindrik et al. (16 % by 10 months, 53 % by 16, 88 % by 20)
    ages = np.array([anterior_closure_age(u) for u in np.linspace(0, 1, 2001)])
    assert np.mean(ages <= 10) == pytest.approx(0.16, abs=0.01) and np.mean(ages <= 20) == pytest.approx(0.88, abs=0.01)


def test_normal_cases_follow_the_normative_cephalic_index_and_synostoses_keep_their_shape():
    atlas = load_atlas()
    indices = [sample_parameters(s, age_months=12.0, variant="normal", sex="male").cephalic_index for s in range(200)]
    assert np.mean(indices) == pytest.approx(atlas.norm("cephalic_index", 12.0, "male"), abs=0.5)
    assert sample_parameters(0, variant="sagittal").cephalic_index is None
    assert "metopic" in sample_parameters(0, age_months=12.0, variant="normal").fused  # fused at 3-9 months
    assert sample_parameters(0, age_months=1.0, variant="normal").fused == ()


# ---------------------------------------------------------------- the direction maps


def test_direction_maps_sample_analytic_functions_and_wrap_in_phi():
    theta, phi = direction_grid(64, 128)
    unit = unit_vectors(theta[:, None], phi[None, :]).float()
    field = (unit[..., 2] + 0.5 * unit[..., 0])[None]  # z + x / 2 on the sphere
    directions = torch.randn(500, 3, generator=torch.Generator().manual_seed(0))  # a fixed draw, whatever ran before
    directions[:10, 1] = 1e-4  # phi near +-pi and 0: the seam
    directions = torch.nn.functional.normalize(directions, dim=1)
    sampled = sample_map(field, map_coordinates(directions))[0]
    assert torch.allclose(sampled, directions[:, 2] + 0.5 * directions[:, 0], atol=0.01)


def test_surface_to_maps_recovers_an_ellipsoidal_cap_and_closes_it_with_the_fitted_ellipsoid():
    semi = np.array([50.0, 60.0, 45.0])
    theta = np.arccos(np.random.default_rng(0).uniform(-0.2, 1, 400_000))  # a cap: z > -0.2
    phi = np.random.default_rng(1).uniform(-np.pi, np.pi, 400_000)
    unit = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], 1)
    radius_true = 1 / np.sqrt(((unit / semi) ** 2).sum(1))
    points = unit * radius_true[:, None]
    bones = np.where(points[:, 0] > 0, 1, 2)  # right and left halves
    radius, labels = surface_to_maps(points, bones, np.zeros(3), (32, 64), (64, 128))
    rows, cols = direction_grid(32, 64)
    grid = unit_vectors(rows[:, None], cols[None, :]).numpy()
    analytic = 1 / np.sqrt(((grid / semi) ** 2).sum(-1))
    cap = grid[..., 2] > -0.1
    assert np.abs(radius[cap] - analytic[cap]).max() < 1.0  # mm, cells of 5.6 degrees
    bottom = grid[..., 2] < -0.9  # far below the rim: the closure alone
    assert np.allclose(radius[bottom], FLOOR_SCALE * analytic[bottom], rtol=0.03)
    rows, cols = direction_grid(64, 128)
    fine = unit_vectors(rows[:, None], cols[None, :]).numpy()
    assert (labels[(fine[..., 2] > 0) & (fine[..., 0] > 0.1)] == 1).all()
    assert (labels[(fine[..., 2] > 0) & (fine[..., 0] < -0.1)] == 2).all()
    assert (labels[fine[..., 2] < -0.4] == 0).all()


def test_packaged_atlas_is_compact_and_complete():
    atlas = load_atlas()
    assert PACKAGED.stat().st_size < 1_000_000
    assert atlas.vault.radius.shape[:2] == (len(VAULT_TYPES), len(atlas.vault.ages_months))
    assert set(np.unique(atlas.vault.bones)) == set(range(8))
    assert atlas.norm("icv_ml", 0.0, "male") == pytest.approx(377.81, abs=0.01)  # the table's first row


@pytest.mark.slow
@pytest.mark.skipif(not ANATOMY.is_dir(), reason="the source anatomy data (../shared/data/anatomy) is absent")
def test_packaged_atlas_is_what_fit_builds_from_the_source_data():
    built, packaged = build_atlas(ANATOMY, full=False), load_atlas()
    assert np.abs(built.vault.radius - packaged.vault.radius).max() <= 0.006  # 0.01 mm quantisation
    assert np.array_equal(built.vault.bones, packaged.vault.bones)
    assert np.abs(built.skull.fraction - packaged.skull.fraction).max() <= 1 / 255


# ---------------------------------------------------------------- the rendered anatomy


@pytest.fixture(scope="module")
def one_month():
    return make_phantom(4, FINE, age_months=1.0, variant="normal", sex="male", pose=False)


def test_every_bone_and_opening_is_labelled_where_the_tissue_is_bone(one_month):
    p = one_month
    assert set(torch.unique(p.bones).tolist()) == set(BONE_LABELS.values())
    assert torch.equal(p.bones > 0, p.labels == LABELS["bone"])
    assert (p.labels[p.openings > 0] != LABELS["bone"]).float().mean() > 0.5  # openings are mostly gaps
    # at one month every suture is open and both fontanelles too (posterior closes at 2-3 months)
    assert _open(p) == set(OPENINGS)


def test_bones_sit_on_their_anatomical_sides(one_month):
    centre = {name: _world_centroid(one_month, FINE, value) for name, value in BONE_LABELS.items() if 1 <= value <= 7}
    assert centre["frontal_right"][0] > 10 > -10 > centre["frontal_left"][0]  # x to the patient's right
    assert centre["parietal_right"][0] > 10 > -10 > centre["parietal_left"][0]
    assert centre["frontal_right"][1] > centre["parietal_right"][1] > centre["occipital"][1]  # y anterior
    assert centre["temporal_left"][2] < centre["parietal_left"][2]  # squama below the parietal


def test_head_size_and_shape_match_the_draw(one_month):
    drawn = one_month.parameters
    assert head_circumference_cm(one_month, FINE.vol_spacing) == pytest.approx(drawn.head_circumference_cm, abs=1.0)
    assert cephalic_index(one_month, FINE.vol_spacing) == pytest.approx(drawn.cephalic_index, abs=3.0)


@pytest.mark.slow
@pytest.mark.parametrize("variant", [v for v in VAULT_TYPES if v != "normal"])
def test_synostosis_closes_its_suture_and_leaves_the_others_open(variant):
    phantom = make_phantom(9, FINE, age_months=1.0, variant=variant, pose=False)
    fused = set(phantom.parameters.fused)
    assert fused and _open(phantom) & set(SUTURES) == set(SUTURES) - fused


@pytest.mark.slow
def test_sagittal_synostosis_is_scaphocephalic_and_coronal_synostosis_flattens_its_side():
    sagittal = make_phantom(3, FINE, age_months=12.0, variant="sagittal", pose=False)
    assert cephalic_index(sagittal, FINE.vol_spacing) < 76
    coronal = make_phantom(3, FINE, age_months=12.0, variant="left_coronal", pose=False)
    front = {}  # the forehead's front 20 mm either side of the midline
    for side, sign in (("left", -1), ("right", 1)):
        points = _head_points(coronal, FINE, BONE_LABELS[f"frontal_{side}"])
        front[side] = points[np.abs(points[:, 0] - sign * 20) < 5][:, 1].max()
    assert front["left"] < front["right"] - 2  # the fused side's forehead lies back (anterior plagiocephaly)


@pytest.mark.slow
def test_vault_thickens_with_age_as_the_normative_table():
    atlas = load_atlas()
    for age in (0.0, 24.0):
        phantom = make_phantom(5, FINE, age_months=age, variant="normal", sex="female", pose=False)
        measured = measure(phantom, FINE.vol_spacing)["thickness_parietal"]
        expected = atlas.norm("thickness_parietal", age, "female") * phantom.parameters.thickness_factor
        assert measured == pytest.approx(expected, rel=0.15)


def test_convex_perimeter_of_a_circle_and_a_square():
    angles = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    assert convex_perimeter(np.c_[np.cos(angles), np.sin(angles)] * 10) == pytest.approx(20 * math.pi, rel=1e-4)
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]]) * 3.0
    assert convex_perimeter(square) == pytest.approx(12.0)


@pytest.mark.slow
def test_pose_rotates_and_shifts_within_limits():
    still = make_phantom(6, COARSE, pose=False)
    posed = make_phantom(6, COARSE, max_rotation_deg=5.0, max_shift_mm=5.0)
    assert np.allclose(still.head_to_world[:3, :3], np.eye(3))
    angle = np.degrees(np.arccos((np.trace(posed.head_to_world[:3, :3]) - 1) / 2))
    assert 0 < angle <= 5 * np.sqrt(3)
    assert not torch.equal(still.labels, posed.labels)


# ---------------------------------------------------------------- the command line


@pytest.mark.slow
def test_cli_writes_volumes_label_maps_parameters_and_montage(tmp_path):
    generate(str(tmp_path), n=2, seed=1, size=48, spacing=4.0)
    geometry = BiplanarGeometry(vol_shape=(48,) * 3, vol_spacing=4.0, det_shape=(48, 48))
    volume = nib.load(tmp_path / "phantom_001.nii.gz")
    assert np.allclose(volume.affine, geometry.affine) and volume.shape == geometry.vol_shape
    for suffix, values in (("_labels", LABELS.values()), ("_bones", BONE_LABELS.values())):
        image = nib.load(tmp_path / f"phantom_001{suffix}.nii.gz")
        assert image.get_data_dtype() == np.uint8 and set(np.unique(image.dataobj)) <= set(values)
    again = make_phantom(json.loads((tmp_path / "phantoms.json").read_text())["cases"][1]["seed"], geometry)
    assert np.array_equal(np.asarray(volume.dataobj), again.hu.round().short().numpy())
    assert Image.open(tmp_path / "montage.png").height > 2 * 100
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with pytest.raises(FileExistsError):
        generate(str(tmp_path), n=2, seed=1, size=48, spacing=4.0)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    with pytest.raises(ValueError):
        generate(str(tmp_path / "none"), n=0)


def test_cli_leaves_nothing_behind_when_interrupted(tmp_path, monkeypatch):
    import custom.cli.phantoms as module

    calls = []

    def failing_on_the_second_case(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return make_phantom(*args, **kwargs)

    monkeypatch.setattr(module, "make_phantom", failing_on_the_second_case)
    with pytest.raises(KeyboardInterrupt):
        generate(str(tmp_path), n=3, size=32, spacing=6.0)
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_realism_report_writes_its_tables_and_montage_and_refuses_to_overwrite(tmp_path):
    validate(str(tmp_path / "report"), per_age=1, data_dir=str(tmp_path / "no_data"))
    report = json.loads((tmp_path / "report" / "realism.json").read_text())
    statistics = {row["statistic"] for row in report["summary"]}
    assert statistics >= {"head_circumference_cm", "cephalic_index", "icv_ml", "thickness_parietal"}
    assert len(report["summary"]) == 4 * len(statistics) and isinstance(report["all_within"], bool)
    assert report["sagittal_synostosis_12_months"]["cephalic_index"] < 76
    assert all("absent" in note for note in report["real_scans"])  # skipped cleanly without ../shared
    assert "| 24 | cephalic_index |" in (tmp_path / "report" / "realism.md").read_text()
    assert Image.open(tmp_path / "report" / "montage.png").height >= 8 * 160
    with pytest.raises(FileExistsError):
        validate(str(tmp_path / "report"), per_age=1, data_dir=str(tmp_path / "no_data"))
