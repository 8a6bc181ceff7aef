from __future__ import annotations

import torch
from custom.data.labels import SplitStructuredPredictiond, StructureLabelsd, labels_from_hu
from custom.phantom import LABELS
from monai.data import MetaTensor


def test_threshold_classes_of_air_soft_tissue_and_bone():
    hu = torch.tensor([-1000.0, -501.0, -499.0, 40.0, 300.0, 301.0, 1500.0])
    expected = ["background", "background", "soft_tissue", "soft_tissue", "soft_tissue", "bone", "bone"]
    assert labels_from_hu(hu).tolist() == [LABELS[name] for name in expected]


def test_a_ct_gets_labels_on_its_grid_and_phantom_labels_are_kept():
    affine = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0]))
    ct = MetaTensor(torch.full((1, 4, 4, 4), 1000.0), affine=affine)
    made = StructureLabelsd()({"ct": ct})["labels"]
    assert (made == LABELS["bone"]).all() and torch.equal(made.affine, affine)
    phantom_labels = torch.full((1, 4, 4, 4), LABELS["brain"], dtype=torch.uint8)
    assert StructureLabelsd()({"ct": ct, "labels": phantom_labels})["labels"] is phantom_labels


def test_a_structured_prediction_splits_into_the_ct_channel_and_the_argmax_labels():
    prediction = torch.zeros(5, 2, 2, 2)
    prediction[0] = 0.25
    prediction[1 + LABELS["bone"], 0] = 3.0  # bone logits win in the first x slice
    prediction[1 + LABELS["brain"], 1] = 3.0
    out = SplitStructuredPredictiond()({"pred": prediction})
    assert out["pred"].shape == (1, 2, 2, 2) and (out["pred"] == 0.25).all()
    assert (out["pred_labels"][0, 0] == LABELS["bone"]).all() and (out["pred_labels"][0, 1] == LABELS["brain"]).all()
