"""pydicom's pixel value transforms (modality LUT: stored values to HU or attenuation; VOI LUT: window).

They live in ``pydicom.pixels`` since pydicom 3 and in ``pydicom.pixel_data_handlers.util`` before;
the MONAI Label environment runs pydicom 2.4 (MONAI Label's ``pydicom-seg`` cannot import pydicom 3),
so reading DICOM works with both. Writing a DICOM series (:mod:`custom.data.writers`) needs pydicom 3.
"""

try:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
except ImportError:  # pydicom 2.4
    from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

__all__ = ["apply_modality_lut", "apply_voi_lut"]
