"""The phantom's label vocabularies: tissues, calvarial bones, and the openings between the bones.

A phantom carries three label maps on the CT grid:

- ``labels`` (:data:`LABELS`): the tissue class of every voxel, as every CT dataset of the bundle has;
- ``bones`` (:data:`BONE_LABELS`): which bone a bone voxel belongs to: the seven calvarial bones of the
  growth model's bone map (Liu et al. 2023) and, as one class, the skull base, face and spine;
- ``openings`` (:data:`OPENINGS`): vault voxels that an open suture or fontanelle empties.

A suture is the border between two calvarial bones (:data:`SUTURE_BONES`); it is *patent* (open) when
its gap is present, *fused* when the two bones meet. SPIDER's structure head learns all three at once
as :data:`STRUCTURES` (:func:`structure_map`): tissues, one class per calvarial bone, the other bone,
and the open sutures and fontanelles.
"""

from __future__ import annotations

import torch

LABELS = {"background": 0, "soft_tissue": 1, "brain": 2, "bone": 3}  # tissue label map values
BONES = (  # calvarial bones, values 1..7 of the bone map, in the order of the growth model's bone map
    "frontal_right",
    "frontal_left",
    "parietal_right",
    "parietal_left",
    "occipital",
    "temporal_right",  # the squamous part
    "temporal_left",
)
OTHER_BONE = "base_face_spine"  # value 8: every bone voxel outside the calvarium
BONE_LABELS = {"none": 0, **{name: i + 1 for i, name in enumerate(BONES)}, OTHER_BONE: len(BONES) + 1}
SUTURE_BONES = {  # suture -> the two bones it separates (names of BONES)
    "metopic": ("frontal_right", "frontal_left"),
    "sagittal": ("parietal_right", "parietal_left"),
    "coronal_right": ("frontal_right", "parietal_right"),
    "coronal_left": ("frontal_left", "parietal_left"),
    "lambdoid_right": ("parietal_right", "occipital"),
    "lambdoid_left": ("parietal_left", "occipital"),
    "squamosal_right": ("parietal_right", "temporal_right"),
    "squamosal_left": ("parietal_left", "temporal_left"),
}
SUTURES = tuple(SUTURE_BONES)
FONTANELLE_BONES = {  # fontanelle -> the bones meeting at it
    "anterior_fontanelle": ("frontal_right", "frontal_left", "parietal_right", "parietal_left"),
    "posterior_fontanelle": ("parietal_right", "parietal_left", "occipital"),
}
OPENINGS = (*SUTURES, *FONTANELLE_BONES)  # values 1.. of the openings map
STRUCTURES = {  # SPIDER's structure classes: tissues with bone split by bone, and the openings
    "background": 0,
    "soft_tissue": 1,
    "brain": 2,
    **{name: 3 + i for i, name in enumerate(BONES)},
    OTHER_BONE: 3 + len(BONES),
    "suture": 4 + len(BONES),  # an open suture's gap
    "fontanelle": 5 + len(BONES),  # an open fontanelle
}
BONE_STRUCTURES = tuple(range(3, 4 + len(BONES)))  # structure classes that are bone
VOCABULARIES = {"tissues": LABELS, "structures": STRUCTURES}  # the label maps a case can carry, by name
BONE_CLASS = {"tissues": LABELS["bone"], "structures": STRUCTURES[OTHER_BONE]}  # bone of a CT without labels


def structure_map(labels: torch.Tensor, bones: torch.Tensor, openings: torch.Tensor) -> torch.Tensor:
    """A phantom's :data:`STRUCTURES` map from its tissue, bone and opening maps (same shape, uint8).

    Bone voxels take their bone's class; the voxels of an open suture or fontanelle take the suture or
    fontanelle class whatever their tissue (a partial-volume gap can leave them labelled bone).
    """
    out = labels.to(torch.uint8).clone()
    out[bones > 0] = (bones[bones > 0] + 2).to(torch.uint8)  # bone-map values 1..8 -> classes 3..10
    sutures = (openings > 0) & (openings <= len(SUTURES))
    out[sutures] = STRUCTURES["suture"]
    out[openings > len(SUTURES)] = STRUCTURES["fontanelle"]
    return out


def tissues_from_structures(structures: torch.Tensor) -> torch.Tensor:
    """The :data:`LABELS` map of a :data:`STRUCTURES` map: bones are bone, openings soft tissue (fibrous)."""
    out = structures.clone()
    out[(structures >= BONE_STRUCTURES[0]) & (structures <= BONE_STRUCTURES[-1])] = LABELS["bone"]
    out[structures > BONE_STRUCTURES[-1]] = LABELS["soft_tissue"]
    return out


def suture_between(first: int, second: int) -> str | None:
    """The suture separating two bone-map values (1..7), or None if they share no named suture."""
    names = {BONE_LABELS[a] * 16 + BONE_LABELS[b]: s for s, (a, b) in SUTURE_BONES.items()}
    return names.get(first * 16 + second) or names.get(second * 16 + first)


__all__ = [
    "BONE_CLASS",
    "VOCABULARIES",
    "BONE_STRUCTURES",
    "BONES",
    "BONE_LABELS",
    "FONTANELLE_BONES",
    "LABELS",
    "OPENINGS",
    "OTHER_BONE",
    "STRUCTURES",
    "SUTURES",
    "SUTURE_BONES",
    "structure_map",
    "suture_between",
    "tissues_from_structures",
]
