"""Synthetic CTs shared by the CT tests: a head phantom on RAS grids, and DICOM series of a HU ramp."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from custom.data.head import connected_components
from custom.outputs.writers import save_dicom
from monai.data import MetaTensor
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

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
