"""What differs between pydicom 3 and 2.4 for reading DICOM pixels: where the value transforms live.

The modality LUT (stored values to HU or attenuation) and VOI LUT (window) live in ``pydicom.pixels``
since pydicom 3 and in ``pydicom.pixel_data_handlers.util`` before. The bundle runs on pydicom 3; the
MONAI Label environment runs pydicom 2.4 (MONAI Label's ``pydicom-seg`` cannot import pydicom 3).
Saving a file differs too: see :func:`custom.outputs.writers.save_dicom`.
"""

from __future__ import annotations

try:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
except ImportError:  # pydicom 2.4
    from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

__all__ = ["apply_modality_lut", "apply_voi_lut"]
