"""DICOM CT series: the slices of one series in a folder, checked, sorted and stacked into a HU volume.

- Input: a folder, and optionally one file of the series (which then picks its series from the folder).
  Only the folder's own files are read (no subfolders); files that are not DICOM, DICOM files that are
  not images (DICOMDIR, reports), localisers and other modalities are skipped and logged. Enhanced
  (multi-frame) CT is refused.
- Voxel axes are (column, row, slice); slices are sorted by their position along the slice normal
  (ImageOrientationPatient x ImagePositionPatient), never by file name or InstanceNumber; each slice's
  RescaleSlope/RescaleIntercept (the modality LUT) gives HU.
- The affine maps voxel indices to DICOM's patient frame, LPS millimetres (x to the patient's left, y
  posterior, z superior); :func:`custom.data.ct_files.read_ct` turns it into RAS.
- Gantry tilt (slices stacked along a direction that is not their normal) is kept exactly: the
  affine's slice column is the true step between slice positions, so the affine is sheared and
  :class:`~custom.data.canonicalise.CanonicaliseCT` resamples it correctly. ``allow_tilt=False``
  refuses such series.
- Uneven slice spacing (a missing slice, mixed spacing) is resampled by linear interpolation between
  neighbouring slices onto an even grid at the median spacing, and logged; ``resample_uneven=False``
  refuses such series. Slices off one straight line, or two slices at one position, are always refused.

Reference: DICOM PS3.3 C.7.6.2 (Image Plane Module: ImagePositionPatient, ImageOrientationPatient,
PixelSpacing) and C.11.1 (Modality LUT Module).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from custom.data.dicom_compat import apply_modality_lut
from custom.errors import InvalidInputError
from pydicom.errors import InvalidDicomError

logger = logging.getLogger(__name__)

# Tolerances for DICOM slice positions, relative to the length they could move an image feature by.
_LINE_TOLERANCE = 0.1  # fraction of a pixel: how far a slice may lie off the line through the others
_EVEN_TOLERANCE = 0.01  # fraction of a slice step: how far a slice may lie off an even grid
_TILT_TOLERANCE = 0.01  # degrees between the stacking direction and the slice normal counted as tilt
_ORIENTATION_TOLERANCE = 1e-4  # difference of direction cosines between slices of one series


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


def read_dicom_series(
    folder: Path,
    series_uid: str | None = None,
    chosen: Path | None = None,
    allow_tilt: bool = True,
    resample_uneven: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Stack one DICOM CT series of ``folder`` (the series of the file ``chosen`` if given).

    See the module docstring for the rules (skipped files, sorting, rescale, tilt, uneven spacing).

    Args:
        folder: the folder holding the series' files; subfolders are not searched.
        series_uid: the SeriesInstanceUID to read. Defaults to None: the series of ``chosen``, or the
            folder's only series.
        chosen: one file of the series. Defaults to None.
        allow_tilt: load a gantry-tilted series with a sheared affine; False refuses it. Defaults to True.
        resample_uneven: interpolate uneven slices onto an even grid; False refuses them. Defaults to True.

    Returns:
        ``(volume, affine, meta)``: volume (I, J, K) float32 HU with axes (column, row, slice); affine
        (4, 4) voxel index -> LPS mm (DICOM's patient frame, not yet RAS); meta ``format`` ("dicom"),
        ``series_uid``, ``gantry_tilt`` (degrees) and ``slices_resampled``.

    Raises:
        ValueError: a corrupt file, a folder without DICOM CT images, several series and no
            ``series_uid``, or a series refused by the rules of the module docstring.
    """
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
    return volume, lps, meta


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


__all__ = ["read_dicom_series"]
