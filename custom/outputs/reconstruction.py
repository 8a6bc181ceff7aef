"""What inference leaves on disk for each case: the CT in HU, optional DICOM series and bone mesh, a preview.

:class:`SaveReconstructiond` is the last post-processing transform of the bundle's inference. For a
case named ``<case>`` it writes, in ``output_dir``:

- ``<case>.nii.gz``: the CT in HU, int16, with the CT grid's affine and spacing (never an X-ray's);
- ``<case>_dicom/`` (``dicom=True``): the same CT as an axial DICOM series;
- ``<case>_labels.nii.gz`` (``label_key`` set, for networks that predict structure such as SPIDER):
  the predicted label map, uint8, same affine;
- ``<case>_structures.nii.gz`` (``structure_key`` set, SPIDER with :data:`custom.phantom.STRUCTURES`):
  the predicted bones, sutures and fontanelles, uint8, same affine;
- ``<case>_bone.stl`` (``stl=True``): the bone surface at ``bone_hu``, or with a label map the
  surface of the predicted bone class (skipped with a warning when there is no bone);
- ``<case>.png`` (``preview=True``): central CT slices next to the two input X-rays.

A case's outputs are written together (:func:`custom.files.write_together`): into a staging folder
inside ``output_dir``, then moved into place, so a refusal to overwrite, a failure or a kill part-way
leaves the whole case or nothing of it (the next run finishes or removes what a killed one left).
Case names are made file-safe by :func:`custom.files.safe_case_id`, so no name can reach outside ``output_dir``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
from custom.files import refuse_existing, safe_case_id, write_together
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.physics import BONE_HU, network_to_hu
from custom.outputs.montage import montage
from custom.outputs.writers import NoBoneError, write_bone_stl, write_ct_dicom, write_ct_nifti, write_label_nifti
from custom.phantom import LABELS
from monai.transforms import MapTransform


class SaveReconstructiond(MapTransform):
    """Write each reconstructed CT of a post-processed item (see the module docstring for the files).

    Args:
        geometry: the CT grid the network predicts on.
        output_dir: the folder for every case's files (created).
        keys: the prediction's key: (1, X, Y, Z) on the networks' [0, 1] scale. Defaults to ``pred``.
        image_key: the input views (2, H, W) shown in the preview. Defaults to ``image``.
        case_key: the case name. Defaults to ``case``.
        dicom: also write a DICOM series. Defaults to False.
        stl: also write the bone surface mesh. Defaults to False.
        bone_hu: the bone surface level, HU. Defaults to 300.
        preview: also write a PNG preview. Defaults to True.
        label_key: the predicted (1, X, Y, Z) label map to write, whose bone class then gives the
            STL. Defaults to None (a CT-only network).
        structure_key: the predicted (1, X, Y, Z) structure map to write. Defaults to None.
        overwrite: replace a case's existing outputs. Defaults to False (FileExistsError, nothing written).
        output_key: where the written paths go in the item (a list of str). Defaults to ``outputs``.
    """

    def __init__(
        self,
        geometry: BiplanarGeometry,
        output_dir: str | os.PathLike,
        keys: Hashable = "pred",
        image_key: Hashable = "image",
        case_key: Hashable = "case",
        dicom: bool = False,
        stl: bool = False,
        bone_hu: float = BONE_HU,  # HU
        preview: bool = True,
        label_key: Hashable | None = None,
        overwrite: bool = False,
        output_key: Hashable = "outputs",
        structure_key: Hashable | None = None,
    ) -> None:
        super().__init__(keys)
        self.geometry, self.output_dir = geometry, Path(output_dir)
        self.image_key, self.case_key, self.output_key = image_key, case_key, output_key
        self.dicom, self.stl, self.bone_hu, self.preview = dicom, stl, bone_hu, preview
        self.label_key, self.structure_key, self.overwrite = label_key, structure_key, overwrite

    def paths(self, case: Any) -> dict[str, Path]:
        """The files a case named ``case`` writes, by kind."""
        stem = safe_case_id(case)
        wanted = {
            "nifti": True,
            "labels": self.label_key is not None,
            "structures": self.structure_key is not None,
            "dicom": self.dicom,
            "stl": self.stl,
            "preview": self.preview,
        }
        names = {
            "nifti": f"{stem}.nii.gz",
            "labels": f"{stem}_labels.nii.gz",
            "structures": f"{stem}_structures.nii.gz",
            "dicom": f"{stem}_dicom",
            "stl": f"{stem}_bone.stl",
            "preview": f"{stem}.png",
        }
        return {kind: self.output_dir / names[kind] for kind, on in wanted.items() if on}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        (key,) = self.key_iterator(d)
        hu = network_to_hu(torch.as_tensor(d[key]).detach().float().cpu())  # (1, X, Y, Z) HU
        case = d[self.case_key]
        paths = self.paths(case)
        refuse_existing(paths.values(), self.overwrite)

        def write_case(staging: Path) -> None:
            here = {kind: staging / path.name for kind, path in paths.items()}
            write_ct_nifti(here["nifti"], hu, self.geometry)
            surface, level = hu, self.bone_hu
            if "labels" in here:
                labels = torch.as_tensor(d[self.label_key]).detach().cpu()
                write_label_nifti(here["labels"], labels, self.geometry)
                surface, level = (labels == LABELS["bone"]).float(), 0.5  # the bone class's boundary
            if "structures" in here:
                structures = torch.as_tensor(d[self.structure_key]).detach().cpu()
                write_label_nifti(here["structures"], structures, self.geometry)
            if "dicom" in here:
                write_ct_dicom(here["dicom"], hu, self.geometry, patient_id=safe_case_id(case))
            if "stl" in here:
                try:
                    write_bone_stl(here["stl"], surface, self.geometry, level)
                except NoBoneError as error:  # a valid reconstruction without bone: say so, keep the rest
                    warnings.warn(f"{case}: no bone surface written: {error}", stacklevel=2)
                    del paths["stl"]
            if "preview" in here:
                views = torch.as_tensor(d[self.image_key]).detach().cpu()
                picture = montage(hu, views, title=f"{case}: reconstruction from the two X-rays")
                picture.save(here["preview"], format="PNG")  # the staging folder is the temporary

        write_together(self.output_dir, write_case, self.overwrite)
        d[self.output_key] = [str(p) for p in paths.values()]
        return d


__all__ = ["SaveReconstructiond"]
