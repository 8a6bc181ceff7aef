"""DICOM series: sorting, rescale, skipped files, several series, gantry tilt, uneven slices."""

from __future__ import annotations

import logging
import random

import numpy as np
import pydicom
import pytest
import torch
from ct_cases import (
    AXIAL,
    COLUMNS,
    LPS,
    OBLIQUE,
    ROWS,
    assert_ramp,
    ramp_hu,
    slice_world,
    stacked,
    write_series,
    write_slice,
)
from custom.data.canonicalise import CanonicaliseCT
from custom.data.ct_files import LoadCT
from custom.imaging.geometry import BiplanarGeometry
from custom.outputs.writers import save_dicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


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
    with caplog.at_level(logging.INFO, logger="custom.data.dicom_series"):
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
