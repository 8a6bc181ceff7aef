"""The bundle's workflows end to end through ``python -m monai.bundle run``, on a tiny grid on the CPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from custom.imaging.geometry import BiplanarGeometry
from custom.metrics.protocol import TRACK_A, TRACK_B
from custom.networks.psctnet import psctnet
from custom.phantom import STRUCTURES

pytestmark = pytest.mark.slow  # runs the bundle workflows

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundle" / "configs"
TINY_GEOMETRY = BiplanarGeometry(vol_shape=(32,) * 3, vol_spacing=6.0, det_shape=(32, 32), det_spacing=7.2)
TINY_GRID = [
    "--geometry#vol_shape", "[32,32,32]", "--geometry#vol_spacing", "6.0",
    "--geometry#det_shape", "[32,32]", "--geometry#det_spacing", "7.2",
]  # fmt: skip
TINY = [*TINY_GRID, "--network_def#preset", "tiny"]
TRAINING_DATA = [
    "--discriminator_def#channels", "4", "--discriminator_def#num_layers", "1", "--discriminator_def#num_scales", "1",
    "--num_phantoms", "6", "--num_workers", "0",
]  # fmt: skip
TINY_TRAINING = [*TINY, *TRAINING_DATA]
SPIDER_TINY = [
    *TINY_GRID,
    "--network_def#unet_features", "[4,4,8,8,16,4]", "--network_def#feature_channels", "4",
    "--network_def#hash_levels", "4", "--network_def#hash_features", "2", "--network_def#hash_log2_table_size", "10",
    "--network_def#hidden", "[16]",
]  # fmt: skip
TRAIN = str(CONFIGS / "train.json")


def bundle(
    *args: str, cwd: Path = ROOT, check: bool = True, launcher: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """``python -m monai.bundle ARGS`` in a fresh process (optionally under a launcher such as torchrun)."""
    command = [*launcher, "-m", "monai.bundle", *args] if launcher else [sys.executable, "-m", "monai.bundle", *args]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def train(
    tmp: Path,
    *extra: str,
    check: bool = True,
    config: str = TRAIN,
    launcher: tuple[str, ...] = (),
    network: list[str] = TINY,
):
    folders = ["--output_dir", str(tmp / "eval"), "--ckpt_dir", str(tmp / "models")]
    options = [*folders, *network, *TRAINING_DATA, *extra]
    return bundle("run", "training", "--config_file", config, *options, check=check, launcher=launcher)


def generator_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_training_validates_saves_the_best_generator_and_a_full_checkpoint_each_epoch(tmp_path):
    train(tmp_path, "--epochs", "2")
    best = generator_state(tmp_path / "models" / "model.pt")
    network = psctnet("tiny", TINY_GEOMETRY)
    network.load_state_dict(best)  # a plain generator state_dict
    (checkpoint,) = (tmp_path / "eval" / "checkpoints").glob("*.pt")
    assert checkpoint.name == "checkpoint_epoch=2.pt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    expected = {"generator", "discriminator", "g_optimizer", "d_optimizer", "g_scheduler", "d_scheduler"}
    assert expected | {"g_scaler", "d_scaler", "rng", "trainer"} <= state.keys()
    assert state["trainer"]["iteration"] == 8 and state["g_scheduler"]["last_epoch"] == 2  # 2 epochs of 4 cases
    assert list((tmp_path / "eval").glob("events.out.tfevents.*")), "no TensorBoard events"


def test_resumed_training_through_the_bundle_equals_an_uninterrupted_run(tmp_path):
    train(tmp_path / "whole", "--epochs", "2")
    train(tmp_path / "parts", "--epochs", "1")
    refused = train(tmp_path / "parts", "--epochs", "2", check=False)  # a new run would replace its checkpoints
    assert refused.returncode != 0 and "--resume true" in refused.stderr
    train(tmp_path / "parts", "--epochs", "2", "--resume", "true")
    whole = torch.load(tmp_path / "whole" / "eval" / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    parts = torch.load(tmp_path / "parts" / "eval" / "checkpoints" / "checkpoint_epoch=2.pt", weights_only=True)
    for network in ("generator", "discriminator"):
        for name, value in whole[network].items():
            assert torch.allclose(value.float(), parts[network][name].float(), atol=1e-6), (network, name)


def test_evaluation_writes_per_case_metrics_and_a_summary(tmp_path):
    train(tmp_path, "--epochs", "1")
    configs = json.dumps([TRAIN, str(CONFIGS / "evaluate.json")])
    folders = ["--output_dir", str(tmp_path / "eval"), "--ckpt_dir", str(tmp_path / "models")]
    bundle("run", "evaluate", "--config_file", configs, *folders, *TINY_TRAINING)
    report = tmp_path / "eval" / "evaluation"
    rows = list(csv.DictReader((report / "metrics.csv").open()))
    assert list(rows[0]) == ["case", *TRACK_A, *TRACK_B] and len(rows) == 1  # 6 phantoms: one test case
    assert 0 < float(rows[0]["hd95_mm"]) and 0 < float(rows[0]["projection_psnr"]) < 100
    summary = json.loads((report / "summary.json").read_text())
    assert summary["cases"] == 1 and 0 < summary["track_b"]["mae_hu"]["mean"] < 3072
    again = bundle("run", "evaluate", "--config_file", configs, *folders, *TINY_TRAINING, check=False)
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr


def test_two_process_gloo_training_checkpoints_on_rank_zero(tmp_path):
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533")
    configs = json.dumps([TRAIN, str(CONFIGS / "multi_gpu_train.json")])
    train(tmp_path, "--epochs", "1", config=configs, launcher=torchrun)
    assert [p.name for p in (tmp_path / "eval" / "checkpoints").glob("*.pt")] == ["checkpoint_epoch=1.pt"]
    psctnet("tiny", TINY_GEOMETRY).load_state_dict(generator_state(tmp_path / "models" / "model.pt"))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """Weights of the tiny network (untrained, with a random floor: inference tests check files, not quality)."""
    path = tmp_path_factory.mktemp("weights") / "model.pt"
    torch.manual_seed(0)
    model = psctnet("tiny", TINY_GEOMETRY)
    with torch.no_grad():
        model.floor.offset.uniform_(-0.2, 1.2)  # beyond the networks' range both ways: the output is clipped
    torch.save(model.state_dict(), path)
    return path


def infer(
    weights: Path, out: Path, *extra: str, cwd: Path = ROOT, config: str = "bundle/configs/inference.json", check=True
):
    args = ["run", "inference", "--config_file", config, "--ckpt_path", str(weights), "--output_dir", str(out)]
    return bundle(*args, *TINY, *extra, cwd=cwd, check=check)


def test_inference_on_the_sample_pair_writes_the_ct_on_the_grid_and_a_preview(tmp_path, tiny_weights):
    infer(tiny_weights, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.nii.gz", "sample.png"]
    image = nib.load(tmp_path / "sample.nii.gz")
    assert image.get_data_dtype() == np.int16 and image.shape == TINY_GEOMETRY.vol_shape
    assert np.allclose(image.affine, TINY_GEOMETRY.affine) and np.allclose(image.header.get_zooms(), 6.0)
    hu = np.asanyarray(image.dataobj)
    assert hu.min() == -1024 and hu.max() == 2048  # clipped to the networks' range in HU


def test_inference_runs_from_the_bundle_root_and_never_overwrites(tmp_path, tiny_weights):
    infer(tiny_weights, tmp_path, cwd=ROOT / "bundle", config="configs/inference.json")
    written = (tmp_path / "sample.nii.gz").read_bytes()
    again = infer(tiny_weights, tmp_path, check=False)
    assert again.returncode != 0 and "results of an earlier run are in the way" in again.stderr
    assert (tmp_path / "sample.nii.gz").read_bytes() == written and not list(tmp_path.glob(".*"))
    infer(tiny_weights, tmp_path, "--overwrite", "true")


def test_inference_writes_readable_dicom_and_stl_for_a_datalist(tmp_path, tiny_weights):
    import itk
    import pydicom

    samples = ROOT / "bundle" / "docs" / "samples"
    datalist = tmp_path / "cases.json"
    pair = {"frontal": str(samples / "sample_frontal.png"), "lateral": str(samples / "sample_lateral.png")}
    datalist.write_text(json.dumps([{"case": "../../escape me", **pair}]))
    out = tmp_path / "out"
    infer(
        tiny_weights,
        out,
        "--input_datalist",
        str(datalist),
        "--save_dicom",
        "true",
        "--save_stl",
        "true",
        "--bone_hu",
        "-2000",
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "escape_me.nii.gz",
        "escape_me.png",
        "escape_me_bone.stl",
        "escape_me_dicom",
    ]
    slices = sorted((out / "escape_me_dicom").iterdir())
    assert len(slices) == 32 and pydicom.dcmread(slices[0]).Modality == "CT"
    series = itk.imread(str(out / "escape_me_dicom"))
    assert tuple(itk.size(series)) == (32, 32, 32)
    stl = (out / "escape_me_bone.stl").read_bytes()
    assert len(stl) == 84 + 50 * int.from_bytes(stl[80:84], "little") > 84


def test_training_and_inference_define_the_same_geometry_and_network():
    training, inference = (json.loads((CONFIGS / name).read_text()) for name in ("train.json", "inference.json"))
    assert training["geometry"] == inference["geometry"]
    assert training["network_def"] == inference["network_def"]
    assert (
        BiplanarGeometry.from_dict({k: v for k, v in inference["geometry"].items() if k != "_target_"})
        == BiplanarGeometry()
    )


@pytest.mark.parametrize("resume", [False, True])
def test_the_floor_is_fitted_on_a_fresh_run_and_left_to_the_checkpoint_on_a_resume(tmp_path, resume):
    from monai.bundle import ConfigParser

    (tmp_path / "eval" / "checkpoints").mkdir(parents=True)
    (tmp_path / "eval" / "checkpoints" / "checkpoint_epoch=1.pt").touch()
    parser = ConfigParser()
    parser.read_config(TRAIN)
    tiny = {"geometry#vol_shape": [32] * 3, "geometry#vol_spacing": 6.0, "geometry#det_shape": [32, 32]}
    folders = {"output_dir": str(tmp_path / "eval"), "ckpt_dir": str(tmp_path / "models")}
    parser.update({**tiny, **folders, "network_def#preset": "tiny", "num_phantoms": 4, "resume": resume})
    parser.update({"overwrite": True, "num_workers": 0, "geometry#det_spacing": 7.2})
    fitted = parser.get_parsed_content("train#fit_floor")
    assert (fitted is None) == resume  # disabled on a resume: the checkpoint brings the fitted floor
    if not resume:
        assert fitted is parser.get_parsed_content("network") and fitted.floor.offset.abs().sum() > 0


def test_tracking_with_mlflow_logs_losses_and_validation_metrics(tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="the optional [mlflow] extra is not installed")
    train(tmp_path, "--epochs", "1", "--tracking", "mlflow")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'eval' / 'mlruns.db'}")
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert {"train_loss", "val_psnr_3d", "val_bone_dice"} <= run.data.metrics.keys()


def test_evaluation_runs_on_real_ct_scans(tmp_path, tiny_weights):
    shared = ROOT.parent / "shared" / "data"
    scans = [shared / "ct" / "skull_phantom_bone_1mm.nii.gz", shared / "dicom" / "skull_phantom_series"]
    if not all(p.exists() for p in scans):
        pytest.skip(f"the real scans in {shared} are absent")
    datalist = tmp_path / "real.json"
    datalist.write_text(json.dumps({"test": [{"case": p.name, "ct": str(p)} for p in scans]}))
    configs = json.dumps([TRAIN, str(CONFIGS / "evaluate.json")])
    folders = ["--output_dir", str(tmp_path / "eval"), "--ckpt_path", str(tiny_weights)]
    bundle("run", "evaluate", "--config_file", configs, *folders, *TINY_TRAINING, "--dataset_dir", str(datalist))
    rows = list(csv.DictReader((tmp_path / "eval" / "evaluation" / "metrics.csv").open()))
    assert sorted(row["case"] for row in rows) == sorted(p.name for p in scans)
    assert all(0 < float(row["mae_hu"]) < 3072 for row in rows)


def test_spider_trains_evaluates_and_infers_ct_and_labels_through_the_bundle(tmp_path):
    spider_train = json.dumps([TRAIN, str(CONFIGS / "spider_train.json")])
    train(tmp_path, "--epochs", "2", "--points", "512", config=spider_train, network=SPIDER_TINY)
    weights = tmp_path / "models" / "spider_model.pt"
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert any(name.startswith("hash.") for name in state) and not (tmp_path / "models" / "model.pt").exists()
    (checkpoint,) = (tmp_path / "eval" / "checkpoints").glob("*.pt")
    assert {"generator", "g_optimizer", "grad_scaler", "rng", "trainer"} <= torch.load(
        checkpoint, weights_only=True
    ).keys()
    evaluate = json.dumps([TRAIN, str(CONFIGS / "spider_train.json"), str(CONFIGS / "evaluate.json")])
    folders = ["--output_dir", str(tmp_path / "eval"), "--ckpt_path", str(weights)]
    bundle("run", "evaluate", "--config_file", evaluate, *folders, *SPIDER_TINY, *TRAINING_DATA)
    rows = list(csv.DictReader((tmp_path / "eval" / "evaluation" / "metrics.csv").open()))
    assert rows and all(0 <= float(row["patency_agreement"]) <= 1 for row in rows)  # the structures track
    summary = json.loads((tmp_path / "eval" / "evaluation" / "summary.json").read_text())
    assert "dice_calvarial_bones" in summary["structures"] or rows[0]["dice_calvarial_bones"] == "nan"
    inference = json.dumps([str(CONFIGS / "inference.json"), str(CONFIGS / "spider_inference.json")])
    out = tmp_path / "out"
    bundle(
        "run",
        "inference",
        "--config_file",
        inference,
        "--ckpt_path",
        str(weights),
        "--output_dir",
        str(out),
        *SPIDER_TINY,
    )
    ct, labels = nib.load(out / "sample.nii.gz"), nib.load(out / "sample_labels.nii.gz")
    assert ct.shape == labels.shape == TINY_GEOMETRY.vol_shape and np.allclose(labels.affine, TINY_GEOMETRY.affine)
    assert set(np.unique(np.asanyarray(labels.dataobj))) <= {0, 1, 2, 3}
    structures = nib.load(out / "sample_structures.nii.gz")  # the bone-label map: bones, sutures, fontanelles
    assert set(np.unique(np.asanyarray(structures.dataobj))) <= set(STRUCTURES.values())
