from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from custom.data.datasets import MakePhantomd
from custom.data.labels import SplitStructuredPredictiond
from custom.imaging.geometry import BiplanarGeometry
from custom.metrics.structures import structure_metrics, suture_patency
from custom.phantom import LABELS, STRUCTURES, SUTURES, make_phantom
from custom.phantom.labels import BONE_STRUCTURES, structure_map, tissues_from_structures

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"


@pytest.fixture(scope="module")
def coronal():
    phantom = make_phantom(9, BiplanarGeometry(), age_months=1.0, variant="left_coronal", pose=False)
    return phantom, structure_map(phantom.labels, phantom.bones, phantom.openings)


def test_patency_reads_the_fused_suture_from_the_truth(coronal):
    _, structures = coronal
    assert suture_patency(structures) == {s: s != "coronal_left" for s in SUTURES}


@pytest.mark.slow
def test_structure_metrics_score_a_perfect_map_and_a_missed_suture(coronal):
    _, truth = coronal
    perfect = structure_metrics(truth, truth)
    assert perfect["dice_calvarial_bones"] == 1 and perfect["patency_agreement"] == 1
    missed = truth.clone()
    missed[truth == STRUCTURES["suture"]] = STRUCTURES["frontal_right"]  # every gap closed: all read fused
    scores = structure_metrics(missed, truth)
    assert scores["patency_coronal_left"] == 1 and scores["patency_agreement"] == pytest.approx(1 / 8)
    bone, extra = int((truth == STRUCTURES["frontal_right"]).sum()), int((truth == STRUCTURES["suture"]).sum())
    assert scores["dice_frontal_right"] == pytest.approx(2 * bone / (2 * bone + extra))
    assert scores["dice_parietal_left"] == 1


def test_structures_reduce_to_the_tissue_labels_outside_the_openings(coronal):
    phantom, structures = coronal
    tissues = tissues_from_structures(structures)
    outside = phantom.openings == 0
    assert torch.equal(tissues[outside], phantom.labels[outside])
    assert set(torch.unique(structures).tolist()) == set(STRUCTURES.values())


def test_phantom_transform_and_split_prediction_speak_structures():
    geometry = BiplanarGeometry(vol_shape=(48,) * 3, vol_spacing=4.0, det_shape=(48, 48))
    item = MakePhantomd(geometry, vocabulary="structures", age_months=1.0)({"phantom_seed": 3})
    assert int(item["labels"].max()) <= max(STRUCTURES.values())
    logits = torch.nn.functional.one_hot(item["labels"][0].long(), len(STRUCTURES)).permute(3, 0, 1, 2).float()
    out = SplitStructuredPredictiond(structure_key="pred_structures")(
        {"pred": torch.cat([torch.zeros(1, 48, 48, 48), logits])}
    )
    assert torch.equal(out["pred_structures"][0], item["labels"][0].to(torch.uint8))
    assert set(torch.unique(out["pred_labels"]).tolist()) <= set(LABELS.values())
    with pytest.raises(ValueError):
        MakePhantomd(geometry, vocabulary="bones")


def test_spider_configs_use_the_structure_vocabulary():
    train = json.loads((CONFIGS / "spider_train.json").read_text())
    inference = json.loads((CONFIGS / "spider_inference.json").read_text())
    assert train["network_def"]["num_classes"] == inference["network_def"]["num_classes"] == len(STRUCTURES)
    assert tuple(train["train#trainer"]["bone_classes"]) == BONE_STRUCTURES
