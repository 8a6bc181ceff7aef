"""Structure labels for networks that predict anatomy with the CT (SPIDER).

The classes are the phantom's label map (:data:`custom.phantom.LABELS`: background 0, soft tissue 1,
brain 2, bone 3). A CT without labels (a real scan) gets classes from its HU values
(:class:`StructureLabelsd`): air below -500 HU is background, bone above 300 HU is bone, everything
between is soft tissue; brain cannot be told from other soft tissue by HU alone, so class 2 stays
empty there. :class:`SplitStructuredPredictiond` turns a network's ``1 + C`` output channels back into
the CT channel and a label map, for metrics and writers that expect a one-channel CT.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import MapTransform

from custom.metrics import BONE_HU
from custom.phantom import LABELS

AIR_THRESHOLD_HU = -500.0  # HU; below it a voxel is background


def labels_from_hu(hu: torch.Tensor) -> torch.Tensor:
    """Threshold classes of a CT in HU, same shape, uint8: background, soft tissue or bone."""
    labels = torch.full_like(torch.as_tensor(hu), LABELS["soft_tissue"], dtype=torch.uint8)
    labels[hu < AIR_THRESHOLD_HU] = LABELS["background"]
    labels[hu > BONE_HU] = LABELS["bone"]
    return labels


class StructureLabelsd(MapTransform):
    """Add threshold labels (:func:`labels_from_hu`) of the CT at ``keys`` where an item has none.

    Args:
        keys: the CT key (one), HU. Defaults to ``ct``.
        label_key: where labels live; an existing label map (a phantom's) is kept. Defaults to ``labels``.
    """

    def __init__(self, keys: Hashable = "ct", label_key: Hashable = "labels") -> None:
        super().__init__(keys)
        self.label_key = label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.label_key not in d:
                d[self.label_key] = labels_from_hu(d[key])  # a MetaTensor CT gives a MetaTensor with its affine
        return d


class SplitStructuredPredictiond(MapTransform):
    """Split a (1 + C, X, Y, Z) prediction into the CT channel (kept at ``keys``) and a label map.

    Args:
        keys: the prediction key. Defaults to ``pred``.
        label_key: where the (1, X, Y, Z) argmax of the class logits goes. Defaults to ``pred_labels``.
    """

    def __init__(self, keys: Hashable = "pred", label_key: Hashable = "pred_labels") -> None:
        super().__init__(keys)
        self.label_key = label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            prediction = d[key]
            d[self.label_key] = prediction[1:].argmax(0, keepdim=True).to(torch.uint8)
            d[key] = prediction[:1]
        return d


__all__ = ["AIR_THRESHOLD_HU", "SplitStructuredPredictiond", "StructureLabelsd", "labels_from_hu"]
