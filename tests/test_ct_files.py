"""CT files: NIfTI, NRRD and MetaImage load the same world; what LoadCT refuses, per format."""

from __future__ import annotations

from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from ct_cases import COLUMNS, OBLIQUE, ROWS, reoriented, stacked, write_series, write_slice
from custom.data.ct_files import LoadCT


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
