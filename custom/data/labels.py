"""Structure labels for networks that predict anatomy with the CT (SPIDER).

The classes are the phantom's tissue labels (:data:`custom.phantom.LABELS`: background 0, soft tissue 1,
brain 2, bone 3) or its structures (:data:`custom.phantom.STRUCTURES`: the tissues with bone split
into the seven calvarial bones and the rest, and open sutures and fontanelles). A CT without labels
(a real scan) gets classes from its HU values (:class:`StructureLabelsd`): air below -500 HU is
background, bone above 300 HU is bone, everything between is soft tissue; brain cannot be told from
other soft tissue by HU alone, so class 2 stays empty there. :class:`SplitStructuredPredictiond`
turns a network's ``1 + C`` output channels back into the CT channel and a label map, for metrics and
writers that expect a one-channel CT.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from custom.imaging.physics import AIR_THRESHOLD_HU, BONE_HU
from custom.phantom.labels import BONE_CLASS, LABELS, VOCABULARIES, tissues_from_structures
from monai.transforms import MapTransform


def labels_from_hu(hu: torch.Tensor, vocabulary: str = "tissues") -> torch.Tensor:
    """Threshold classes of a CT in HU, same shape, uint8: background, soft tissue or bone.

    HU cannot tell one bone from another, so in the ``structures`` vocabulary all bone is the "other
    bone" class (:data:`custom.phantom.labels.OTHER_BONE`).
    """
    labels = torch.full_like(torch.as_tensor(hu), LABELS["soft_tissue"], dtype=torch.uint8)
    labels[hu < AIR_THRESHOLD_HU] = LABELS["background"]
    labels[hu > BONE_HU] = BONE_CLASS[vocabulary]
    return labels


class StructureLabelsd(MapTransform):
    """Add threshold labels (:func:`labels_from_hu`) of the CT at ``keys`` where an item has none.

    Args:
        keys: the CT key (one), HU. Defaults to ``ct``.
        label_key: where labels live; an existing label map (a phantom's) is kept. Defaults to ``labels``.
        vocabulary: ``tissues`` (:data:`custom.phantom.LABELS`) or ``structures``
            (:data:`custom.phantom.STRUCTURES`). Defaults to ``tissues``.
    """

    def __init__(self, keys: Hashable = "ct", label_key: Hashable = "labels", vocabulary: str = "tissues") -> None:
        super().__init__(keys)
        if vocabulary not in VOCABULARIES:
            raise ValueError(f"vocabulary must be one of {tuple(VOCABULARIES)}, got {vocabulary!r}.")
        self.label_key, self.vocabulary = label_key, vocabulary

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.label_key not in d:
                # a MetaTensor CT gives a MetaTensor with its affine
                d[self.label_key] = labels_from_hu(d[key], self.vocabulary)
        return d


class SplitStructuredPredictiond(MapTransform):
    """Split a (1 + C, X, Y, Z) prediction into the CT channel (kept at ``keys``) and a label map.

    Args:
        keys: the prediction key. Defaults to ``pred``.
        label_key: where the (1, X, Y, Z) argmax of the class logits goes (as tissue classes when the
            classes are structures). Defaults to ``pred_labels``.
        structure_key: for structure classes (:data:`custom.phantom.STRUCTURES`), where their argmax
            goes. Defaults to None: the classes are tissues.
    """

    def __init__(
        self, keys: Hashable = "pred", label_key: Hashable = "pred_labels", structure_key: Hashable | None = None
    ) -> None:
        super().__init__(keys)
        self.label_key, self.structure_key = label_key, structure_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            prediction = d[key]
            classes = prediction[1:].argmax(0, keepdim=True).to(torch.uint8)
            if self.structure_key is not None:
                d[self.structure_key], classes = classes, tissues_from_structures(classes)
            d[self.label_key] = classes
            d[key] = prediction[:1]
        return d


__all__ = ["SplitStructuredPredictiond", "StructureLabelsd", "labels_from_hu"]
