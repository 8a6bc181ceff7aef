"""What differs between pydicom 3 and 2.4 for this bundle: the pixel value transforms and saving a file.

The modality LUT (stored values to HU or attenuation) and VOI LUT (window) live in ``pydicom.pixels``
since pydicom 3 and in ``pydicom.pixel_data_handlers.util`` before; a new file is saved in the DICOM
file format with ``enforce_file_format=True`` in pydicom 3 and ``write_like_original=False`` in 2.4,
which also wants the encoding on the dataset. The bundle runs on pydicom 3; the MONAI Label
environment runs pydicom 2.4 (MONAI Label's ``pydicom-seg`` cannot import pydicom 3).
"""

from __future__ import annotations

import os

import pydicom

try:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
except ImportError:  # pydicom 2.4
    from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3


def save_dicom(dataset: pydicom.Dataset, path: str | os.PathLike) -> None:
    """Save ``dataset`` as a DICOM file (preamble, ``DICM``, file meta) with its file meta's transfer syntax."""
    if PYDICOM_3:
        dataset.save_as(path, enforce_file_format=True)
        return
    syntax = dataset.file_meta.TransferSyntaxUID
    dataset.is_little_endian, dataset.is_implicit_VR = syntax.is_little_endian, syntax.is_implicit_VR
    dataset.save_as(path, write_like_original=False)


__all__ = ["PYDICOM_3", "apply_modality_lut", "apply_voi_lut", "save_dicom"]
