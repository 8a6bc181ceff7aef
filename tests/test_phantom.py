from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from custom.geometry import BiplanarGeometry
from custom.phantom import (
    BONE_FRACTION,
    LABELS,
    OPENINGS,
    SUTURES,
    VARIANTS,
    ellipse_perimeter,
    generate,
    head_circumference,
    make_phantom,
    sample_parameters,
)
from custom.physics import AIR_HU

COARSE = BiplanarGeometry(vol_shape=(64,) * 3, vol_spacing=3.0)
BONE = LABELS["bone"]


def _voxel(geometry: BiplanarGeometry, phantom, head_point) -> tuple[int, int, int]:
    """Grid index nearest to a head-frame point (mm)."""
    world = phantom.head_to_world @ np.append(np.asarray(head_point, dtype=float), 1.0)
    index = np.linalg.solve(geometry.affine, world)[:3]
    return tuple(int(round(i)) for i in index)


def _open(phantom) -> set[str]:
    present = torch.unique(phantom.openings).tolist()
    return {OPENINGS[i - 1] for i in present if i > 0}


def test_same_seed_same_phantom_and_other_seeds_differ():
    first, again, other = (make_phantom(s, COARSE) for s in (11, 11, 12))
    assert torch.equal(first.hu, again.hu) and torch.equal(first.labels, again.labels)
    assert first.parameters == again.parameters
    assert not torch.equal(first.hu, other.hu)


def test_given_arguments_do_not_shift_the_other_draws():
    drawn, chosen = sample_parameters(7), sample_parameters(7, age_months=5.0, variant="metopic")
    assert (chosen.age_months, chosen.variant) == (5.0, "metopic")
    assert chosen.rotation_deg == drawn.rotation_deg and chosen.thickness_direction == drawn.thickness_direction


def test_head_circumference_follows_who_growth():
    assert head_circumference(0) == pytest.approx(34.2) and head_circumference(24) == pytest.approx(47.8)
    ages = np.linspace(0, 24, 25)
    assert np.all(np.diff([head_circumference(a) for a in ages]) > 0)


@pytest.mark.parametrize("age", [0.0, 24.0])
def test_rendered_head_has_the_drawn_circumference(age):
    geometry = BiplanarGeometry()
    phantom = make_phantom(3, geometry, age_months=age, variant="normal", pose=False)
    p = phantom.parameters
    head = (phantom.labels > 0).numpy()
    extents = [np.ptp(np.nonzero(head.any(axis=tuple(k for k in range(3) if k != axis)))[0]) + 1 for axis in (0, 1)]
    width, length = (n * geometry.vol_spacing for n in extents)  # mm
    a, b, _ = p.skull_semi_axes
    assert width == pytest.approx(2 * (a + p.scalp_mm), abs=2 * geometry.vol_spacing)
    assert length == pytest.approx(2 * (b + p.scalp_mm), abs=2 * geometry.vol_spacing)
    assert ellipse_perimeter(width / 2, length / 2) / 10 == pytest.approx(p.head_circumference_cm, rel=0.04)
    assert 31 < p.head_circumference_cm < 51


def test_labels_intensities_and_bone_fraction():
    geometry = BiplanarGeometry()
    for seed, age in ((0, 0.5), (2, 24.0)):
        phantom = make_phantom(seed, geometry, age_months=age)
        labels, hu = phantom.labels, phantom.hu
        assert set(torch.unique(labels).tolist()) == set(LABELS.values())
        median = {name: hu[labels == value].median().item() for name, value in LABELS.items()}
        assert median["background"] == pytest.approx(AIR_HU, abs=1)
        assert -20 < median["soft_tissue"] < 60 and 0 < median["brain"] < 40
        assert median["bone"] > 0.5 * phantom.parameters.bone_hu
        low, high = BONE_FRACTION
        assert low < (labels == BONE).float().mean().item() < high


def test_anterior_fontanelle_open_at_3_months_and_closed_at_24():
    geometry = BiplanarGeometry()
    for age, is_open in ((3.0, True), (24.0, False)):
        phantom = make_phantom(5, geometry, age_months=age, variant="normal", pose=False)
        _, b, c = phantom.parameters.skull_semi_axes
        assert ("anterior_fontanelle" in _open(phantom)) == is_open
        bone_above_bregma = 0
        for x in (-0.75, 0.75):  # the two voxel columns beside the midline
            i, j, _ = _voxel(geometry, phantom, (x, 0.25 * b, 0))
            bone_above_bregma += int((phantom.labels[i, j, :] == BONE)[-40:].sum())  # the top of the grid
        assert (bone_above_bregma == 0) == is_open


@pytest.mark.parametrize(
    "variant, side",
    [(v, None) for v in VARIANTS if v not in ("unicoronal", "lambdoid")]
    + [("unicoronal", "left"), ("unicoronal", "right"), ("lambdoid", "left"), ("lambdoid", "right")],
)
def test_each_variant_closes_exactly_its_sutures(variant, side):
    phantom = make_phantom(9, BiplanarGeometry(), age_months=1.0, variant=variant, side=side, pose=False)
    fused = set(phantom.parameters.fused)
    assert (
        fused
        == {
            "normal": set(),
            "sagittal": {"sagittal"},
            "metopic": {"metopic"},
            "unicoronal": {f"coronal_{side}"},
            "bicoronal": {"coronal_left", "coronal_right"},
            "lambdoid": {f"lambdoid_{side}"},
        }[variant]
    )
    assert _open(phantom) & set(SUTURES) == set(SUTURES) - fused  # at one month every other suture is open


def test_openings_are_gaps_in_the_bone():
    phantom = make_phantom(4, BiplanarGeometry(), age_months=3.0, variant="normal", pose=False)
    at_openings = phantom.openings > 0
    assert at_openings.sum() > 300
    # a map voxel loses at least a quarter of its bone, most of them at least half (labelled soft tissue)
    assert (phantom.labels[at_openings] == BONE).float().mean() < 0.15
    assert phantom.hu[at_openings].mean() < 0.4 * phantom.parameters.bone_hu


def test_deformations_have_their_characteristic_shape():
    geometry = BiplanarGeometry()
    x, y, z = torch.meshgrid(*geometry.voxel_coordinates(torch.float32), indexing="ij")  # world mm
    upper_vault = (z > 20) & (z < 30)  # an axial band above the face

    def extent(phantom, along, where):
        """Extent (mm) of the vault bone along one world axis within ``where``."""
        values = along[(phantom.labels == BONE) & upper_vault & where]
        return (values.max() - values.min()).item()

    shape = {}
    for variant in ("normal", "sagittal", "bicoronal", "metopic"):
        phantom = make_phantom(2, geometry, age_months=8.0, variant=variant, severity=1.0, pose=False)
        width, length = extent(phantom, x, True), extent(phantom, y, True)
        shape[variant] = (width / length, extent(phantom, x, y > 40) / width)  # (cephalic index, forehead width)
    assert shape["sagittal"][0] < shape["normal"][0] - 0.05 < shape["bicoronal"][0] - 0.1
    assert shape["metopic"][1] < shape["normal"][1] - 0.05

    for variant, forward in (("unicoronal", 1), ("lambdoid", -1)):  # flat forehead / occiput on the fused side
        phantom = make_phantom(2, geometry, age_months=8.0, variant=variant, side="left", severity=1.0, pose=False)
        bone = (phantom.labels == BONE) & upper_vault
        reach = [(forward * y[bone & (x * sign > 20) & (x * sign < 30)]).max().item() for sign in (-1, 1)]
        assert reach[0] < reach[1] - 4  # the patient's left is -x


def test_pose_jitter_is_bounded_and_moves_the_head():
    still = make_phantom(6, COARSE, pose=False)
    posed = make_phantom(6, COARSE, max_rotation_deg=5.0, max_shift_mm=5.0)
    assert np.allclose(still.head_to_world[:3, :3], np.eye(3))
    angle = np.degrees(np.arccos((np.trace(posed.head_to_world[:3, :3]) - 1) / 2))
    assert 0 < angle <= 5 * np.sqrt(3)
    assert 0 < np.linalg.norm(posed.head_to_world[:3, 3] - still.head_to_world[:3, 3]) <= 5 * np.sqrt(3) + 1e-6
    assert not torch.equal(still.labels, posed.labels)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(age_months=-1),
        dict(age_months=25),
        dict(variant="plagiocephaly"),
        dict(variant="normal", side="left"),
        dict(variant="unicoronal", side="up"),
        dict(variant="sagittal", severity=1.5),
    ],
)
def test_ill_arg(kwargs):
    with pytest.raises(ValueError):
        sample_parameters(0, **kwargs)


def test_cli_writes_volumes_labels_parameters_and_montage(tmp_path):
    generate(str(tmp_path), n=2, seed=1, size=48, spacing=4.0)
    geometry = BiplanarGeometry(vol_shape=(48,) * 3, vol_spacing=4.0, det_shape=(48, 48))
    volume, labels = (nib.load(tmp_path / f"phantom_001{s}.nii.gz") for s in ("", "_labels"))
    assert np.allclose(volume.affine, geometry.affine) and volume.shape == geometry.vol_shape
    assert labels.get_data_dtype() == np.uint8 and set(np.unique(labels.dataobj)) <= set(LABELS.values())
    again = make_phantom(json.loads((tmp_path / "phantoms.json").read_text())["cases"][1]["seed"], geometry)
    assert np.array_equal(np.asarray(volume.dataobj), again.hu.round().short().numpy())
    picture = Image.open(tmp_path / "montage.png")
    assert picture.height > 2 * 100 and picture.width > 5 * 100
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with pytest.raises(FileExistsError):
        generate(str(tmp_path), n=2, seed=1, size=48, spacing=4.0)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    with pytest.raises(ValueError):
        generate(str(tmp_path / "none"), n=0)


def test_cli_leaves_nothing_behind_when_interrupted(tmp_path, monkeypatch):
    import custom.phantom as module

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
