"""CT files: reading a CT file or DICOM series into a HU MetaTensor in the file's own voxel order.

A CT file becomes a ``MetaTensor`` (1, I, J, K), float32, in Hounsfield units, in the file's own voxel
order; its ``affine`` maps voxel indices to RAS+ world millimetres (the MONAI/nibabel convention: x to
the patient's right, y anterior, z superior) and its meta holds ``filename_or_obj``, ``spacing`` (mm,
the lengths of the affine's columns), ``original_affine``, ``space`` ("RAS") and ``format``.

- NIfTI (``.nii``, ``.nii.gz``) through nibabel, which applies ``scl_slope``/``scl_inter``.
- NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) through ITK, whose LPS world is turned
  into RAS by negating the first two world axes.
- DICOM series: a folder, or one file of the series, through :mod:`custom.data.dicom_series` (the rules
  for skipped files, sorting, rescale, gantry tilt and uneven spacing are there); its LPS world is
  turned into RAS the same way.

:class:`~custom.data.canonicalise.CanonicaliseCT` then puts any loaded CT onto the geometry's grid.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from custom.data.dicom_series import read_dicom_series
from custom.errors import InvalidInputError, MissingInputError
from custom.files import has_dicom_marker
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
ITK_SUFFIXES: tuple[str, ...] = (".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".ima", "")  # many scanners write DICOM files without a suffix

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # negate x and y; its own inverse


def _suffix(path: Path) -> str:
    """The file's format suffix, lower case; ``.nii.gz`` counts as one."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes (3,) in mm: the lengths of the affine's first three columns."""
    return np.linalg.norm(affine[:3, :3], axis=0)


def read_ct(
    path: str | os.PathLike, series_uid: str | None = None, allow_tilt: bool = True, resample_uneven: bool = True
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a CT file or DICOM series as HU in its own voxel order.

    Args:
        path: a NIfTI, NRRD or MetaImage file, a DICOM series folder or one file of a DICOM series.
        series_uid: the SeriesInstanceUID to read from a DICOM folder holding several series.
            Defaults to None: the folder must hold one series, or ``path`` names a file of it.
        allow_tilt: load gantry-tilted DICOM series with a sheared affine. Defaults to True.
        resample_uneven: resample unevenly spaced DICOM slices onto an even grid. Defaults to True.

    Returns:
        ``(volume, affine, meta)``: volume (I, J, K) float32 HU, affine (4, 4) voxel index -> RAS+ mm,
        and a dict of metadata (see the module docstring).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: an unknown format, an unreadable file, or a DICOM series that cannot be stacked.
    """
    # 1. dispatch on what the path is
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"no CT at {path}.")
    suffix = _suffix(path)
    if path.is_dir():
        volume, affine, meta = _read_dicom(path, series_uid, None, allow_tilt, resample_uneven)
    elif suffix in NIFTI_SUFFIXES:
        volume, affine, meta = _read_nifti(path)
    elif suffix in ITK_SUFFIXES:
        volume, affine, meta = _read_itk(path)
    elif suffix in DICOM_SUFFIXES or has_dicom_marker(path):  # DICOM files are often named by UID
        volume, affine, meta = _read_dicom(path.parent, series_uid, path, allow_tilt, resample_uneven)
    else:
        known = NIFTI_SUFFIXES + ITK_SUFFIXES + DICOM_SUFFIXES[:-1]
        raise InvalidInputError(f"unknown CT format {suffix!r} of {path}; expected one of {known} or a DICOM folder.")

    # 2. common metadata
    meta.update(filename_or_obj=str(path), spacing=voxel_spacing(affine), original_affine=affine.copy(), space="RAS")
    return volume.astype(np.float32, copy=False), affine, meta


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A NIfTI file through nibabel (scaling applied); 4D files must have a single volume."""
    try:
        image = nib.load(path)
        volume = np.asarray(image.get_fdata(dtype=np.float32))
    except Exception as error:  # nibabel raises many types for broken files (ImageFileError, EOFError, zlib)
        raise InvalidInputError(f"cannot read NIfTI {path}: {error}") from error
    while volume.ndim > 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise InvalidInputError(f"a CT must be 3D, got shape {volume.shape} in {path}.")
    return volume, np.asarray(image.affine, dtype=np.float64), {"format": "nifti"}


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A NRRD or MetaImage file through ITK; ITK's LPS world becomes RAS."""
    import itk  # imported here: loading ITK costs seconds and only these formats need it

    # 1. check dimension and components before reading pixels
    io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
    if io is None:
        raise InvalidInputError(f"cannot read {path}: ITK finds no reader for it.")
    try:
        io.SetFileName(str(path))
        io.ReadImageInformation()
    except RuntimeError as error:
        raise InvalidInputError(f"cannot read {path}: {error}") from error
    if io.GetNumberOfDimensions() != 3 or io.GetNumberOfComponents() != 1:
        raise InvalidInputError(
            f"a CT must be 3D with one value per voxel, got {io.GetNumberOfDimensions()}D with "
            f"{io.GetNumberOfComponents()} components in {path}."
        )

    # 2. pixels (ITK arrays are (K, J, I)) and the LPS affine
    try:
        image = itk.imread(str(path), itk.F)
    except RuntimeError as error:
        raise InvalidInputError(f"cannot read the voxels of {path}: {error}") from error
    volume = itk.array_from_image(image).transpose(2, 1, 0)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection(), dtype=np.float64) @ np.diag(np.asarray(image.GetSpacing()))
    lps[:3, 3] = np.asarray(image.GetOrigin(), dtype=np.float64)
    return np.ascontiguousarray(volume), _LPS_TO_RAS @ lps, {"format": "itk"}


def _read_dicom(
    folder: Path, series_uid: str | None, chosen: Path | None, allow_tilt: bool, resample_uneven: bool
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A DICOM series through :func:`~custom.data.dicom_series.read_dicom_series`; its LPS world becomes RAS."""
    volume, lps, meta = read_dicom_series(folder, series_uid, chosen, allow_tilt, resample_uneven)
    return volume, _LPS_TO_RAS @ lps, meta


class LoadCT(Transform):
    """Read a CT file or DICOM series as a HU MetaTensor in the file's own voxel order.

    See the module docstring for the formats and :mod:`custom.data.dicom_series` for the DICOM rules
    (sorting, rescale, tilt, uneven spacing, skipped files).

    Args:
        series_uid: the SeriesInstanceUID to read from a DICOM folder holding several series.
            Defaults to None (the folder's only series, or the series of the file given).
        allow_tilt: load gantry-tilted DICOM series with a sheared affine; False refuses them.
            Defaults to True.
        resample_uneven: interpolate unevenly spaced DICOM slices onto an even grid; False refuses
            them. Defaults to True.

    Returns (from ``__call__(path)``):
        MetaTensor (1, I, J, K) float32 HU with ``affine`` voxel index -> RAS+ mm.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: an unknown format, a corrupt file, a folder without DICOM CT images, several
            series and no ``series_uid``, or a series refused by the rules above.
    """

    def __init__(self, series_uid: str | None = None, allow_tilt: bool = True, resample_uneven: bool = True) -> None:
        self.series_uid = series_uid
        self.allow_tilt = allow_tilt
        self.resample_uneven = resample_uneven

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        volume, affine, meta = read_ct(path, self.series_uid, self.allow_tilt, self.resample_uneven)
        return MetaTensor(
            torch.from_numpy(np.ascontiguousarray(volume))[None], affine=torch.as_tensor(affine), meta=meta
        )


class LoadCTd(MapTransform):
    """Dictionary wrapper of :class:`LoadCT`: replaces each path under ``keys`` with its CT.

    Args:
        keys: keys of the paths to read. Defaults to "ct".
        series_uid, allow_tilt, resample_uneven: as :class:`LoadCT`.
        allow_missing_keys: skip keys that are absent. Defaults to False.
    """

    def __init__(
        self,
        keys: KeysCollection = "ct",
        series_uid: str | None = None,
        allow_tilt: bool = True,
        resample_uneven: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadCT(series_uid, allow_tilt, resample_uneven)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


__all__ = ["DICOM_SUFFIXES", "ITK_SUFFIXES", "NIFTI_SUFFIXES", "LoadCT", "LoadCTd", "read_ct", "voxel_spacing"]
