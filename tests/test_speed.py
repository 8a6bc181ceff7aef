from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from custom.cli.speed import NETWORK_OPS, OPS, demo, measure, measure_network, networks, phantoms, projector
from custom.imaging.ellipsoids import analytic_head
from custom.imaging.geometry import BiplanarGeometry
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"op": str, "size": int, "device": str, "dtype": str, "median_ms": float, "peak_mem_mb": float}


@pytest.mark.slow
@pytest.mark.parametrize("op", OPS)
def test_measure_returns_a_comparable_record(op):
    record = measure(op, 16, "cpu", "float32", repeats=2, warmup=1)
    assert {k: type(record[k]) for k in KEYS} == KEYS
    assert record["op"] == op and record["size"] == 16 and record["median_ms"] > 0
    assert record["device"].startswith("cpu: ") and "threads" in record["device"]


@pytest.mark.slow
def test_projector_command_writes_json_records(tmp_path):
    out = tmp_path / "projector.json"
    command = [
        sys.executable,
        "-m",
        "custom.cli.speed",
        "projector",
        "--json",
        str(out),
        "--sizes",
        "16",
        "--repeats",
        "2",
        "--warmup",
        "1",
    ]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    records = json.loads(out.read_text())
    assert [r["op"] for r in records] == list(OPS) and all(r["size"] == 16 for r in records)
    # a second run refuses to replace the results
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr


def test_projector_rejects_unknown_ops():
    with pytest.raises(ValueError, match="unknown ops"):
        projector(ops=["sideways"])


@pytest.mark.slow
def test_demo_writes_images_that_show_the_patients_left_on_the_right(tmp_path):
    demo(out=str(tmp_path))
    frontal, lateral = (np.asarray(Image.open(tmp_path / f"{name}.png")) for name in ("frontal", "lateral"))
    assert frontal.shape == lateral.shape == (128, 128) and frontal.dtype == np.uint8
    # the lead marker beside the left temple (outside a symmetric head) is on the right of the PA image
    marker = analytic_head()[0][-1]
    row, col = BiplanarGeometry().frontal.project(torch.tensor(marker.centre)).round().int().tolist()
    assert col > 64
    assert int(frontal[row, col]) > int(frontal[row, 127 - col]) + 50
    # below the vault only the face and mandible remain: on the left of the lateral image
    assert lateral[100:, :64].astype(int).sum() > 3 * lateral[100:, 64:].astype(int).sum()
    geometry = json.loads((tmp_path / "geometry.json").read_text())
    assert geometry["det_shape"] == [128, 128]
    with pytest.raises(FileExistsError):
        demo(out=str(tmp_path))


@pytest.mark.slow
def test_phantoms_command_writes_a_timing_record(tmp_path):
    out = tmp_path / "phantoms.json"
    phantoms(json=str(out), n=2, size=32)
    (record,) = json.loads(out.read_text())
    assert record["op"] == "phantom" and record["n"] == 2 and 0 < record["median_s"] <= record["max_s"]
    assert record["device"].startswith("cpu: ") and "(1 threads)" in record["device"]
    with pytest.raises(FileExistsError):
        phantoms(json=str(out), n=1, size=32)


@pytest.mark.slow
@pytest.mark.parametrize("op", NETWORK_OPS)
def test_measure_network_reports_parameters_and_time(op):
    size = 16 if op.startswith("generator") else 64  # the default discriminator needs 64 voxels per side
    record = measure_network(op, size, "tiny", "cpu", "float32", repeats=1, warmup=0)
    assert {k: type(record[k]) for k in KEYS} == KEYS and record["op"] == op and record["median_ms"] > 0
    assert record["params"] > 0 and record["selective_scan"] == "torch"
    if op.startswith("generator"):
        from custom.networks.psctnet import parameter_counts, psctnet

        geometry = BiplanarGeometry().resampled((16,) * 3, (16, 16))
        assert record["preset"] == "tiny" and record["params"] == parameter_counts(psctnet("tiny", geometry))["total"]


@pytest.mark.slow
def test_networks_command_writes_one_discriminator_record_per_size(tmp_path):
    out = tmp_path / "networks.json"
    networks(
        str(out), sizes=64, presets=("tiny", "tiny"), ops=("generator_fwd", "discriminator_fwd"), repeats=1, warmup=0
    )
    records = json.loads(out.read_text())
    assert [r["op"] for r in records] == ["generator_fwd", "generator_fwd", "discriminator_fwd"]
    with pytest.raises(ValueError, match="unknown ops"):
        networks(ops=["backward"])
