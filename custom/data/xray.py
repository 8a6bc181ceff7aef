"""Real radiographs in: DICOM, PNG/TIFF/JPEG and 2D NIfTI files -> normalised views on the detector grid.

:class:`LoadXRay` turns one file into what the network sees for one view, on the same scale and pixel
grid as the simulated X-rays: a float32 image (1, H, W) = ``geometry.det_shape`` with values in [0, 1],
attenuation bright, one pixel = ``geometry.det_spacing`` mm at the detector. :class:`LoadXRayd` reads
the frontal and the lateral file of a case into the network input (2, H, W). :func:`write_xray` writes
an image that :class:`LoadXRay` reads back unchanged (the bundle's sample X-rays).

Orientation
    Files are taken as they are displayed: row 0 at the top of the displayed image, column 0 at its
    left. That is the layout :mod:`custom.imaging.geometry` documents for both views (frontal PA: patient's
    left on the image's right; left lateral: the face to the image's left), so a file displayed the
    usual way needs nothing. A site whose images are mirrored relative to that (e.g. right laterals,
    face to the right) passes ``mirror=True`` for that view; the columns are then flipped after loading.
    Mirroring fixes the display only: a right lateral magnifies the two sides of the head the other
    way round, which no flip can undo.

    - DICOM, PNG, TIFF, JPEG: pixel (row, column) as stored; an EXIF orientation tag (phone photos of
      films) is applied first.
    - 2D NIfTI: MONAI's and ITK's convention for 2D images: data axis 0 runs along the image's columns
      (left -> right), axis 1 along its rows (top -> bottom), so ``image = data.T``; this is the array
      ``monai.transforms.LoadImage`` gives for a PNG, and what it writes back. Shape (A, B) or (A, B, 1).

Intensities
    Each reader gives the image as displayed, attenuation bright: DICOM applies its Modality LUT
    (RescaleSlope / RescaleIntercept or a Modality LUT Sequence), then its VOI LUT or window, then
    inverts MONOCHROME1 (Presentation LUT Shape is not applied again: in DX objects INVERSE only restates
    MONOCHROME1). Colour images become luminance (ITU-R BT.601 weights, alpha ignored). The native
    image is then mapped to [0, 1] by :func:`custom.imaging.physics.normalise_radiograph`, the display mapping
    the X-ray simulator uses, before any resampling. Raw "FOR PROCESSING" DICOMs that store intensity
    rather than a displayable image are taken at their word (their photometric interpretation).

Pixel grid (``placement`` in the output meta)
    ``"resampled"``: the pixel spacing is known, so the image is resampled to ``det_spacing`` mm per
    pixel about its centre and cropped or padded to ``det_shape``: a 20 mm object covers
    ``20 / det_spacing`` pixels, as in the simulation. DICOM spacing is ImagerPixelSpacing (at the
    detector, like ``det_spacing``), else PixelSpacing; 2D NIfTI spacing is the header zooms (axis 0
    -> columns, axis 1 -> rows; mm, or converted from metres/microns; unknown units read as mm) when
    the header has a spatial transform (qform_code or sform_code > 0). PNG/TIFF/JPEG resolution tags
    (dpi) are ignored: they describe printing, not the detector. Where the file has no spacing, the
    ``spacing`` argument supplies one.
    ``"fitted"``: no spacing anywhere, so the whole image is scaled to fit ``det_shape`` with its aspect
    ratio kept (square pixels assumed) and centred. Sizes in mm are then only as right as the image's
    field of view.

    Resampling is separable and linear: a triangle (bilinear) kernel widened by the shrink factor when
    shrinking, so it is antialiased like ``torch.nn.functional.interpolate(..., antialias=True)``. Output
    pixels outside the native image are 0 (air, after normalisation); pixels inside but near its border
    use the samples that exist. Native images over 2^24 pixels (the most ``torch.quantile`` sorts) are
    first averaged over k x k blocks, dropping fewer than k rows/columns at the bottom/right; the image
    centre is kept exact.

Size
    An image needs at least :data:`MIN_XRAY_PIXELS` rows and columns; smaller ones (icons,
    thumbnails) are refused. One magnified by more than :data:`MAX_UPSAMPLING` output pixels per native
    pixel has less detail than the detector: :mod:`custom.data.preflight` warns about it before
    inference.

Output meta (``MetaTensor.meta``)
    ``filename_or_obj`` (str), ``format`` ("dicom", "png", "tiff", "jpeg", "nifti"), ``native_shape``
    (rows, columns), ``placement`` ("resampled" or "fitted"), ``spacing_source`` ("ImagerPixelSpacing",
    "PixelSpacing", "NIfTI zooms", "argument" or "none"), ``native_spacing`` (row, column) mm/pixel as
    used (for "fitted", the spacing the fit implies), ``zoom`` (row, column) output pixels per native
    pixel, ``mirrored`` (bool). :class:`LoadXRayd` prefixes each with the view's key
    (``frontal_placement``).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from custom.data.dicom_compat import apply_modality_lut, apply_voi_lut
from custom.errors import InvalidInputError, MissingInputError
from custom.files import atomic_write, has_dicom_marker
from custom.imaging.geometry import VIEW_NAMES, BiplanarGeometry
from custom.imaging.physics import normalise_radiograph
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ensure_tuple_rep
from PIL import Image, ImageOps

_SUFFIXES = {
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".nii": "nifti",
    ".nii.gz": "nifti",
}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luminance weights, as Pillow's convert("L")
_MAX_QUANTILE_PIXELS = 2**24  # largest input torch.quantile accepts
_NIFTI_UNITS = {"unknown": 1.0, "mm": 1.0, "meter": 1000.0, "micron": 0.001}  # to mm
MIN_XRAY_PIXELS = 32  # rows and columns: fewer cannot show a skull's outline on any detector
MAX_UPSAMPLING = 2.0  # output pixels per native pixel beyond which the input is reported as too coarse


def _format_of(path: Path) -> str:
    """The reader for ``path``: by extension, or DICOM for any other name whose file has the DICM magic."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return "nifti"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is not None:
        return fmt
    if has_dicom_marker(path):  # DICOMs are often named by UID or have no extension at all
        return "dicom"
    raise InvalidInputError(
        f"{path}: unknown X-ray file type {path.suffix!r}; expected DICOM, PNG, TIFF, JPEG or NIfTI."
    )


def _read_dicom(path: Path) -> tuple[np.ndarray, tuple[float, float] | None, str]:
    """Displayed image (rows, columns), attenuation bright, and its pixel spacing (row, column) mm."""
    # 1. parse and decode (single frame, grayscale only)
    try:
        ds = pydicom.dcmread(path)
    except Exception as error:
        raise InvalidInputError(f"{path}: cannot read as DICOM ({error}).") from error
    if "PixelData" not in ds:
        raise InvalidInputError(f"{path}: the DICOM file has no pixel data.")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InvalidInputError(f"{path}: a 3D/multi-frame DICOM ({frames} frames) was given as an X-ray.")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise InvalidInputError(f"{path}: colour DICOM ({ds.get('PhotometricInterpretation')}) is not supported.")
    try:
        pixels = ds.pixel_array
    except Exception as error:
        raise InvalidInputError(f"{path}: cannot decode the DICOM pixel data ({error}).") from error
    if pixels.ndim != 2:
        raise InvalidInputError(f"{path}: a 3D/multi-frame DICOM (shape {pixels.shape}) was given as an X-ray.")
    # 2. Modality LUT, then VOI LUT or window, then MONOCHROME1 inversion (DICOM's display pipeline)
    try:
        image = apply_modality_lut(pixels, ds)
        if "VOILUTSequence" in ds or "WindowCenter" in ds:
            image = apply_voi_lut(image, ds)
    except Exception as error:
        raise InvalidInputError(f"{path}: invalid DICOM LUT or window ({error}).") from error
    image = np.asarray(image, dtype=np.float64)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        image = -image  # MONOCHROME1 shows low values white; the display mapping is shift-invariant
    # 3. spacing: at the detector (ImagerPixelSpacing) before at the patient (PixelSpacing)
    for tag in ("ImagerPixelSpacing", "PixelSpacing"):
        if tag in ds and ds[tag].value not in (None, ""):
            try:
                spacing = tuple(float(v) for v in ds[tag].value)
            except (TypeError, ValueError):
                spacing = ()
            if len(spacing) != 2 or not all(_positive(s) for s in spacing):
                raise InvalidInputError(f"{path}: invalid {tag} {ds[tag].value!r}; expected two positive mm values.")
            return image, (spacing[0], spacing[1]), tag
    return image, None, "none"


def _read_pillow(path: Path) -> tuple[np.ndarray, tuple[float, float] | None, str]:
    """PNG/TIFF/JPEG as a grayscale image (rows, columns) in its own units; no spacing."""
    # 1. decode fully (a truncated file fails here, not later), EXIF orientation applied
    try:
        with Image.open(path) as opened:
            frames = getattr(opened, "n_frames", 1)
            opened.load()
            image = ImageOps.exif_transpose(opened)
            # 2. grayscale in full precision: 8/16/32-bit and float as stored, colour to luminance
            if image.mode in ("L", "I", "F", "1") or image.mode.startswith("I;16"):
                pixels = np.asarray(image, dtype=np.float64)
            elif image.mode == "LA":
                pixels = np.asarray(image, dtype=np.float64)[..., 0]
            else:  # RGB, RGBA, palette, CMYK, YCbCr, ...: luminance, alpha ignored
                pixels = np.asarray(image.convert("RGB"), dtype=np.float64) @ np.asarray(_LUMA)
    except Exception as error:
        raise InvalidInputError(f"{path}: cannot read as an image ({error}).") from error
    if frames > 1:
        raise InvalidInputError(f"{path}: a 3D/multi-page image ({frames} frames) was given as an X-ray.")
    return pixels, None, "none"


def _read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, float] | None, str]:
    """2D NIfTI (A, B) or (A, B, 1) as the image ``data.T`` (rows, columns) and its zooms as spacing."""
    # 1. read the data (scaled by the header's scl_slope / scl_inter)
    try:
        nifti = nib.load(path)
        data = np.asarray(nifti.dataobj, dtype=np.float64)
    except Exception as error:
        raise InvalidInputError(f"{path}: cannot read as NIfTI ({error}).") from error
    # 2. a 2D image: trailing singleton axes dropped
    shape = data.shape
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 2:
        raise InvalidInputError(f"{path}: a 3D volume was given as an X-ray (shape {data.shape}).")
    if len(shape) < 2:
        raise InvalidInputError(f"{path}: expected a 2D image (A, B), got shape {data.shape}.")
    image = data.reshape(shape).T  # axis 0 = columns, axis 1 = rows
    # 3. spacing from the zooms, only when the header has a spatial transform
    header = nifti.header
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        return image, None, "none"
    unit = _NIFTI_UNITS.get(header.get_xyzt_units()[0], 1.0)
    zooms = [float(z) * unit for z in header.get_zooms()[:2]]
    if len(zooms) != 2 or not all(_positive(z) for z in zooms):
        raise InvalidInputError(f"{path}: invalid NIfTI pixel spacing {zooms}; expected two positive values.")
    return image, (zooms[1], zooms[0]), "NIfTI zooms"


_READERS = {"dicom": _read_dicom, "png": _read_pillow, "tiff": _read_pillow, "jpeg": _read_pillow, "nifti": _read_nifti}


def _axis_weights(n_in: int, n_out: int, zoom: float, centre: float) -> torch.Tensor:
    """Linear resampling of one axis as a matrix (n_out, n_in).

    Coordinates are in pixel edges (pixel i spans [i, i + 1)). Input coordinate ``centre`` lands on the
    output centre and one input pixel spans ``zoom`` output pixels. The kernel is a triangle of
    half-width ``max(1, 1 / zoom)`` input pixels (bilinear, widened to antialias when shrinking);
    weights are normalised over the input pixels that exist, and output pixels whose centre falls
    outside the input are all-zero rows (padding).
    """
    width = max(1.0, 1.0 / zoom)  # input pixels
    source = centre + (torch.arange(n_out, dtype=torch.float64) + 0.5 - n_out / 2) / zoom  # (n_out,)
    samples = torch.arange(n_in, dtype=torch.float64) + 0.5  # (n_in,)
    weights = (1 - (samples[None, :] - source[:, None]).abs() / width).clamp(min=0)  # (n_out, n_in)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)
    inside = (source >= 0) & (source <= n_in)
    return weights * inside[:, None]


def _as_spacing(spacing: float | Sequence[float] | None) -> tuple[float, float] | None:
    """A spacing argument as (row, column) mm/pixel; None stays None."""
    if spacing is None:
        return None
    values = tuple(spacing) if isinstance(spacing, (list, tuple)) else (spacing, spacing)
    if len(values) != 2 or not all(_positive(v) for v in values):
        raise InvalidInputError(
            f"spacing must be a positive number of mm per pixel or a (row, column) pair, got {spacing!r}."
        )
    return tuple(float(v) for v in values)


def _positive(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0


class LoadXRay(Transform):
    """Load one radiograph file as a normalised view on the detector grid of ``geometry``.

    Reads DICOM (.dcm, .dicom, or any file with the DICM magic), PNG, TIFF, JPEG and 2D NIfTI (.nii,
    .nii.gz); the module docstring gives the orientation, intensity and pixel-grid conventions and the
    output meta. Steps: read -> photometric/LUT -> validity checks -> :func:`normalise_radiograph` on
    the native image -> antialiased resampling -> pad with 0 -> crop -> optional mirror.

    Args:
        geometry: gives ``det_shape`` (H, W) pixels and ``det_spacing`` mm/pixel at the detector.
            Defaults to ``BiplanarGeometry()`` (128 x 128 pixels of 1.8 mm).
        spacing: pixel spacing of files that carry none (PNG/TIFF/JPEG, DICOM without spacing tags,
            NIfTI without a spatial transform), mm/pixel: one number or (row, column). A file's own
            spacing wins. Defaults to None: such files are fitted into ``det_shape``.
        mirror: flip the columns of the output, for sites whose images are mirrored relative to the
            geometry's convention (see the module docstring). Defaults to False.

    Returns:
        ``MetaTensor`` (1, H, W), float32 in [0, 1], attenuation bright.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: unknown file type, unreadable or corrupt file, a 3D/multi-frame image, an empty,
            constant or non-finite image, one under :data:`MIN_XRAY_PIXELS` on a side, or invalid
            spacing; the message names the file (an :class:`~custom.errors.InvalidInputError`).
    """

    def __init__(
        self,
        geometry: BiplanarGeometry | None = None,
        spacing: float | Sequence[float] | None = None,  # mm / pixel, (row, column) or both
        mirror: bool = False,
    ) -> None:
        self.geometry = BiplanarGeometry() if geometry is None else geometry
        self.spacing = _as_spacing(spacing)
        self.mirror = bool(mirror)

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        # 1. read: the displayed image (h, w), attenuation bright, and its spacing if known
        if path is None:
            raise InvalidInputError("no X-ray file given (None).")
        path = Path(path)
        if not path.exists():
            raise MissingInputError(f"{path}: no such X-ray file.")
        if path.is_dir():
            raise InvalidInputError(
                f"{path} is a folder, not an X-ray file (a folder of X-ray pairs goes to --dataset_dir)."
            )
        fmt = _format_of(path)
        pixels, spacing, source = _READERS[fmt](path)
        # 2. validity: non-empty, finite, not constant
        if pixels.size == 0:
            raise InvalidInputError(f"{path}: the image is empty (shape {pixels.shape}).")
        if not np.isfinite(pixels).all():
            raise InvalidInputError(f"{path}: the image contains NaN or infinite values.")
        low, high = float(pixels.min()), float(pixels.max())
        if high <= low:
            raise InvalidInputError(f"{path}: the image is constant ({low:g}); there is nothing to show.")
        if min(pixels.shape) < MIN_XRAY_PIXELS:
            raise InvalidInputError(
                f"{path}: the image is {pixels.shape[0]} x {pixels.shape[1]} pixels; an X-ray needs at least "
                f"{MIN_XRAY_PIXELS} on each side (a thumbnail or an icon was given?)."
            )
        # 3. normalise on the native grid (rescaled to [0, 1] first, an affine map the display mapping
        #    ignores, so float32 keeps the precision of any bit depth or offset)
        image = torch.from_numpy((pixels - low) / (high - low)).float()  # (h, w)
        h, w = image.shape
        centre = (h / 2, w / 2)  # native pixels, edge coordinates
        block = math.ceil(math.sqrt(h * w / _MAX_QUANTILE_PIXELS))
        if block > 1:  # too large for torch.quantile: average k x k blocks, keeping the centre where it is
            image = F.avg_pool2d(image[None, None], block)[0, 0]
            centre = (centre[0] / block, centre[1] / block)
        try:
            image = normalise_radiograph(image)
        except ValueError as error:
            raise InvalidInputError(f"{path}: {error}") from error
        # 4. placement: output pixels per native pixel along rows and columns
        det_h, det_w = self.geometry.det_shape  # pixels
        det_spacing = self.geometry.det_spacing  # mm / pixel
        if spacing is None and self.spacing is not None:
            spacing, source = self.spacing, "argument"
        if spacing is not None:
            placement = "resampled"
            zoom = (spacing[0] / det_spacing, spacing[1] / det_spacing)
        else:
            placement = "fitted"
            fit = min(det_h / h, det_w / w)
            zoom = (fit, fit)
            spacing = (det_spacing * fit, det_spacing * fit)  # a native pixel spans `fit` output pixels
        # 5. resample about the centre, pad with 0, crop: (H, h) @ (h, w) @ (w, W), h and w after any blocks
        rows = _axis_weights(image.shape[0], det_h, zoom[0] * block, centre[0]).float()
        cols = _axis_weights(image.shape[1], det_w, zoom[1] * block, centre[1]).float()
        out = (rows @ image @ cols.T).clamp(0, 1)  # (H, W)
        # 6. mirror for sites whose images face the other way
        if self.mirror:
            out = out.flip(-1)
        meta = {
            "filename_or_obj": str(path),
            "format": fmt,
            "native_shape": (int(h), int(w)),
            "placement": placement,
            "spacing_source": source,
            "native_spacing": tuple(float(s) for s in spacing),
            "zoom": tuple(float(z) for z in zoom),
            "mirrored": self.mirror,
        }
        return MetaTensor(out[None].contiguous(), meta=meta)


class LoadXRayd(MapTransform):
    """Dictionary wrapper of :class:`LoadXRay`: read one file per view and stack them as channels.

    ``data[key]`` holds each view's path; the stacked (len(keys), H, W) ``MetaTensor`` goes to
    ``data[output_key]`` with channel i = ``keys[i]``, so the defaults give channel 0 frontal and 1
    lateral, the network's input order (``VIEW_NAMES``). Each view's meta is kept with its key as
    prefix (``frontal_filename_or_obj``, ``lateral_placement``); the paths stay in the dictionary.

    Args:
        keys: the views' keys, in channel order. Defaults to ``("frontal", "lateral")``.
        geometry: see :class:`LoadXRay`.
        spacing: see :class:`LoadXRay`; the same for every view.
        mirror: one flag per key (or one for all): flip that view's columns, e.g. ``(False, True)`` for a
            site whose laterals show the face on the right instead of the geometry's left. Defaults to
            False.
        output_key: where the stacked image goes. Defaults to ``"image"``.

    Raises:
        InvalidInputError: a view's key is missing or None (the message names the view), two views name
            the same file, or as :class:`LoadXRay`.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable] = VIEW_NAMES,
        geometry: BiplanarGeometry | None = None,
        spacing: float | Sequence[float] | None = None,  # mm / pixel
        mirror: bool | Sequence[bool] = False,
        output_key: Hashable = "image",
    ) -> None:
        super().__init__(keys)
        mirrors = ensure_tuple_rep(mirror, len(self.keys))
        self.loaders = [LoadXRay(geometry, spacing, m) for m in mirrors]
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        # 1. every view must be there
        d = dict(data)
        missing = [key for key in self.keys if d.get(key) is None]
        if missing:
            raise InvalidInputError(f"missing X-ray view(s) {missing}; expected a file for each of {list(self.keys)}.")
        resolved = [Path(d[key]).resolve() for key in self.keys]
        if len(set(resolved)) < len(resolved):
            raise InvalidInputError(f"the same file is given for more than one view: {[str(d[k]) for k in self.keys]}.")
        # 2. load each view, stack in key order, keep each view's meta under its key
        images = [loader(d[key]) for key, loader in zip(self.keys, self.loaders)]
        meta = {
            f"{key}_{name}": value
            for key, image in zip(self.keys, images)
            for name, value in image.meta.items()
            if name not in ("affine", "space")  # MetaTensor's defaults, not the view's
        }
        d[self.output_key] = MetaTensor(torch.cat([image.as_tensor() for image in images]), meta=meta)
        return d


def write_xray(
    path: str | os.PathLike,
    image: torch.Tensor | np.ndarray,
    spacing: float | Sequence[float] | None = None,  # mm / pixel, (row, column) or both
    overwrite: bool = False,
) -> Path:
    """Write one radiograph as a 16-bit PNG or a float32 2D NIfTI that :class:`LoadXRay` reads back.

    The image is (H, W) or (1, H, W) in [0, 1], laid out as displayed. PNG stores ``round(65535 x)``;
    NIfTI stores ``image.T`` (the module's 2D NIfTI convention) with zooms ``spacing`` in mm, or with no
    spatial transform when ``spacing`` is None. Reading it back with a geometry of the same
    ``det_shape`` (and ``det_spacing == spacing`` for NIfTI with a spacing) gives the image again up to
    16-bit quantisation, provided the image is already display-normalised: it reaches 0 and 1 on more
    than 0.5 % of its pixels each (as air and clipped bone do), so :func:`normalise_radiograph` maps it
    onto itself. Other images come back display-normalised.

    Args:
        path: a ``.png``, ``.nii`` or ``.nii.gz`` path.
        image: (H, W) or (1, H, W), values in [0, 1].
        spacing: pixel spacing for NIfTI, mm/pixel, one number or (row, column). Defaults to None. PNG
            cannot store one.
        overwrite: replace an existing file. Defaults to False.

    Returns:
        The written path.

    Raises:
        ValueError: an unsupported extension, a wrongly shaped, non-finite or out-of-range image, or a
            spacing for PNG. FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    # 1. check the image
    path = Path(path)
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"image must be (H, W) or (1, H, W), got shape {tuple(np.shape(image))}.")
    array = array.astype(np.float64)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError("image values must be finite and in [0, 1].")
    # 2. encode by extension
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        spacing = _as_spacing(spacing)
        affine = None if spacing is None else np.diag([spacing[1], spacing[0], 1.0, 1.0])
        nifti = nib.Nifti1Image(array.T.astype(np.float32), affine)
        if spacing is not None:
            nifti.header.set_xyzt_units("mm")

        def write(tmp: Path) -> None:
            nib.save(nifti, tmp)

    elif name.endswith(".png"):
        if spacing is not None:
            raise ValueError("PNG cannot store a pixel spacing; write NIfTI or pass spacing to LoadXRay.")
        png = Image.fromarray(np.round(array * 65535).astype(np.uint16))

        def write(tmp: Path) -> None:
            png.save(tmp, format="PNG")

    else:
        raise ValueError(f"{path}: write_xray writes .png, .nii or .nii.gz, not {path.suffix!r}.")
    # 3. write atomically
    return atomic_write(path, write, overwrite)


__all__ = ["MAX_UPSAMPLING", "MIN_XRAY_PIXELS", "LoadXRay", "LoadXRayd", "write_xray"]
