from __future__ import annotations

import itk
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from custom.data.ct_files import LoadCT
from custom.imaging.geometry import BiplanarGeometry
from custom.outputs.writers import write_bone_stl, write_ct_dicom, write_ct_nifti

GEOMETRY = BiplanarGeometry(vol_shape=(12, 10, 8), vol_spacing=2.5)


@pytest.fixture
def ct() -> torch.Tensor:
    hu = torch.linspace(-1024, 2000, 12 * 10 * 8).reshape(12, 10, 8)
    hu[10, 2, 6] = 3000.0  # a marker: patient's right, posterior, superior
    return hu


def test_nifti_has_the_grid_affine_and_int16_hu(tmp_path, ct):
    path = write_ct_nifti(tmp_path / "case.nii.gz", ct[None], GEOMETRY)
    image = nib.load(path)
    assert image.get_data_dtype() == np.int16 and np.allclose(image.affine, GEOMETRY.affine)
    assert image.header.get_xyzt_units()[0] == "mm"
    assert image.get_qform(coded=True)[1] == image.get_sform(coded=True)[1] == 1  # both say: scanner space
    assert np.array_equal(np.asarray(image.dataobj), ct.round().short().numpy())
    loaded = LoadCT()(path)
    assert torch.allclose(loaded[0], ct.round()) and np.allclose(loaded.affine.numpy(), GEOMETRY.affine)


def test_dicom_series_reads_back_identically_with_pydicom_and_itk(tmp_path, ct):
    folder = write_ct_dicom(tmp_path / "series", ct, GEOMETRY)
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 8
    first = pydicom.dcmread(files[0])
    assert first.Modality == "CT" and first.SOPClassUID == pydicom.uid.CTImageStorage
    assert len({pydicom.dcmread(f).SOPInstanceUID for f in files}) == 8
    assert len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 1
    # our loader: same HU, same world positions (RAS)
    loaded = LoadCT()(folder)
    world = loaded.affine.numpy() @ np.array([*np.argwhere(loaded[0].numpy() == 3000)[0], 1.0])
    expected = GEOMETRY.affine @ np.array([10, 2, 6, 1.0])
    assert np.allclose(world, expected)
    assert np.isclose(loaded.float().mean().item(), ct.round().mean().item(), atol=1e-3)
    # ITK reads the series in LPS: the marker at the same place
    reader = itk.imread(str(folder), itk.SS)
    array = itk.array_view_from_image(reader)  # (slices, rows, columns)
    index = np.argwhere(array == 3000)[0][::-1]  # (column, row, slice)
    lps = np.asarray(reader.TransformIndexToPhysicalPoint([int(i) for i in index]))
    assert np.allclose(lps * [-1, -1, 1], expected[:3], atol=1e-3)


def test_nothing_is_overwritten_or_left_half_written(tmp_path, ct, monkeypatch):
    write_ct_nifti(tmp_path / "case.nii.gz", ct, GEOMETRY)
    write_ct_dicom(tmp_path / "series", ct, GEOMETRY)
    with pytest.raises(FileExistsError):
        write_ct_nifti(tmp_path / "case.nii.gz", ct, GEOMETRY)
    with pytest.raises(FileExistsError):
        write_ct_dicom(tmp_path / "series", ct, GEOMETRY)
    write_ct_dicom(tmp_path / "series", ct + 1, GEOMETRY, overwrite=True)
    assert int(pydicom.dcmread(tmp_path / "series" / "slice_0000.dcm").pixel_array.min()) == -1023
    # a crash while writing slices leaves neither a new folder nor temporary files
    calls = []

    def crash_on_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    original = pydicom.dataset.FileDataset.save_as
    monkeypatch.setattr(pydicom.dataset.FileDataset, "save_as", crash_on_third)
    with pytest.raises(OSError):
        write_ct_dicom(tmp_path / "other", ct, GEOMETRY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.nii.gz", "series"]
    # ... and a crash while overwriting keeps the old series whole
    calls.clear()
    with pytest.raises(OSError):
        write_ct_dicom(tmp_path / "series", ct + 2, GEOMETRY, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.nii.gz", "series"]
    assert len(list((tmp_path / "series").glob("*.dcm"))) == 8
    assert int(pydicom.dcmread(tmp_path / "series" / "slice_0000.dcm").pixel_array.min()) == -1023


@pytest.mark.parametrize("volume", [torch.zeros(12, 10, 7), torch.full((12, 10, 8), float("nan"))])
def test_ill_arg(tmp_path, volume):
    with pytest.raises(ValueError):
        write_ct_nifti(tmp_path / "x.nii.gz", volume, GEOMETRY)
    with pytest.raises(ValueError):
        write_ct_dicom(tmp_path / "x", volume, GEOMETRY)
    assert list(tmp_path.iterdir()) == []


def _read_stl(path) -> tuple[bytes, np.ndarray, np.ndarray]:
    data = path.read_bytes()
    count = int(np.frombuffer(data, np.uint32, 1, 80)[0])
    records = np.frombuffer(data, [("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attribute", "<u2")], count, 84)
    assert len(data) == 84 + 50 * count
    return data[:80], records["normal"], records["corners"]


def test_bone_stl_is_a_closed_outward_surface_in_lps(tmp_path):
    geometry = BiplanarGeometry(vol_shape=(48,) * 3, vol_spacing=1.0)
    centre = np.array([6.0, -4.0, 3.0])  # RAS mm: right, posterior, superior of the isocentre
    x, y, z = torch.meshgrid(*geometry.voxel_coordinates(torch.float64), indexing="ij")
    inside = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 < 12.0**2
    hu = torch.where(inside, 1000.0, -1000.0)
    path = write_bone_stl(tmp_path / "bone.stl", hu, geometry, level_hu=300)
    header, normals, corners = _read_stl(path)
    assert b"SPACE=LPS" in header and len(corners) > 500
    lps_centre = centre * [-1, -1, 1]
    radii = np.linalg.norm(corners.reshape(-1, 3) - lps_centre, axis=1)
    assert abs(radii.mean() - 12.0) < 1.0  # the sphere, where it is, in LPS
    a, b, c = corners[:, 0].astype(np.float64), corners[:, 1], corners[:, 2]
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
    assert volume == pytest.approx(4 / 3 * np.pi * 12.0**3, rel=0.1)  # closed, and wound outward
    outward = np.einsum("ij,ij->i", normals, corners.mean(1) - lps_centre)
    assert (outward > 0).mean() > 0.95
    with pytest.raises(FileExistsError):
        write_bone_stl(path, hu, geometry)
    with pytest.raises(ValueError, match="no voxel above"):
        write_bone_stl(tmp_path / "none.stl", torch.full_like(hu, -1000.0), geometry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bone.stl"]
