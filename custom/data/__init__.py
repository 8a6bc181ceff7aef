"""Reading, canonicalising and simulating data: CT volumes in, biplanar X-rays out, and real X-rays in.

One concept per module: ``ct_files`` (CT files -> HU volume in the file's voxel order), ``dicom_series``
(a DICOM CT series stacked), ``head`` (head localisation), ``canonicalise`` (a loaded CT -> canonical HU
volume on the geometry's grid), ``xray`` (real radiograph files -> normalised views), ``dicom_compat``
(the pixel LUTs of pydicom 3 and 2.4), ``simulate``
(canonical CT -> biplanar X-rays through the projector and detector physics), ``pose`` (head pose
jitter), ``labels`` (label maps as transforms), ``datasets`` (phantom, CT-folder, datalist and X-ray
pair datasets, splits), ``points`` (query points for implicit networks) and ``preflight`` (inference's
checks before any compute). Inputs only: nothing here imports :mod:`custom.outputs` or
:mod:`custom.metrics`.
"""
