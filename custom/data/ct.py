"""CT volumes: reading files into HU MetaTensors and canonicalising them onto the geometry's grid.

Reading (:class:`LoadCT`, :class:`LoadCTd`)
    A CT file becomes a ``MetaTensor`` (1, I, J, K), float32, in Hounsfield units, in the file's own
    voxel order; its ``affine`` maps voxel indices to RAS+ world millimetres (the MONAI/nibabel
    convention) and its meta holds ``filename_or_obj``, ``spacing`` (mm, the lengths of the affine's
    columns), ``original_affine``, ``space`` ("RAS") and ``format``.

    - NIfTI (``.nii``, ``.nii.gz``) through nibabel, which applies ``scl_slope``/``scl_inter``.
    - NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) through ITK, whose LPS world is
      turned into RAS by negating the first two world axes.
    - DICOM series: a folder, or one file of the series (which then picks its series from the
      folder). Only the folder's own files are read (no subfolders); files that are not DICOM, DICOM
      files that are not images (DICOMDIR, reports), localisers and other modalities are skipped and
      logged. Voxel axes are (column, row, slice), slices sorted by their position along the slice
      normal (ImageOrientationPatient x ImagePositionPatient), never by file name or InstanceNumber;
      each slice's RescaleSlope/RescaleIntercept (the modality LUT) gives HU.
    - Gantry tilt (slices stacked along a direction that is not their normal) is kept exactly: the
      affine's slice column is the true step between slice positions, so the affine is sheared and
      :class:`CanonicaliseCT` resamples it correctly. ``allow_tilt=False`` refuses such series.
    - Uneven slice spacing (a missing slice, mixed spacing) is resampled by linear interpolation
      between neighbouring slices onto an even grid at the median spacing, and logged;
      ``resample_uneven=False`` refuses such series. Slices off one straight line, or two slices at
      one position, are always refused.

Canonicalisation (:class:`CanonicaliseCT`, :class:`CanonicaliseCTd`)
    Any loaded CT becomes the canonical volume of a :class:`~custom.imaging.geometry.BiplanarGeometry`:
    (1, X, Y, Z) = ``geometry.vol_shape`` float32 HU in RAS order at ``geometry.vol_spacing`` with
    ``affine == geometry.affine``, the head centre at the isocentre (the world origin). See the class
    docstring for how the head is found and how intensities that are not HU are treated.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from custom.data.dicom_compat import apply_modality_lut
from custom.errors import InvalidInputError, MissingInputError
from custom.files import has_dicom_marker
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.physics import AIR_HU, gaussian_blur
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from pydicom.errors import InvalidDicomError

logger = logging.getLogger(__name__)

HU_RANGE: tuple[float, float] = (AIR_HU, 3071.0)  # HU, the 12-bit range CT scanners store

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
ITK_SUFFIXES: tuple[str, ...] = (".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".ima", "")  # many scanners write DICOM files without a suffix

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # negate x and y; its own inverse

# Tolerances for DICOM slice positions, relative to the length they could move an image feature by.
_LINE_TOLERANCE = 0.1  # fraction of a pixel: how far a slice may lie off the line through the others
_EVEN_TOLERANCE = 0.01  # fraction of a slice step: how far a slice may lie off an even grid
_TILT_TOLERANCE = 0.01  # degrees between the stacking direction and the slice normal counted as tilt
_ORIENTATION_TOLERANCE = 1e-4  # difference of direction cosines between slices of one series

_LOCATE_SPACING = 2.0  # mm, the finest grid the head is located on (connected components cost time)


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def _suffix(path: Path) -> str:
    """The file's format suffix, lower case; ``.nii.gz`` counts as one."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _spacing(affine: np.ndarray) -> np.ndarray:
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
        volume, affine, meta = _read_dicom_series(path, series_uid, None, allow_tilt, resample_uneven)
    elif suffix in NIFTI_SUFFIXES:
        volume, affine, meta = _read_nifti(path)
    elif suffix in ITK_SUFFIXES:
        volume, affine, meta = _read_itk(path)
    elif suffix in DICOM_SUFFIXES or has_dicom_marker(path):  # DICOM files are often named by UID
        volume, affine, meta = _read_dicom_series(path.parent, series_uid, path, allow_tilt, resample_uneven)
    else:
        known = NIFTI_SUFFIXES + ITK_SUFFIXES + DICOM_SUFFIXES[:-1]
        raise InvalidInputError(f"unknown CT format {suffix!r} of {path}; expected one of {known} or a DICOM folder.")

    # 2. common metadata
    meta.update(filename_or_obj=str(path), spacing=_spacing(affine), original_affine=affine.copy(), space="RAS")
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


# ---- DICOM series ------------------------------------------------------------------------------


@dataclass
class _Slice:
    path: Path
    header: pydicom.Dataset

    @property
    def position(self) -> np.ndarray:
        """ImagePositionPatient (3,), LPS mm: the centre of the first pixel."""
        return np.asarray(self.header.ImagePositionPatient, dtype=np.float64)

    @property
    def orientation(self) -> np.ndarray:
        """ImageOrientationPatient (6,): the row direction (column index grows) then the column direction."""
        return np.asarray(self.header.ImageOrientationPatient, dtype=np.float64)


_IMAGE_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")


def _scan_dicom_folder(folder: Path) -> tuple[list[_Slice], list[str]]:
    """The CT image slices of a folder (headers only) and a note of each kind of file skipped."""
    slices, skipped = [], {"not DICOM": 0, "DICOM without image geometry": 0, "localiser": 0}
    other_modalities: dict[str, int] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            skipped["not DICOM"] += 1
            continue
        except Exception as error:  # a DICOM preamble followed by a broken header
            raise InvalidInputError(f"corrupt DICOM file {path}: {error}") from error
        if not all(tag in header for tag in _IMAGE_TAGS):
            skipped["DICOM without image geometry"] += 1
        elif "LOCALIZER" in _values(header.get("ImageType", [])):
            skipped["localiser"] += 1
        elif (header.get("Modality") or "CT") != "CT":
            other_modalities[header.Modality] = other_modalities.get(header.Modality, 0) + 1
        else:
            slices.append(_Slice(path, header))
    notes = [f"{n} {kind}" for kind, n in skipped.items() if n]
    notes += [f"{n} {modality}" for modality, n in sorted(other_modalities.items())]
    return slices, notes


def _values(value: Any) -> list[str]:
    """A DICOM multi-value (or a single value) as a list of upper-case strings."""
    return [str(value).upper()] if isinstance(value, str) else [str(v).upper() for v in value]


def _choose_series(slices: list[_Slice], folder: Path, series_uid: str | None, notes: list[str]) -> list[_Slice]:
    """The slices of one series: the one asked for, or the only one."""
    by_series: dict[str, list[_Slice]] = {}
    for s in slices:
        by_series.setdefault(str(s.header.get("SeriesInstanceUID", "")), []).append(s)
    if not by_series:
        found = f" (skipped {', '.join(notes)})" if notes else " (no files in it; subfolders are not searched)"
        raise InvalidInputError(f"no DICOM CT images in {folder}{found}.")
    listing = "; ".join(
        f"{uid} ({len(group)} slices, {group[0].header.get('SeriesDescription', '')!r})"
        for uid, group in sorted(by_series.items())
    )
    if series_uid is None:
        if len(by_series) > 1:
            raise InvalidInputError(f"{len(by_series)} CT series in {folder}; choose one with series_uid: {listing}.")
        series_uid = next(iter(by_series))
    if series_uid not in by_series:
        raise InvalidInputError(f"series {series_uid!r} is not in {folder}; it holds: {listing}.")
    if notes:
        logger.info("%s: skipped %s.", folder, ", ".join(notes))
    return by_series[series_uid]


def _read_dicom_series(
    folder: Path, series_uid: str | None, chosen: Path | None, allow_tilt: bool, resample_uneven: bool
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Stack one DICOM CT series of ``folder`` (the series of the file ``chosen`` if given)."""
    # 1. the series: headers only
    if chosen is not None and series_uid is None:
        try:
            header = pydicom.dcmread(chosen, stop_before_pixels=True)
        except InvalidDicomError as error:
            raise InvalidInputError(f"{chosen} is not a DICOM file.") from error
        except Exception as error:
            raise InvalidInputError(f"corrupt DICOM file {chosen}: {error}") from error
        if all(tag in header for tag in _IMAGE_TAGS) and "SeriesInstanceUID" in header:
            series_uid = str(header.SeriesInstanceUID)
    slices, notes = _scan_dicom_folder(folder)
    series = _choose_series(slices, folder, series_uid, notes)
    uid = str(series[0].header.get("SeriesInstanceUID", ""))
    if len(series) < 2:
        raise InvalidInputError(f"series {uid} in {folder} has {len(series)} slice; a CT volume needs at least 2.")
    if int(series[0].header.get("NumberOfFrames", 1) or 1) > 1:
        raise InvalidInputError(f"multi-frame DICOM (enhanced CT) is not supported: {series[0].path}.")

    # 2. one orientation, one pixel grid
    first = series[0].header
    for s in series[1:]:
        h = s.header
        if (h.Rows, h.Columns) != (first.Rows, first.Columns):
            raise InvalidInputError(f"slices of series {uid} differ in size: {s.path} is {h.Rows}x{h.Columns}.")
        if not np.allclose(s.orientation, series[0].orientation, atol=_ORIENTATION_TOLERANCE):
            raise InvalidInputError(f"slices of series {uid} differ in ImageOrientationPatient: {s.path}.")
        if not np.allclose(np.asarray(h.PixelSpacing, float), np.asarray(first.PixelSpacing, float), rtol=1e-4):
            raise InvalidInputError(f"slices of series {uid} differ in PixelSpacing: {s.path}.")
    row_dir, col_dir = (v / np.linalg.norm(v) for v in np.split(series[0].orientation, 2))  # LPS, unit (rounded)
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)  # mm between rows, between columns
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)

    # 3. sort along the normal; positions must lie on one line
    series.sort(key=lambda s: float(s.position @ normal))
    positions = np.stack([s.position for s in series])  # (N, 3) LPS mm
    along_normal = positions @ normal
    if np.any(np.diff(along_normal) < 1e-3):
        raise InvalidInputError(
            f"series {uid} has several slices at one position (several acquisitions, echoes or phases?); "
            "separate them into folders."
        )
    span = positions[-1] - positions[0]
    direction = span / np.linalg.norm(span)
    offsets = positions - positions[0]
    off_line = np.linalg.norm(offsets - np.outer(offsets @ direction, direction), axis=1).max()
    if off_line > _LINE_TOLERANCE * min(row_spacing, col_spacing):
        raise InvalidInputError(f"slices of series {uid} do not lie on one line (one is {off_line:.2f} mm off it).")

    # 4. gantry tilt: the angle between the stacking direction and the slice normal
    tilt = math.degrees(math.acos(min(1.0, abs(float(direction @ normal)))))
    if tilt > _TILT_TOLERANCE:
        if not allow_tilt:
            raise InvalidInputError(
                f"series {uid} has a gantry tilt of {tilt:.2f} degrees; load it with allow_tilt=True "
                "(a sheared affine that CanonicaliseCT resamples)."
            )
        logger.info("%s: gantry tilt of %.2f degrees kept as a sheared affine.", folder, tilt)

    # 5. pixels in HU, stacked as (column, row, slice)
    volume = np.stack([_slice_hu(s) for s in series], axis=-1)  # (I, J, N)

    # 6. even spacing, or resample onto an even grid at the median step
    distance = offsets @ direction  # (N,) mm along the stacking line
    steps = np.diff(distance)
    median_step = float(np.median(steps))
    uneven = np.abs(distance - np.arange(len(series)) * distance[-1] / (len(series) - 1)).max()
    resampled = bool(uneven > _EVEN_TOLERANCE * median_step)
    if resampled:
        if not resample_uneven:
            raise InvalidInputError(
                f"series {uid} has uneven slice spacing (steps {steps.min():.3g} to {steps.max():.3g} mm); "
                "load it with resample_uneven=True to interpolate onto an even grid."
            )
        volume = _even_slices(volume, distance, median_step)
        logger.warning(
            "%s: uneven slice spacing (%.3g to %.3g mm) interpolated onto %d slices %.3g mm apart.",
            folder,
            steps.min(),
            steps.max(),
            volume.shape[-1],
            distance[-1] / (volume.shape[-1] - 1),
        )
    step = span / (volume.shape[-1] - 1)  # (3,) LPS mm between consecutive (even) slices

    # 7. the affine: column index along the row direction, row index along the column direction
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    meta = {"format": "dicom", "series_uid": uid, "gantry_tilt": tilt, "slices_resampled": resampled}  # tilt: degrees
    return volume, _LPS_TO_RAS @ lps, meta


def _slice_hu(item: _Slice) -> np.ndarray:
    """One slice's pixels in HU (modality LUT applied), transposed to (columns, rows)."""
    try:
        dataset = pydicom.dcmread(item.path)
        pixels = dataset.pixel_array
    except Exception as error:
        syntax = getattr(getattr(item.header, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise InvalidInputError(
            f"cannot decode the pixels of {item.path} (transfer syntax {syntax}): {error}. Compressed "
            "DICOM may need a pydicom decoder plugin (pylibjpeg, gdcm)."
        ) from error
    if pixels.ndim != 2:
        raise InvalidInputError(f"expected one greyscale image in {item.path}, got pixel array {pixels.shape}.")
    return np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float32).T


def _even_slices(volume: np.ndarray, distance: np.ndarray, step: float) -> np.ndarray:
    """Linear interpolation of slices (I, J, N) at ``distance`` (N,) mm onto an even grid about ``step`` mm."""
    count = max(2, int(round(distance[-1] / step)) + 1)
    targets = np.linspace(0.0, distance[-1], count)
    below = np.clip(np.searchsorted(distance, targets, side="right") - 1, 0, len(distance) - 2)
    weight = ((targets - distance[below]) / (distance[below + 1] - distance[below])).astype(np.float32)
    return volume[..., below] * (1 - weight) + volume[..., below + 1] * weight


class LoadCT(Transform):
    """Read a CT file or DICOM series as a HU MetaTensor in the file's own voxel order.

    See the module docstring for the formats and the DICOM rules (sorting, rescale, tilt, uneven
    spacing, skipped files).

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


# ------------------------------------------------------------------------------------------------
# Canonicalisation
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadBox:
    """Where the head is in a CT's world (RAS mm).

    Attributes:
        lower: (3,) lowest x, y, z of the box, mm.
        upper: (3,) highest x, y, z of the box, mm.
        located_by: ``"bone"`` (the skull), ``"body"`` (no bone found) or ``"volume"`` (nothing above
            the body threshold: the scan's own box).
    """

    lower: np.ndarray  # (3,) mm
    upper: np.ndarray  # (3,) mm
    located_by: str

    @property
    def centre(self) -> np.ndarray:
        """(3,) centre of the box, mm."""
        return (self.lower + self.upper) / 2

    @property
    def extent(self) -> np.ndarray:
        """(3,) size of the box, mm."""
        return self.upper - self.lower


def connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Face-connected (6-neighbour) components of a 3D mask.

    Pointer-jumping union-find on the grid in plain torch (no SciPy; ITK's filters take seconds to
    load): every voxel is labelled by its root, the smallest flat index of its component found so
    far; each round hooks every root onto the smallest root next to any of its voxels, then
    compresses the paths, until no two neighbours disagree (a few rounds).

    Args:
        mask: (I, J, K) bool.

    Returns:
        ``(labels, sizes)``: labels (I, J, K) int64, -1 outside the mask and 0 .. C - 1 inside with 0
        the largest component; sizes (C,) voxels, in decreasing order.
    """
    # 1. crop to the mask; every foreground voxel its own root; the background points at the sentinel n
    labels = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
    if not bool(mask.any()):
        return labels, torch.zeros(0, dtype=torch.long, device=mask.device)
    window = []
    for axis in range(3):
        hits = torch.nonzero(mask.any(dim=[d for d in range(3) if d != axis])).flatten()
        window.append(slice(int(hits[0]), int(hits[-1]) + 1))
    mask = mask[tuple(window)]
    n = mask.numel()
    label = torch.where(mask, torch.arange(n, device=mask.device).view(mask.shape), n)
    parent = torch.arange(n + 1, device=mask.device)

    # 2. hook roots onto the smallest neighbouring root and compress, until stable
    while True:
        low = label.clone()
        for axis in range(3):
            k = mask.shape[axis]
            before, after = low.narrow(axis, 0, k - 1), low.narrow(axis, 1, k - 1)
            before.copy_(torch.minimum(before, label.narrow(axis, 1, k - 1)))
            after.copy_(torch.minimum(after, label.narrow(axis, 0, k - 1)))
        low = torch.where(mask, low, n)
        parent = parent.scatter_reduce(0, label.flatten(), low.flatten(), reduce="amin")
        while not torch.equal(jumped := parent[parent], parent):
            parent = jumped
        relabelled = parent[label]
        if torch.equal(relabelled, label):
            break
        label = relabelled

    # 3. number the components by decreasing size
    counts = torch.bincount(label.flatten(), minlength=n + 1)[:n]
    roots = torch.nonzero(counts).flatten()
    sizes = counts[roots]
    order = torch.argsort(sizes, descending=True, stable=True)
    rank = torch.full((n + 1,), -1, dtype=torch.long, device=mask.device)
    rank[roots[order]] = torch.arange(len(order), device=mask.device)
    labels[tuple(window)] = rank[label]
    return labels, sizes[order]


def _voxel_box(mask: torch.Tensor, affine: np.ndarray, height: float) -> tuple[np.ndarray, np.ndarray]:
    """World box (lower, upper) (3,) mm of a non-empty mask's voxels within ``height`` mm below its top."""
    index = torch.nonzero(mask).double().cpu().numpy()  # (M, 3)
    world = index @ affine[:3, :3].T + affine[:3, 3]  # (M, 3) mm, voxel centres
    half = np.abs(affine[:3, :3]).sum(axis=1) / 2  # (3,) mm, half the world extent of one voxel
    top = world[:, 2].max() + half[2]
    world = world[world[:, 2] >= top - height + half[2]]
    return world.min(axis=0) - half, world.max(axis=0) + half


def locate_head(
    mean: torch.Tensor,
    peak: torch.Tensor,
    affine: np.ndarray,
    body_threshold: float = -500.0,
    bone_threshold: float = 300.0,
    head_height: float = 230.0,
    min_bone_fraction: float = 0.01,
) -> HeadBox:
    """Find the skull's bounding box in a (coarse) CT.

    The rule:

    1. body: the largest face-connected component of ``mean > body_threshold``; this drops the couch,
       head rests, immobilisation masks and noise, which air separates from the head;
    2. bone: ``peak > bone_threshold`` inside the body (grown by one voxel, so thin bone whose block
       mean is air still counts), keeping components of at least ``min_bone_fraction`` of the largest
       (drops specks of noise, calcifications and small metal);
    3. cranial part: only bone within ``head_height`` mm below the highest bone voxel counts, so a scan
       that goes on through the neck to the shoulders is located by its skull, with the vertex kept
       inside the grid;
    4. fall back to the body's box (same rule) without bone, and to the whole scan without a body.

    Args:
        mean: (I, J, K) HU, block means of the CT (its voxels, or blocks of them).
        peak: (I, J, K) HU, block maxima on the same grid (``mean`` itself for a fine CT).
        affine: (4, 4) voxel index of that grid -> RAS+ mm.
        body_threshold: HU above which a voxel is body. Defaults to -500.
        bone_threshold: HU above which a voxel is bone. Defaults to 300.
        head_height: cranio-caudal extent of the head, mm. Defaults to 230 (an adult skull with its
            mandible).
        min_bone_fraction: smallest bone component kept, as a fraction of the largest. Defaults to 0.01.
    """
    # 1. body: the largest connected component above the body threshold
    labels, _ = connected_components(mean > body_threshold)
    body = labels == 0
    if not bool(body.any()):
        edges = np.array([[-0.5] * 3, [n - 0.5 for n in mean.shape]])  # voxel indices of the scan's faces
        corners = np.stack(np.meshgrid(*edges.T, indexing="ij"), -1).reshape(-1, 3)
        world = corners @ affine[:3, :3].T + affine[:3, 3]  # (8, 3) mm
        return HeadBox(world.min(axis=0), world.max(axis=0), "volume")

    # 2. bone inside the (slightly grown) body, without specks
    grown = F.max_pool3d(body[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
    bone_labels, sizes = connected_components((peak > bone_threshold) & grown)
    if len(sizes):
        keep = int((sizes >= min_bone_fraction * sizes[0]).sum())
        bone = (bone_labels >= 0) & (bone_labels < keep)
        return HeadBox(*_voxel_box(bone, affine, head_height), "bone")

    # 3. no bone: the body
    return HeadBox(*_voxel_box(body, affine, head_height), "body")


def _to_closest_ras(volume: torch.Tensor, affine: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Flip and permute the voxel axes of (I, J, K) to run closest to R, A, S; the affine follows."""
    orientation = nib.orientations.io_orientation(affine)  # per voxel axis: (world axis, +-1)
    reorient = nib.orientations.inv_ornt_aff(orientation, volume.shape)  # new voxel index -> old voxel index
    flips = [axis for axis, sign in enumerate(orientation[:, 1]) if sign < 0]
    if flips:
        volume = volume.flip(flips)
    return volume.permute(*np.argsort(orientation[:, 0]).tolist()), affine @ reorient


def _blocks(
    volume: torch.Tensor, affine: np.ndarray, spacing: float, peak: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
    """Block means (and maxima) of (I, J, K) over blocks of about ``spacing`` mm, never coarser.

    Blocks hold ``floor(spacing / voxel size)`` voxels along each axis (at most half the axis); a
    remainder at the far end is dropped. Returns ``(means, maxima or None, affine)``: (I', J', K')
    each and the (4, 4) affine of the block grid (block centres), mm.
    """
    factors = [max(1, min(n // 2, int(spacing / s + 1e-6))) for n, s in zip(volume.shape, _spacing(affine))]
    block = np.eye(4)
    block[:3, :3] = np.diag(factors)
    block[:3, 3] = [(f - 1) / 2 for f in factors]
    if max(factors) == 1:
        return volume, volume if peak else None, affine
    (i, j, k), (a, b, c) = volume.shape, factors
    blocks = volume[: i // a * a, : j // b * b, : k // c * c].reshape(i // a, a, j // b, b, k // c, c)
    return blocks.mean(dim=(1, 3, 5)), blocks.amax(dim=(1, 3, 5)) if peak else None, affine @ block


def sample_voxels(volume: torch.Tensor, index: torch.Tensor, pad: float, mode: str = "bilinear") -> torch.Tensor:
    """Samples of (C, I, J, K) at continuous voxel indices (..., 3); ``pad`` outside the volume.

    Args:
        volume: (C, I, J, K) values.
        index: (..., 3) voxel indices (i, j, k), voxel centres at integers.
        pad: the value outside.
        mode: ``bilinear`` (trilinear) or ``nearest``.

    Returns:
        (C, ...) samples in ``volume``'s dtype.
    """
    size = torch.tensor(volume.shape[1:], dtype=index.dtype, device=index.device)
    grid = 2 * index / (size - 1).clamp(min=1) - 1  # align_corners=True: -1 and 1 are the edge voxel centres
    shifted = (volume.float() - pad)[None]  # zero padding of the shifted volume pads with ``pad``
    grid = grid.flip(-1).reshape(1, -1, 1, 1, 3).float()  # grid_sample orders axes k, j, i
    out = F.grid_sample(shifted, grid, mode=mode, padding_mode="zeros", align_corners=True)
    return (out[0].reshape(volume.shape[0], *index.shape[:-1]) + pad).to(volume.dtype)


def _crop(volume: torch.Tensor, index: torch.Tensor, margins: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    """The part of (I, J, K) that voxel indices (..., 3) sample, ``margins`` (3,) voxels wider; and its start."""
    flat = index.reshape(-1, 3)
    start, stop = [], []
    for axis, margin in enumerate(margins):
        n = volume.shape[axis]
        lo = min(max(0, math.floor(float(flat[:, axis].min())) - margin), n - 2)
        hi = max(min(n - 1, math.ceil(float(flat[:, axis].max())) + margin), lo + 1)  # >= 2 voxels kept
        start.append(lo)
        stop.append(hi + 1)
    return volume[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]], start


class CanonicaliseCT(Transform):
    """Resample a loaded CT onto the geometry's canonical grid, centred on the head.

    Output: (1, X, Y, Z) = ``geometry.vol_shape`` float32 HU, axes left->right, posterior->anterior,
    inferior->superior, ``geometry.vol_spacing`` mm isotropic, ``affine == geometry.affine``: the
    canonical world is the CT's world shifted so that the head centre is the origin (the isocentre).

    Steps:

    1. clip HU to ``clip`` (out-of-field values such as -3024 become air) and turn the voxel axes to
       the closest RAS order (flips and a permutation, no interpolation);
    2. block means over blocks of ``floor(vol_spacing / voxel size)`` voxels (the first, exact stage
       of anti-aliasing), and block means and maxima over blocks of at least 2 mm: the coarse grid on
       which the head is located;
    3. locate the head (:func:`locate_head`): the skull's bounding box (bone above ``bone_threshold``
       inside the largest body component above ``body_threshold``), restricted to the cranial
       ``head_height`` mm below the highest bone so that neck and shoulders do not pull it down;
       falling back to the body's box without bone. Its centre becomes the isocentre;
    4. one trilinear resampling of the block means onto the centred grid (after a Gaussian for any
       remaining downsampling factor f, sigma (f - 1) / 2 voxels), through the full affine, so oblique
       and gantry-tilted (sheared) scans are handled; outside the scan is air (``clip[0]``);
    5. clip again.

    Field of view: the default geometry (128^3 x 1.5 mm = 192 mm) is sized for infants and toddlers.
    Adult skulls (about 180-200 mm long, 230 mm with the mandible) need a coarser grid, e.g. 128^3 x
    2 mm. A skull box larger than the grid is logged as a warning and flagged in meta.

    Intensities must be HU. Nothing is guessed: a CT without any voxel below ``body_threshold`` (no air,
    e.g. normalised 0..1 data or air stored as 0) is logged as a warning and flagged in meta
    (``no_air``); map such data to HU first, e.g. with ``monai.transforms.ScaleIntensityRange``.

    Args:
        geometry: the acquisition whose CT grid is the target.
        clip: (min, max) HU kept; min is also the air written outside the scan. Defaults to (-1024, 3071).
        body_threshold: HU above which a voxel is body rather than air. Defaults to -500.
        bone_threshold: HU above which a voxel is bone. Defaults to 300.
        head_height: cranio-caudal extent of the head, mm; bone further below the top of the skull is
            ignored when centring. Defaults to None: 90 % of the grid's z field of view, which keeps the
            vertex inside the grid when a scan continues below the head.
        anti_aliasing: low-pass filter before downsampling. Defaults to True.

    Meta of the output (besides the input's): ``head_centre`` (3,) mm, the head centre in the input's
    RAS world (canonical = input world - head_centre); ``head_box`` (2, 3) mm; ``head_located_by``
    ("bone", "body" or "volume"); ``skull_exceeds_fov`` (bool); ``no_air`` (bool); ``original_affine``.

    Raises:
        ValueError: bad arguments, or an input that is not a (1, I, J, K) MetaTensor with an
            invertible affine and at least 2 voxels along each axis.
    """

    def __init__(
        self,
        geometry: BiplanarGeometry,
        clip: Sequence[float] = HU_RANGE,  # HU
        body_threshold: float = -500.0,  # HU
        bone_threshold: float = 300.0,  # HU
        head_height: float | None = None,  # mm
        anti_aliasing: bool = True,
    ) -> None:
        if not isinstance(geometry, BiplanarGeometry):
            raise ValueError(f"geometry must be a BiplanarGeometry, got {type(geometry).__name__}.")
        clip = tuple(float(c) for c in clip)
        if len(clip) != 2 or not clip[0] < clip[1]:
            raise ValueError(f"clip must be (min, max) HU with min < max, got {clip}.")
        if not clip[0] < body_threshold < bone_threshold < clip[1]:
            raise ValueError(
                f"need clip[0] < body_threshold < bone_threshold < clip[1], got {clip[0]}, {body_threshold}, "
                f"{bone_threshold}, {clip[1]} HU."
            )
        if head_height is not None and not head_height > 0:
            raise ValueError(f"head_height must be positive (mm), got {head_height}.")
        self.geometry = geometry
        self.clip = clip
        self.body_threshold = float(body_threshold)
        self.bone_threshold = float(bone_threshold)
        self.head_height = 0.9 * geometry.fov[2] if head_height is None else float(head_height)
        self.anti_aliasing = anti_aliasing

    def __call__(self, ct: torch.Tensor) -> MetaTensor:
        # 1. check the input; clip; closest RAS voxel order
        if not isinstance(ct, MetaTensor):
            raise ValueError(f"CanonicaliseCT needs a MetaTensor with an affine (see LoadCT), got {type(ct).__name__}.")
        if ct.ndim != 4 or ct.shape[0] != 1 or min(ct.shape[1:]) < 2:
            raise ValueError(f"expected a CT of shape (1, I, J, K) with I, J, K >= 2, got {tuple(ct.shape)}.")
        affine = ct.affine.detach().cpu().double().numpy()
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError(f"the CT's affine must be finite and invertible, got\n{affine}.")
        name = ct.meta.get("filename_or_obj", "CT")
        low, high = self.clip
        volume = ct.as_tensor()[0].float().nan_to_num(nan=low).clamp(low, high)
        no_air = bool(volume.min() > self.body_threshold)
        if no_air:
            logger.warning(
                "%s has no voxel below %g HU (no air): is it in HU? Map it to HU before CanonicaliseCT.",
                name,
                self.body_threshold,
            )
        volume, ras_affine = _to_closest_ras(volume, affine)

        # 2. block means: the resampling source (the first, exact anti-aliasing stage) and, at least
        #    _LOCATE_SPACING mm coarse, the grid on which the head is located
        target = self.geometry.vol_spacing
        source, source_affine = volume, ras_affine
        if self.anti_aliasing:
            source, _, source_affine = _blocks(volume, ras_affine, target)
        mean, peak, coarse_affine = _blocks(volume, ras_affine, max(target, _LOCATE_SPACING), peak=True)

        # 3. the head
        box = locate_head(mean, peak, coarse_affine, self.body_threshold, self.bone_threshold, self.head_height)
        if box.located_by != "bone":
            logger.warning("%s: no bone above %g HU; centred on the %s.", name, self.bone_threshold, box.located_by)
        fov = np.asarray(self.geometry.fov)
        exceeds = bool(np.any(box.extent > fov + 1e-6))
        if exceeds:
            logger.warning(
                "%s: the head (%s mm) exceeds the grid's field of view (%s mm); use a coarser vol_spacing "
                "(adults need about 2 mm for 128^3).",
                name,
                np.round(box.extent, 1).tolist(),
                fov.tolist(),
            )

        # 4. one resampling onto the centred grid, from the block means (anti-aliased) or the voxels
        sigmas = [max(0.0, (target / s - 1) / 2) if self.anti_aliasing else 0.0 for s in _spacing(source_affine)]
        centre = torch.as_tensor(box.centre, device=volume.device)
        world = self.geometry.voxel_centres(torch.float64, volume.device) + centre  # (X, Y, Z, 3) mm, CT world
        inverse = torch.as_tensor(np.linalg.inv(source_affine)).to(world)
        index = world @ inverse[:3, :3].T + inverse[:3, 3]  # (X, Y, Z, 3) voxel indices of the source
        source, start = _crop(source, index, [math.ceil(3 * s) + 1 for s in sigmas])
        index = index - torch.tensor(start, dtype=index.dtype, device=index.device)
        sigmas = [sigma if sigma >= 0.2 else 0.0 for sigma in sigmas]  # narrower kernels: within a few % of identity
        out = sample_voxels(gaussian_blur(source, sigmas)[None], index, low)[0].clamp(low, high)

        # 5. the canonical MetaTensor
        meta = {k: v for k, v in ct.meta.items() if k != "affine"}
        meta.update(
            original_affine=affine,
            spacing=np.full(3, target),
            space="RAS",
            head_centre=box.centre,
            head_box=np.stack((box.lower, box.upper)),
            head_located_by=box.located_by,
            skull_exceeds_fov=exceeds,
            no_air=no_air,
        )
        return MetaTensor(out[None].float(), affine=torch.as_tensor(self.geometry.affine), meta=meta)


class CanonicaliseCTd(MapTransform):
    """Dictionary wrapper of :class:`CanonicaliseCT`: canonicalises each CT under ``keys``.

    Args:
        keys: keys of the CTs (MetaTensors from :class:`LoadCTd`). Defaults to "ct".
        geometry, clip, body_threshold, bone_threshold, head_height, anti_aliasing: as
            :class:`CanonicaliseCT`.
        allow_missing_keys: skip keys that are absent. Defaults to False.
    """

    def __init__(
        self,
        geometry: BiplanarGeometry,
        keys: KeysCollection = "ct",
        clip: Sequence[float] = HU_RANGE,  # HU
        body_threshold: float = -500.0,  # HU
        bone_threshold: float = 300.0,  # HU
        head_height: float | None = None,  # mm
        anti_aliasing: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.canonicaliser = CanonicaliseCT(geometry, clip, body_threshold, bone_threshold, head_height, anti_aliasing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.canonicaliser(d[key])
        return d


__all__ = [
    "HU_RANGE",
    "CanonicaliseCT",
    "CanonicaliseCTd",
    "HeadBox",
    "LoadCT",
    "LoadCTd",
    "connected_components",
    "locate_head",
    "read_ct",
]
