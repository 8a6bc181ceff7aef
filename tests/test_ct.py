from __future__ import annotations

import logging
import random
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from custom.data.ct import CanonicaliseCT, CanonicaliseCTd, LoadCT, LoadCTd, connected_components
from custom.data.dicom_compat import save_dicom
from custom.data.simulate import SimulateBiplanarXRay
from custom.imaging.geometry import BiplanarGeometry
from monai.data import MetaTensor
from monai.transforms import Compose, ScaleIntensityRange
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS for points (its own inverse)


# ---- synthetic heads ---------------------------------------------------------------------------

HEAD_CENTRE = np.array([20.0, -15.0, 30.0])  # mm, RAS: off the scan's centre
MARKER = np.array([-25.0, 30.0, 20.0])  # mm from the head centre: the patient's left, anterior, superior


def head_hu(world: np.ndarray, spine: bool = False) -> np.ndarray:
    """HU of a synthetic supine head at RAS points (..., 3) mm.

    An ellipsoidal skull shell (semi-axes 45 x 55 x 45 mm, 6 mm thick) with brain and scalp, a neck
    cylinder down to the end of the scan, a couch slab below (posterior of) the head with a metal rail
    (bone-bright, so only the body rule keeps it out), a bright marker at the patient's left, anterior,
    superior, and optionally a bony spine down the neck.
    """
    p = world - HEAD_CENTRE
    r = np.sqrt((p[..., 0] / 45) ** 2 + (p[..., 1] / 55) ** 2 + (p[..., 2] / 45) ** 2)
    hu = np.full(world.shape[:-1], -1000.0)
    neck = (p[..., 0] ** 2 + (p[..., 1] + 10) ** 2 < 30**2) & (p[..., 2] < 0)
    hu[neck | (r < 1.1)] = 40.0
    hu[(r < 1.0) & (r > 0.87)] = 1000.0
    hu[r <= 0.87] = 30.0
    if spine:
        hu[(p[..., 0] ** 2 + (p[..., 1] + 10) ** 2 < 8**2) & (p[..., 2] < -30)] = 700.0
    hu[np.linalg.norm(p - MARKER, axis=-1) < 6] = 2000.0
    couch = (p[..., 1] < -70) & (p[..., 1] > -80)  # 10 mm below the scalp, air (foam) between
    hu[couch] = 100.0
    hu[couch & (np.abs(p[..., 0] - 60) < 5)] = 1500.0
    return hu


def grid(shape: tuple[int, int, int], spacing: float, centre=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """A RAS grid: voxel centres (I, J, K, 3) mm and its affine (4, 4), centred on ``centre`` mm."""
    affine = np.diag([spacing] * 3 + [1.0])
    affine[:3, 3] = np.asarray(centre) - (np.asarray(shape) - 1) / 2 * spacing
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return index @ affine[:3, :3].T + affine[:3, 3], affine


def reoriented(volume: np.ndarray, affine: np.ndarray, codes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored with voxel axes ``codes`` (e.g. "LPS", "ASL"): same world, other array."""
    target = nib.orientations.axcodes2ornt(tuple(codes))
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine), target)
    stored = nib.orientations.apply_orientation(volume, transform)
    return np.ascontiguousarray(stored), affine @ nib.orientations.inv_ornt_aff(transform, volume.shape)


def as_ct(volume: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.as_tensor(volume, dtype=torch.float32)[None], affine=torch.as_tensor(affine))


def skull_box(canonical: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Index box (lower, upper) of the largest bone component of a canonical (1, X, Y, Z) volume."""
    labels, _ = connected_components(canonical[0].as_tensor() > 300)
    index = torch.nonzero(labels == 0).numpy()
    return index.min(axis=0), index.max(axis=0)


@pytest.fixture(scope="module")
def synthetic_head():
    world, affine = grid((64, 64, 80), 3.0)
    return head_hu(world).astype(np.float32), affine


# ---- DICOM writing -----------------------------------------------------------------------------

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
OBLIQUE = (0.866025, 0.5, 0.0, -0.5, 0.866025, 0.0)  # axial, rotated 30 degrees about z
ROWS, COLUMNS = 16, 14
PIXEL_SPACING = (1.5, 2.0)  # mm between rows, between columns


def ramp_hu(lps: np.ndarray) -> np.ndarray:
    """A HU field linear in LPS position (..., 3) mm: trilinear interpolation reproduces it exactly."""
    return 40.0 + 3.0 * lps[..., 0] - 2.0 * lps[..., 1] + 5.0 * lps[..., 2]


def write_slice(path: Path, hu: np.ndarray, position, orientation=AXIAL, series_uid="1.2.826.0.1.1", **extra) -> None:
    """One CT slice (rows, columns) HU, stored as int16 with slope 2 and intercept -1024."""
    slope, intercept = extra.pop("slope", 2.0), extra.pop("intercept", -1024.0)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", "1.2.826.0.1", series_uid
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.PixelSpacing = [f"{v:g}" for v in PIXEL_SPACING]
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    ds.PixelData = np.round((hu - intercept) / slope).astype(np.int16).tobytes()
    for key, value in extra.items():
        setattr(ds, key, value)
    save_dicom(ds, path)


def slice_world(position, orientation) -> np.ndarray:
    """LPS positions (rows, columns, 3) mm of a slice's pixels."""
    row_dir, col_dir = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    r, c = np.meshgrid(np.arange(ROWS), np.arange(COLUMNS), indexing="ij")
    return np.asarray(position) + c[..., None] * PIXEL_SPACING[1] * row_dir + r[..., None] * PIXEL_SPACING[0] * col_dir


def write_series(folder: Path, positions, orientation=AXIAL, names=None, **extra) -> Path:
    """A series of slices of :func:`ramp_hu` at LPS ``positions`` (N, 3) mm."""
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"slice{k:03d}.dcm" for k in range(len(positions))]
    for k, (name, position) in enumerate(zip(names, positions)):
        hu = ramp_hu(slice_world(position, orientation))
        write_slice(folder / name, hu, position, orientation, InstanceNumber=k + 1, **extra)
    return folder


def stacked(count=12, step=(0.0, 0.0, 2.5), start=(-10.0, -12.0, -14.0)) -> np.ndarray:
    return np.asarray(start) + np.arange(count)[:, None] * np.asarray(step)


def assert_ramp(ct: MetaTensor, atol: float = 1.01) -> None:
    """Every voxel of a loaded series holds :func:`ramp_hu` at the position its affine gives (1 HU of rounding)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in ct.shape[1:]], indexing="ij"), -1)
    affine = ct.affine.numpy()
    ras = index @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(ct[0].numpy(), ramp_hu(ras @ LPS), atol=atol)


# ---- loading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [AXIAL, OBLIQUE])
def test_dicom_series_loads_hu_and_affine(tmp_path, orientation):
    folder = write_series(tmp_path / "series", stacked(), orientation)
    ct = LoadCT()(folder)
    assert ct.shape == (1, COLUMNS, ROWS, 12) and ct.dtype == torch.float32  # (column, row, slice)
    assert_ramp(ct)  # slope 2 / intercept -1024 applied, and the affine puts every voxel where the ramp says
    first = ct.affine.numpy() @ np.array([0, 0, 0, 1.0])
    np.testing.assert_allclose(first[:3], stacked()[0] @ LPS)  # voxel 0 is the first pixel of the lowest slice
    np.testing.assert_allclose(ct.meta["spacing"], [2.0, 1.5, 2.5])
    assert ct.meta["gantry_tilt"] < 0.01 and not ct.meta["slices_resampled"]
    assert ct.meta["filename_or_obj"] == str(folder)


def test_dicom_file_order_and_names_do_not_matter(tmp_path):
    reference = LoadCT()(write_series(tmp_path / "ordered", stacked()))
    names = [generate_uid()[-12:] + (".dcm" if i % 2 else "") for i in range(12)]  # UIDs, with or without .dcm
    order = list(range(12))
    random.Random(0).shuffle(order)
    folder = write_series(tmp_path / "shuffled", stacked()[order], names=names)
    for k, name in zip(order, names):  # InstanceNumber counting down the stack: must be ignored too
        ds = pydicom.dcmread(folder / name)
        ds.InstanceNumber = 12 - k
        ds.save_as(folder / name)
    ct = LoadCT()(folder)
    assert torch.equal(ct.as_tensor(), reference.as_tensor())
    assert torch.allclose(ct.affine, reference.affine)
    for name in names[2:4]:  # one file, named by UID (suffix ".<digits>") or with .dcm -> its series
        assert torch.equal(LoadCT()(folder / name).as_tensor(), reference.as_tensor())


def test_dicom_folder_skips_files_that_are_not_ct_images(tmp_path, caplog):
    folder = write_series(tmp_path / "series", stacked())
    (folder / "README.txt").write_text("not DICOM")
    (folder / "subfolder").mkdir()
    localiser = slice_world(stacked()[0], AXIAL)
    write_slice(folder / "scout.dcm", ramp_hu(localiser), (0, 0, 500), ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    write_slice(folder / "mr.dcm", ramp_hu(localiser), (0, 0, 600), Modality="MR", SeriesInstanceUID="1.2.9")
    no_image = FileDataset(str(folder / "DIRFILE"), {}, file_meta=FileMetaDataset(), preamble=b"\0" * 128)
    no_image.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    no_image.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"  # a DICOMDIR: no image
    no_image.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    no_image.PatientName = "nobody"
    save_dicom(no_image, folder / "DIRFILE")
    with caplog.at_level(logging.INFO, logger="custom.data.ct"):
        ct = LoadCT()(folder)
    assert ct.shape == (1, COLUMNS, ROWS, 12)
    assert_ramp(ct)
    assert "1 not DICOM, 1 DICOM without image geometry, 1 localiser, 1 MR" in caplog.text


def test_several_series_are_refused_unless_one_is_chosen(tmp_path):
    folder = write_series(tmp_path / "two", stacked(), series_uid="1.2.3.1")
    write_series(folder, stacked(6, start=(0, 0, 100)), names=[f"b{k}.dcm" for k in range(6)], series_uid="1.2.3.2")
    with pytest.raises(ValueError, match=r"2 CT series .*1\.2\.3\.1 \(12 slices.*1\.2\.3\.2 \(6 slices"):
        LoadCT()(folder)
    assert LoadCT(series_uid="1.2.3.2")(folder).shape == (1, COLUMNS, ROWS, 6)
    assert LoadCT()(folder / "b0.dcm").shape == (1, COLUMNS, ROWS, 6)  # a file names its series
    with pytest.raises(ValueError, match=r"series '9\.9' is not in"):
        LoadCT(series_uid="9.9")(folder)


def test_gantry_tilt_is_kept_exactly_as_a_sheared_affine(tmp_path):
    tilt = np.radians(16.5)  # as the real phantom series: slices tilted, positions stepping along z
    orientation = (1.0, 0.0, 0.0, 0.0, np.cos(tilt), np.sin(tilt))
    folder = write_series(tmp_path / "tilted", stacked(), orientation)
    ct = LoadCT()(folder)
    assert ct.meta["gantry_tilt"] == pytest.approx(16.5, abs=1e-3)
    assert_ramp(ct)  # every voxel where it was acquired
    with pytest.raises(ValueError, match=r"gantry tilt of 16\.50 degrees"):
        LoadCT(allow_tilt=False)(folder)

    # canonicalised: the ramp, sampled through the shear, is exact wherever the grid lies inside the scan
    geometry = BiplanarGeometry(vol_shape=(24, 24, 24), vol_spacing=1.0)
    canonical = CanonicaliseCT(geometry)(ct)
    world = geometry.voxel_centres().numpy() + canonical.meta["head_centre"]  # (X, Y, Z, 3) RAS mm in the scan
    index = world @ np.linalg.inv(ct.affine.numpy())[:3, :3].T + np.linalg.inv(ct.affine.numpy())[:3, 3]
    inside = np.all((index >= 0) & (index <= np.array(ct.shape[1:]) - 1), axis=-1)
    assert inside.sum() > 1000 and (~inside).sum() > 0
    np.testing.assert_allclose(canonical[0].numpy()[inside], ramp_hu(world[inside] @ LPS), atol=1.01)
    beyond = np.any((index < -1) | (index > np.array(ct.shape[1:])), axis=-1)  # over a voxel outside the scan
    assert beyond.sum() > 0 and np.all(canonical[0].numpy()[beyond] == -1024)
    assert canonical[0].numpy().min() == -1024


@pytest.mark.parametrize(
    "positions",
    [
        np.delete(stacked(13), 5, axis=0),  # a missing slice
        np.concatenate([stacked(6), stacked(5, step=(0, 0, 3.5), start=stacked(6)[-1] + (0, 0, 3.5))]),  # mixed
    ],
)
def test_uneven_slices_are_resampled_onto_an_even_grid(tmp_path, positions):
    folder = write_series(tmp_path / "uneven", positions)
    ct = LoadCT()(folder)
    steps = np.diff(positions[:, 2])
    assert ct.meta["slices_resampled"]
    np.testing.assert_allclose(ct.meta["spacing"][2], np.ptp(positions[:, 2]) / (ct.shape[3] - 1))
    assert ct.meta["spacing"][2] == pytest.approx(np.median(steps), rel=0.1)
    assert_ramp(ct)  # interpolated slices hold the ramp where the even grid puts them
    with pytest.raises(ValueError, match="uneven slice spacing"):
        LoadCT(resample_uneven=False)(folder)


def test_nifti_orientations_nrrd_and_mha_load_the_same_world(tmp_path, synthetic_head):
    volume, affine = synthetic_head
    loaded = {}
    for codes in ("RAS", "LPS"):
        stored, stored_affine = reoriented(volume, affine, codes)
        nib.save(nib.Nifti1Image(stored, stored_affine), tmp_path / f"{codes}.nii.gz")
        loaded[codes] = LoadCT()(tmp_path / f"{codes}.nii.gz")
        assert nib.aff2axcodes(loaded[codes].affine.numpy()) == tuple(codes)
        np.testing.assert_array_equal(loaded[codes][0].numpy(), stored)

        # ITK writes LPS: direction = the LPS voxel axes, origin = voxel 0 in LPS
        image = itk.image_from_array(np.ascontiguousarray(stored.transpose(2, 1, 0)))
        lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ stored_affine
        spacing = np.linalg.norm(lps_affine[:3, :3], axis=0)
        image.SetSpacing(spacing.tolist())
        image.SetOrigin(lps_affine[:3, 3].tolist())
        image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(lps_affine[:3, :3] / spacing)))
        for suffix in (".mha", ".nrrd"):
            itk.imwrite(image, str(tmp_path / f"{codes}{suffix}"))
            ct = LoadCT()(tmp_path / f"{codes}{suffix}")
            assert torch.equal(ct.as_tensor(), loaded[codes].as_tensor())
            np.testing.assert_allclose(ct.affine.numpy(), loaded[codes].affine.numpy(), atol=1e-6)


@pytest.mark.parametrize("codes", ["LPS", "LAS", "ASL"])
def test_any_orientation_gives_the_same_canonical_volume(synthetic_head, codes):
    volume, affine = synthetic_head
    geometry = BiplanarGeometry(vol_shape=(48, 48, 48), vol_spacing=3.0)
    reference = CanonicaliseCT(geometry)(as_ct(volume, affine))
    canonical = CanonicaliseCT(geometry)(as_ct(*reoriented(volume, affine, codes)))
    np.testing.assert_allclose(canonical.numpy(), reference.numpy(), atol=1e-3)
    np.testing.assert_allclose(canonical.meta["head_centre"], reference.meta["head_centre"], atol=1e-9)


# ---- canonicalisation --------------------------------------------------------------------------


def test_head_is_centred_and_oriented_despite_couch_and_neck(synthetic_head):
    volume, affine = synthetic_head
    geometry = BiplanarGeometry(vol_shape=(48, 48, 48), vol_spacing=3.0)
    canonical = CanonicaliseCT(geometry)(as_ct(volume, affine))
    assert canonical.shape == (1, 48, 48, 48) and canonical.dtype == torch.float32
    np.testing.assert_allclose(canonical.affine.numpy(), geometry.affine)
    assert canonical.meta["head_located_by"] == "bone" and not canonical.meta["skull_exceeds_fov"]
    assert not canonical.meta["no_air"]
    np.testing.assert_allclose(canonical.meta["head_centre"], HEAD_CENTRE, atol=1.5)  # not pulled by couch or neck

    lower, upper = skull_box(canonical)
    np.testing.assert_allclose((lower + upper) / 2, 23.5, atol=1.0)  # within one voxel of the grid centre

    # the marker at the patient's left, anterior, superior: low x, high y, high z
    marker = np.argwhere(canonical[0].numpy() > 1600).mean(axis=0)
    np.testing.assert_allclose(marker, 23.5 + MARKER / 3.0, atol=1.0)
    assert marker[0] < 23.5 < marker[1] and marker[2] > 23.5


def test_a_scan_down_to_the_shoulders_keeps_the_vertex_in_the_grid():
    world, affine = grid((48, 48, 120), 3.0, centre=(20, -15, -100))  # 360 mm, from the vertex down
    volume = head_hu(world, spine=True)
    geometry = BiplanarGeometry(vol_shape=(48, 48, 48), vol_spacing=3.0)
    canonical = CanonicaliseCT(geometry)(as_ct(volume, affine))
    box = canonical.meta["head_box"]
    assert box[1, 2] - box[0, 2] == pytest.approx(0.9 * 144, abs=3.0)  # the cranial 90 % of the grid's height
    assert box[1, 2] == pytest.approx(HEAD_CENTRE[2] + 45, abs=3.0)  # the top is the vertex
    vertex = max(np.nonzero((canonical[0].numpy() > 300).any(axis=(0, 1)))[0])
    assert 44 <= vertex <= 46  # a few voxels below the top of the grid
    assert canonical[0, :, :, 0].numpy().max() > 300  # the spine leaves through the bottom


def test_fallbacks_without_bone_or_body(caplog):
    world, affine = grid((24, 24, 24), 4.0)
    soft = np.where(np.linalg.norm(world - [10, 0, 0], axis=-1) < 30, 40.0, -1000.0)  # a ball of soft tissue
    geometry = BiplanarGeometry(vol_shape=(16, 16, 16), vol_spacing=4.0)
    with caplog.at_level(logging.WARNING, logger="custom.data.ct"):
        body = CanonicaliseCT(geometry)(as_ct(soft, affine))
        air = CanonicaliseCT(geometry)(as_ct(np.full((24, 24, 24), -1000.0), affine))
    assert body.meta["head_located_by"] == "body"
    np.testing.assert_allclose(body.meta["head_centre"], [10, 0, 0], atol=2.0)
    assert air.meta["head_located_by"] == "volume" and torch.all(air == -1000)
    np.testing.assert_allclose(air.meta["head_centre"], 0, atol=1e-9)
    assert "centred on the body" in caplog.text and "centred on the volume" in caplog.text


def test_no_air_and_too_large_heads_are_flagged(caplog, synthetic_head):
    volume, affine = synthetic_head
    small = BiplanarGeometry(vol_shape=(24, 24, 24), vol_spacing=3.0)  # 72 mm: smaller than the head
    with caplog.at_level(logging.WARNING, logger="custom.data.ct"):
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


def test_connected_components_number_by_size():
    mask = torch.zeros(8, 9, 10, dtype=torch.bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[5:8, 0:9, 9] = True  # 27 voxels touching the border, separate
    mask[0:2, 6:9, 0:5] = True  # 30 voxels
    mask[4, 4, 4] = mask[4, 5, 5] = True  # diagonal neighbours: not face-connected
    labels, sizes = connected_components(mask)
    assert sizes.tolist() == [30, 27, 27, 1, 1]
    assert torch.all(labels[0:2, 6:9, 0:5] == 0) and torch.all(labels[~mask] == -1)
    assert labels[4, 4, 4] != labels[4, 5, 5]
    empty_labels, empty_sizes = connected_components(torch.zeros(3, 3, 3, dtype=torch.bool))
    assert len(empty_sizes) == 0 and torch.all(empty_labels == -1)


# ---- errors ------------------------------------------------------------------------------------


def _bad_nifti(folder: Path) -> Path:
    (folder / "bad.nii.gz").write_bytes(b"this is not gzip")
    return folder / "bad.nii.gz"


def _nifti_2d(folder: Path) -> Path:
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), folder / "flat.nii")
    return folder / "flat.nii"


def _unknown(folder: Path) -> Path:
    (folder / "ct.txt").write_text("hello")
    return folder / "ct.txt"


def _no_suffix_not_dicom(folder: Path) -> Path:
    (folder / "IM0001").write_text("hello")
    return folder / "IM0001"


def _broken_dicom(folder: Path) -> Path:
    """A valid file meta header announcing a deflated data set, followed by bytes that do not inflate."""
    write_slice(folder / "broken.dcm", np.zeros((ROWS, COLUMNS)), (0, 0, 0))
    ds = pydicom.dcmread(folder / "broken.dcm")
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.save_as(folder / "broken.dcm")
    data = (folder / "broken.dcm").read_bytes()
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")  # preamble, DICM, group length element
    (folder / "broken.dcm").write_bytes(data[:meta_end] + b"\xff" * 64)
    return folder / "broken.dcm"


def _empty(folder: Path) -> Path:
    (folder / "empty").mkdir()
    return folder / "empty"


def _only_text(folder: Path) -> Path:
    (folder / "texts").mkdir()
    (folder / "texts" / "a.txt").write_text("a")
    return folder / "texts"


def _only_mr(folder: Path) -> Path:
    return write_series(folder / "mr", stacked(3), Modality="MR")


def _one_slice(folder: Path) -> Path:
    return write_series(folder / "one", stacked(1))


def _multi_frame(folder: Path) -> Path:
    return write_series(folder / "frames", stacked(3), NumberOfFrames=1 + 1)


def _changed(folder: Path, name: str, **extra) -> Path:
    series = write_series(folder / name, stacked(4))
    ds = pydicom.dcmread(series / "slice002.dcm")
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.save_as(series / "slice002.dcm")
    return series


def _truncated_pixels(folder: Path) -> Path:
    series = write_series(folder / "truncated", stacked(3))
    ds = pydicom.dcmread(series / "slice001.dcm")
    ds.PixelData = ds.PixelData[:10]
    ds.save_as(series / "slice001.dcm")
    return series


def _rgb(folder: Path) -> Path:
    series = write_series(folder / "rgb", stacked(3))
    for path in series.iterdir():
        ds = pydicom.dcmread(path)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.zeros((ROWS, COLUMNS, 3), np.uint8).tobytes()
        ds.save_as(path)
    return series


def _itk_file(name: str, text: str):
    def make(folder: Path) -> Path:
        (folder / name).write_text(text)
        return folder / name

    return make


def _broken_dicom_in_folder(folder: Path) -> Path:
    write_series(folder / "series", stacked(3))
    _broken_dicom(folder / "series")
    return folder / "series"


def _itk_2d(folder: Path) -> Path:
    itk.imwrite(itk.image_from_array(np.zeros((4, 5), np.float32)), str(folder / "flat.mha"))
    return folder / "flat.mha"


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda folder: folder / "missing.nii.gz", FileNotFoundError, "no CT at"),
        (_unknown, ValueError, "unknown CT format '.txt'"),
        (_bad_nifti, ValueError, "cannot read NIfTI"),
        (_nifti_2d, ValueError, "a CT must be 3D"),
        (_itk_file("garbage.mha", "garbage"), ValueError, "ITK finds no reader"),
        (_itk_file("bad.nrrd", "NRRD0004\ntype: nonsense\n\n"), ValueError, r"cannot read \S*bad\.nrrd: "),
        (
            _itk_file("raw.mhd", "NDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\nElementDataFile = no.raw\n"),
            ValueError,
            "cannot read the voxels",
        ),
        (_itk_2d, ValueError, "3D with one value per voxel"),
        (_no_suffix_not_dicom, ValueError, "is not a DICOM file"),
        (_broken_dicom, ValueError, "corrupt DICOM file .*broken.dcm"),
        (_broken_dicom_in_folder, ValueError, "corrupt DICOM file .*broken.dcm"),
        (_empty, ValueError, r"no DICOM CT images in .* \(no files in it"),
        (_only_text, ValueError, r"no DICOM CT images in .* \(skipped 1 not DICOM\)"),
        (_only_mr, ValueError, r"skipped 3 MR"),
        (_one_slice, ValueError, "at least 2"),
        (_multi_frame, ValueError, "multi-frame"),
        (
            lambda f: _changed(f, "size", Rows=8, PixelData=np.zeros((8, COLUMNS), np.int16).tobytes()),
            ValueError,
            "differ in size",
        ),
        (
            lambda f: _changed(f, "orientation", ImageOrientationPatient=list(OBLIQUE)),
            ValueError,
            "ImageOrientationPatient",
        ),
        (lambda f: _changed(f, "spacing", PixelSpacing=[1.0, 1.0]), ValueError, "differ in PixelSpacing"),
        (
            lambda f: _changed(f, "duplicate", ImagePositionPatient=list(stacked(4)[1])),
            ValueError,
            "several slices at one",
        ),
        (
            lambda f: _changed(f, "offline", ImagePositionPatient=list(stacked(4)[2] + (3, 0, 0))),
            ValueError,
            "one line",
        ),
        (_truncated_pixels, ValueError, "cannot decode the pixels"),
        (_rgb, ValueError, "one greyscale image"),
    ],
)
def test_ill_arg_load(tmp_path, make, error, match):
    path = make(tmp_path)
    with pytest.raises(error, match=match):
        LoadCT()(path)


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


def test_real_normalised_and_template_volumes_canonicalise(adult_geometry, caplog):
    # TIGRE's head is attenuation normalised to 0..1: mapped linearly to HU first (0 -> -1000 HU, the soft
    # tissue at ~0.4 -> 0 HU, 1 -> 1500 HU)
    tigre = LoadCT()(_shared("ct/tigre_head_256_normalised.nii.gz"))
    canonical = CanonicaliseCT(adult_geometry)(ScaleIntensityRange(0.0, 1.0, -1000.0, 1500.0)(tigre))
    assert canonical.meta["head_located_by"] == "bone" and not canonical.meta["no_air"]
    assert canonical.shape == (1, 128, 128, 128) and canonical.max() > 1000

    # the CQ500 template stores air as 0: canonicalised, but flagged and warned about
    with caplog.at_level(logging.WARNING, logger="custom.data.ct"):
        template = CanonicaliseCT(adult_geometry)(LoadCT()(_shared("ct/head_ct_template_2mm.nii.gz")))
    assert template.meta["no_air"] and template.meta["head_located_by"] == "bone"
    assert "no air" in caplog.text
    lower, upper = skull_box(template)
    np.testing.assert_allclose((lower + upper) / 2, 63.5, atol=1.0)
