"""Writing reconstructed CTs: NIfTI and DICOM series, on the geometry's grid, complete or absent.

A reconstruction lives on the canonical CT grid of a :class:`~custom.imaging.geometry.BiplanarGeometry`; its
affine and spacing come from that grid, never from the X-rays it was made from. Values are written as
int16 HU (rounded, clipped to the int16 range).

DICOM series: one axial slice per file, in the patient's LPS frame as DICOM requires: rows run
anterior -> posterior, columns the patient's right -> left (ImageOrientationPatient 1\\0\\0\\0\\1\\0), slice
``k`` at the grid's ``z_k``; CT Image Storage with fresh UIDs, Modality CT, RescaleSlope 1 and
RescaleIntercept 0 (stored values are HU). The series goes to a temporary folder beside the target
and is moved into place when every slice is written. :func:`save_dicom` saves a file in the DICOM file
format with pydicom 3 (the bundle's) or 2.4 (the MONAI Label environment's, whose ``pydicom-seg``
cannot import pydicom 3).

Bone surface: the iso-surface at a HU level (marching cubes, ITK's ``BinaryMask3DMeshSource``) as a
binary STL in LPS millimetres (the DICOM frame, which 3D Slicer assumes for STL; the header says
``SPACE=LPS``), triangles wound with outward normals.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
from custom.files import atomic_folder, atomic_write, refuse_existing
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.physics import BONE_HU
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

_PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3  # save_as takes enforce_file_format from pydicom 3


def _int16_hu(hu: torch.Tensor | np.ndarray, geometry: BiplanarGeometry) -> np.ndarray:
    """(X, Y, Z) int16 HU on the geometry's grid; ValueError for another shape or non-finite values."""
    volume = np.asarray(hu.detach().cpu() if isinstance(hu, torch.Tensor) else hu, dtype=np.float64)
    volume = volume.reshape(volume.shape[-3:]) if volume.ndim > 3 and volume.shape[0] == 1 else volume
    if volume.shape != tuple(geometry.vol_shape):
        raise ValueError(f"the CT must be (X, Y, Z) = {geometry.vol_shape} on the geometry's grid, got {volume.shape}.")
    if not np.isfinite(volume).all():
        raise ValueError("the CT contains NaN or infinite values.")
    info = np.iinfo(np.int16)
    return np.clip(np.round(volume), info.min, info.max).astype(np.int16)


def save_dicom(dataset: pydicom.Dataset, path: str | os.PathLike) -> None:
    """Save ``dataset`` as a DICOM file (preamble, ``DICM``, file meta) with its file meta's transfer syntax.

    pydicom 3 does so with ``enforce_file_format=True``; pydicom 2.4 with ``write_like_original=False``,
    and it wants the encoding on the dataset.
    """
    if _PYDICOM_3:
        dataset.save_as(path, enforce_file_format=True)
        return
    syntax = dataset.file_meta.TransferSyntaxUID
    dataset.is_little_endian, dataset.is_implicit_VR = syntax.is_little_endian, syntax.is_implicit_VR
    dataset.save_as(path, write_like_original=False)


def write_ct_nifti(
    path: str | os.PathLike, hu: torch.Tensor | np.ndarray, geometry: BiplanarGeometry, overwrite: bool = False
) -> Path:
    """Write a CT (X, Y, Z) or (1, X, Y, Z) in HU as int16 NIfTI with the grid's RAS affine (mm).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: the CT is not on the geometry's grid or not finite.
    """
    image = nib.Nifti1Image(_int16_hu(hu, geometry), geometry.affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(geometry.affine, code=1)  # scanner-anatomical
    image.set_sform(geometry.affine, code=1)
    return atomic_write(path, lambda tmp: nib.save(image, tmp), overwrite)


def write_label_nifti(
    path: str | os.PathLike, labels: torch.Tensor | np.ndarray, geometry: BiplanarGeometry, overwrite: bool = False
) -> Path:
    """Write a label map (X, Y, Z) or (1, X, Y, Z) of small integers as uint8 NIfTI with the grid's affine.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: the map is not on the geometry's grid or holds values outside 0-255.
    """
    volume = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    volume = volume.reshape(volume.shape[-3:]) if volume.ndim > 3 and volume.shape[0] == 1 else volume
    if volume.shape != tuple(geometry.vol_shape) or volume.min() < 0 or volume.max() > 255:
        raise ValueError(f"labels must be (X, Y, Z) = {geometry.vol_shape} in 0-255, got {volume.shape}.")
    image = nib.Nifti1Image(volume.astype(np.uint8), geometry.affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(geometry.affine, code=1)
    image.set_sform(geometry.affine, code=1)
    return atomic_write(path, lambda tmp: nib.save(image, tmp), overwrite)


def write_ct_dicom(
    folder: str | os.PathLike,
    hu: torch.Tensor | np.ndarray,
    geometry: BiplanarGeometry,
    overwrite: bool = False,
    patient_id: str = "ANONYMOUS",
    series_description: str = "PSCT-Net reconstruction from biplanar X-rays",
) -> Path:
    """Write a CT in HU as a DICOM series, one axial slice per file (``slice_NNNN.dcm``), into ``folder``.

    Args:
        folder: the series folder; created, or replaced when ``overwrite``.
        hu: (X, Y, Z) or (1, X, Y, Z) CT numbers on the geometry's grid, HU.
        geometry: the grid: spacing and positions, mm.
        overwrite: replace an existing folder. Defaults to False.
        patient_id: PatientID (and PatientName). Defaults to ``ANONYMOUS``.
        series_description: SeriesDescription.

    Raises:
        FileExistsError: ``folder`` exists and ``overwrite`` is False.
        ValueError: the CT is not on the geometry's grid or not finite.
    """
    folder = Path(folder)
    refuse_existing([folder], overwrite)
    volume = _int16_hu(hu, geometry)  # (X, Y, Z), RAS
    x, y, z = (c.numpy() for c in geometry.voxel_coordinates())  # mm, RAS
    spacing = geometry.vol_spacing
    now = datetime.datetime.now()
    shared = {
        "StudyInstanceUID": generate_uid(),
        "SeriesInstanceUID": generate_uid(),
        "FrameOfReferenceUID": generate_uid(),
        "StudyDate": now.strftime("%Y%m%d"),
        "StudyTime": now.strftime("%H%M%S"),
    }

    def write_slices(staging: Path) -> None:
        for k in range(volume.shape[2]):
            # rows: anterior -> posterior (RAS y falling), columns: patient's right -> left (RAS x falling)
            pixels = np.ascontiguousarray(volume[::-1, ::-1, k].T)  # (rows Y, columns X)
            first = (-x[-1], -y[-1], z[k])  # LPS position of pixel (0, 0): RAS (x max, y max, z_k)
            dataset = _slice_dataset(pixels, first, spacing, k, shared, patient_id, series_description)
            save_dicom(dataset, staging / f"slice_{k:04d}.dcm")

    return atomic_folder(folder, write_slices, overwrite)


def _slice_dataset(
    pixels: np.ndarray,
    position: tuple[float, float, float],
    spacing: float,
    index: int,
    shared: dict[str, str],
    patient_id: str,
    series_description: str,
) -> FileDataset:
    """One CT Image Storage object for an axial slice (rows, columns) of int16 HU at an LPS position (mm)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    for name, value in shared.items():
        setattr(ds, name, value)
    ds.SeriesDate, ds.SeriesTime = ds.StudyDate, ds.StudyTime
    ds.Modality = "CT"
    ds.Manufacturer = "psctnet-bundle"
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    for type_2 in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        setattr(ds, type_2, "")  # required, may be empty
    ds.PositionReferenceIndicator = ""
    ds.SeriesDescription = series_description
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = f"{position[2]:.4f}"
    ds.PixelSpacing = [spacing, spacing]  # mm: between rows, between columns
    ds.SliceThickness = ds.SpacingBetweenSlices = spacing
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 400, 2000  # a bone window
    ds.PixelData = pixels.tobytes()
    return ds


class NoBoneError(ValueError):
    """The CT has no voxel above the bone level, so there is no surface."""


def bone_mesh(hu: torch.Tensor | np.ndarray, geometry: BiplanarGeometry, level_hu: float = BONE_HU) -> np.ndarray:
    """Triangles of the surface around voxels above ``level_hu`` (marching cubes), LPS mm: (T, 3, 3).

    The grid is padded with one empty voxel so the surface closes where bone touches the border.

    Raises:
        NoBoneError: no voxel above the level (a ValueError).
        ValueError: a CT not on the geometry's grid.
    """
    import itk  # heavy; only surfaces need it

    mask = np.pad(_int16_hu(hu, geometry) > level_hu, 1).astype(np.uint8)  # (X + 2, Y + 2, Z + 2)
    if not mask.any():
        raise NoBoneError(f"no voxel above {level_hu} HU: there is no bone surface to write.")
    # 1. marching cubes on the mask, in ITK's (i, j, k) = (x, y, z) voxel indices
    image = itk.image_from_array(np.ascontiguousarray(mask.transpose(2, 1, 0)))
    mesher = itk.BinaryMask3DMeshSource[type(image), itk.Mesh[itk.F, 3]].New(Input=image, ObjectValue=1)
    mesher.Update()
    mesh = mesher.GetOutput()
    points = itk.array_from_vector_container(mesh.GetPoints()).astype(np.float64) - 1  # unpadded indices
    cells = itk.array_from_vector_container(mesh.GetCellsArray()).reshape(-1, 5)  # (type, 3, a, b, c)
    # 2. voxel indices -> RAS mm -> LPS mm
    world = points @ geometry.affine[:3, :3].T + geometry.affine[:3, 3]
    triangles = (world * [-1.0, -1.0, 1.0])[cells[:, 2:]]  # (T, 3 corners, 3)
    # 3. outward normals: flip the winding if the enclosed volume comes out negative
    if _signed_volume(triangles) < 0:
        triangles = triangles[:, ::-1]
    return triangles


def _signed_volume(triangles: np.ndarray) -> float:
    """Volume enclosed by a closed triangle mesh (positive when the normals point outward), mm^3."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)


def write_bone_stl(
    path: str | os.PathLike,
    hu: torch.Tensor | np.ndarray,
    geometry: BiplanarGeometry,
    level_hu: float = BONE_HU,
    overwrite: bool = False,
) -> Path:
    """Write the bone surface at ``level_hu`` (HU) of a CT on the geometry's grid as a binary STL (LPS mm).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: no bone at the level, or a CT not on the grid.
    """
    refuse_existing([path], overwrite)
    triangles = bone_mesh(hu, geometry, level_hu).astype(np.float32)
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True).clip(min=1e-12)
    records = np.zeros(len(triangles), dtype=[("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])
    records["normal"], records["corners"] = normals, triangles
    header = f"psctnet-bundle bone surface at {level_hu:g} HU SPACE=LPS".encode().ljust(80, b" ")[:80]

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            handle.write(header)
            handle.write(np.uint32(len(records)).tobytes())
            handle.write(records.tobytes())

    return atomic_write(path, write, overwrite)


__all__ = [
    "NoBoneError",
    "bone_mesh",
    "save_dicom",
    "write_bone_stl",
    "write_ct_dicom",
    "write_ct_nifti",
    "write_label_nifti",
]
