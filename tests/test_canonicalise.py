"""Canonicalisation: orientation, flags, clipping, anti-aliasing, wrappers, bad arguments, real scans."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ct_cases import as_ct, grid, reoriented, skull_box
from custom.data.canonicalise import CanonicaliseCT, CanonicaliseCTd
from custom.data.ct_files import LoadCT, LoadCTd
from custom.data.head import connected_components
from custom.data.simulate import SimulateBiplanarXRay
from custom.imaging.geometry import BiplanarGeometry
from monai.data import MetaTensor
from monai.transforms import Compose, ScaleIntensityRange


@pytest.mark.parametrize("codes", ["LPS", "LAS", "ASL"])
def test_any_orientation_gives_the_same_canonical_volume(synthetic_head, codes):
    volume, affine = synthetic_head
    geometry = BiplanarGeometry(vol_shape=(48, 48, 48), vol_spacing=3.0)
    reference = CanonicaliseCT(geometry)(as_ct(volume, affine))
    canonical = CanonicaliseCT(geometry)(as_ct(*reoriented(volume, affine, codes)))
    np.testing.assert_allclose(canonical.numpy(), reference.numpy(), atol=1e-3)
    np.testing.assert_allclose(canonical.meta["head_centre"], reference.meta["head_centre"], atol=1e-9)


def test_no_air_and_too_large_heads_are_flagged(caplog, synthetic_head):
    volume, affine = synthetic_head
    small = BiplanarGeometry(vol_shape=(24, 24, 24), vol_spacing=3.0)  # 72 mm: smaller than the head
    with caplog.at_level(logging.WARNING, logger="custom.data.canonicalise"):
        shifted = CanonicaliseCT(small)(as_ct(volume + 1024, affine))  # air stored as 0 (about)
    assert shifted.meta["no_air"] and shifted.meta["skull_exceeds_fov"]
    assert "no air" in caplog.text and "exceeds the grid's field of view" in caplog.text


def test_intensities_are_clipped_and_the_outside_is_air():
    world, affine = grid((20, 20, 20), 2.0)
    volume = np.where(np.linalg.norm(world, axis=-1) < 12, 5000.0, -3024.0)  # out-of-field -3024, metal 5000
    geometry = BiplanarGeometry(vol_shape=(32, 32, 32), vol_spacing=2.0)  # 64 mm: more than the 40 mm scan
    canonical = CanonicaliseCT(geometry)(as_ct(volume, affine))
    assert canonical.max() == 3071 and canonical.min() == -1024
    assert torch.all(canonical[0, 0] == -1024) and torch.all(canonical[0, :, :, -1] == -1024)  # beyond the scan
    clipped = CanonicaliseCT(geometry, clip=(-1000, 2000))(as_ct(volume, affine))
    assert clipped.max() == 2000 and clipped.min() == -1000


def test_downsampling_is_anti_aliased():
    # 0.5 mm stripes, 2 on and 2 off (mean 500 HU), onto a 2 mm grid: one stripe period per voxel
    _, affine = grid((64, 16, 16), 0.5)
    stripes = np.where((np.arange(64) + 1) // 2 % 2 == 0, 1000.0, 0.0)[:, None, None] * np.ones((64, 16, 16))
    geometry = BiplanarGeometry(vol_shape=(7, 3, 3), vol_spacing=2.0)
    smooth = CanonicaliseCT(geometry, head_height=100.0)(as_ct(stripes, affine))[0]
    aliased = CanonicaliseCT(geometry, head_height=100.0, anti_aliasing=False)(as_ct(stripes, affine))[0]
    np.testing.assert_allclose(smooth.numpy(), 500, atol=1.0)
    assert abs(float(aliased.mean()) - 500) > 400  # point samples all hit the same phase of the stripes


def test_dictionary_wrappers_load_and_canonicalise(tmp_path, synthetic_head):
    volume, affine = synthetic_head
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "head.nii.gz")
    geometry = BiplanarGeometry(vol_shape=(48, 48, 48), vol_spacing=3.0)
    pipeline = Compose([LoadCTd(), CanonicaliseCTd(geometry)])
    out = pipeline({"ct": tmp_path / "head.nii.gz", "other": 1})
    reference = CanonicaliseCT(geometry)(LoadCT()(tmp_path / "head.nii.gz"))
    assert out["other"] == 1 and torch.equal(out["ct"].as_tensor(), reference.as_tensor())
    assert out["ct"].meta["filename_or_obj"] == str(tmp_path / "head.nii.gz")
    assert LoadCTd(keys="missing", allow_missing_keys=True)({"ct": 1}) == {"ct": 1}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(geometry=None), "BiplanarGeometry"),
        (dict(clip=(100, -100)), "clip"),
        (dict(clip=(0, 1, 2)), "clip"),
        (dict(body_threshold=400), "body_threshold < bone_threshold"),
        (dict(bone_threshold=5000), "body_threshold < bone_threshold"),
        (dict(head_height=0), "head_height"),
    ],
)
def test_ill_arg_canonicalise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CanonicaliseCT(**{"geometry": BiplanarGeometry(), **kwargs})


@pytest.mark.parametrize(
    "ct, match",
    [
        (torch.zeros(1, 4, 4, 4), "MetaTensor"),
        (MetaTensor(torch.zeros(4, 4, 4)), r"\(1, I, J, K\)"),
        (MetaTensor(torch.zeros(2, 4, 4, 4)), r"\(1, I, J, K\)"),
        (MetaTensor(torch.zeros(1, 4, 1, 4)), r"\(1, I, J, K\)"),
        (MetaTensor(torch.zeros(1, 4, 4, 4), affine=torch.diag(torch.tensor([1.0, 0.0, 1.0, 1.0]))), "invertible"),
        (MetaTensor(torch.zeros(1, 4, 4, 4), affine=torch.full((4, 4), float("nan"))), "finite"),
    ],
)
def test_ill_arg_canonicalise_input(ct, match):
    with pytest.raises(ValueError, match=match):
        CanonicaliseCT(BiplanarGeometry(vol_shape=(8, 8, 8)))(ct)


# ---- real scans (../shared/data, skipped when absent) ------------------------------------------


DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _shared(relative: str) -> Path:
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent (real scans live beside the project, not in it)")
    return path


@pytest.fixture(scope="module")
def adult_geometry():
    return BiplanarGeometry(vol_shape=(128, 128, 128), vol_spacing=2.0)  # 256 mm: adult skulls


@pytest.fixture(scope="module")
def phantom_scans(adult_geometry):
    """The dry skull phantom as NIfTI (1 mm) and as its tilted DICOM series, canonicalised."""
    nifti = _shared("ct/skull_phantom_bone_1mm.nii.gz")
    dicom = _shared("dicom/skull_phantom_series")
    canonicalise = CanonicaliseCT(adult_geometry)
    return {name: (LoadCT()(path), canonicalise(LoadCT()(path))) for name, path in (("nifti", nifti), ("dicom", dicom))}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nifti", "dicom"])
def test_real_phantom_loads_in_hu(phantom_scans, name):
    ct, canonical = phantom_scans[name]
    assert ct.min() == pytest.approx(-1024, abs=30) and 700 < ct.max() <= 3071  # HU after rescale
    assert canonical.shape == (1, 128, 128, 128) and canonical.meta["head_located_by"] == "bone"
    assert not canonical.meta["skull_exceeds_fov"] and not canonical.meta["no_air"]
    if name == "dicom":  # the scanner tilted the gantry 16.5 degrees
        assert ct.meta["gantry_tilt"] == pytest.approx(16.5, abs=0.05) and ct.shape == (1, 512, 512, 58)


@pytest.mark.parametrize("name", ["nifti", "dicom"])
def test_real_phantom_is_whole_centred_and_ras(phantom_scans, name):
    _, canonical = phantom_scans[name]
    bone = canonical[0].numpy() > 300
    for axis in range(3):  # the whole skull (and head rest) inside: no bone on any face of the grid
        assert not bone.take([0, -1], axis=axis).any()
    lower, upper = skull_box(canonical)  # the skull: the largest bone component (not the head rest)
    np.testing.assert_allclose((lower + upper) / 2, 63.5, atol=2.0)  # within 4 mm of the isocentre

    # RAS: the face (orbits, nose, maxilla) is anterior and inferior; the vault behind and above it is
    # posterior-superior. So below the skull's centre most bone is anterior, above it most is posterior.
    labels, _ = connected_components(torch.from_numpy(bone))
    skull = (labels == 0).numpy()
    y, z = int((lower[1] + upper[1]) / 2), int((lower[2] + upper[2]) / 2)
    assert skull[:, y:, :z].sum() > 1.3 * skull[:, :y, :z].sum()  # lower: anterior heavier
    assert skull[:, :y, z:].sum() > 1.3 * skull[:, y:, z:].sum()  # upper: posterior heavier


def test_real_phantom_tilt_correction_keeps_the_skull_shape(phantom_scans):
    # Two sessions of one skull: its length and width agree only if the DICOM shear is undone.
    size = {name: np.subtract(*skull_box(canonical)[::-1]) * 2.0 for name, (_, canonical) in phantom_scans.items()}
    np.testing.assert_allclose(size["dicom"][:2], size["nifti"][:2], atol=6.0)  # mm; untilted the length is +16


@pytest.mark.parametrize("name", ["nifti", "dicom"])
def test_real_phantom_simulates_head_radiographs(phantom_scans, adult_geometry, name):
    views = SimulateBiplanarXRay(adult_geometry)(phantom_scans[name][1])  # (2, H, W) in [0, 1]
    assert torch.isfinite(views).all() and views.min() == 0 and views.max() == 1
    rows, columns = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in views.shape[1:]), indexing="ij")
    bright = views > 0.5  # bone
    centre = (torch.tensor(views.shape[1:]) - 1) / 2
    for view in bright:  # the skull's box in the middle of both images
        for coordinate, middle in ((rows[view], centre[0]), (columns[view], centre[1])):
            assert abs((coordinate.min() + coordinate.max()) / 2 - middle) < 6


@pytest.mark.slow
def test_real_normalised_and_template_volumes_canonicalise(adult_geometry, caplog):
    # TIGRE's head is attenuation normalised to 0..1: mapped linearly to HU first (0 -> -1000 HU, the soft
    # tissue at ~0.4 -> 0 HU, 1 -> 1500 HU)
    tigre = LoadCT()(_shared("ct/tigre_head_256_normalised.nii.gz"))
    canonical = CanonicaliseCT(adult_geometry)(ScaleIntensityRange(0.0, 1.0, -1000.0, 1500.0)(tigre))
    assert canonical.meta["head_located_by"] == "bone" and not canonical.meta["no_air"]
    assert canonical.shape == (1, 128, 128, 128) and canonical.max() > 1000

    # the CQ500 template stores air as 0: canonicalised, but flagged and warned about
    with caplog.at_level(logging.WARNING, logger="custom.data.canonicalise"):
        template = CanonicaliseCT(adult_geometry)(LoadCT()(_shared("ct/head_ct_template_2mm.nii.gz")))
    assert template.meta["no_air"] and template.meta["head_located_by"] == "bone"
    assert "no air" in caplog.text
    lower, upper = skull_box(template)
    np.testing.assert_allclose((lower + upper) / 2, 63.5, atol=1.0)
