from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from custom.imaging.geometry import VIEW_NAMES, BiplanarGeometry
from custom.imaging.physics import NETWORK_HU_RANGE
from monai.bundle import verify_metadata

ROOT = Path(__file__).resolve().parents[1]
METADATA = ROOT / "bundle" / "configs" / "metadata.json"
SCHEMA = Path(__file__).resolve().parent / "data" / "meta_schema_20240725.json"  # vendored: machines may be offline


def test_metadata_is_valid_against_the_model_zoo_schema(tmp_path):
    metadata = json.loads(METADATA.read_text())
    jsonschema.validate(metadata, json.loads(SCHEMA.read_text()))
    assert metadata["schema"].endswith(SCHEMA.name)
    local = tmp_path / SCHEMA.name
    local.write_bytes(SCHEMA.read_bytes())
    verify_metadata(meta_file=str(METADATA), filepath=str(local))  # MONAI's own check, with the local schema


def test_vendored_schema_matches_the_shared_copy():
    shared = ROOT.parent / "shared" / "schemas" / SCHEMA.name
    if not shared.exists():
        pytest.skip(f"{shared} is absent")
    assert json.loads(shared.read_text()) == json.loads(SCHEMA.read_text())


def test_network_data_format_states_the_real_input_and_output():
    geometry, formats = BiplanarGeometry(), json.loads(METADATA.read_text())["network_data_format"]
    image, pred = formats["inputs"]["image"], formats["outputs"]["pred"]
    assert image["num_channels"] == len(VIEW_NAMES) and image["spatial_shape"] == list(geometry.det_shape)
    assert image["channel_def"] == {str(i): name for i, name in enumerate(VIEW_NAMES)}
    assert pred["spatial_shape"] == list(geometry.vol_shape) and pred["value_range"] == [0, 1]
    low, high = NETWORK_HU_RANGE
    assert f"HU = {low:g} + {high - low:g} * value" in pred["channel_def"]["0"]


def test_intended_use_is_research_only():
    assert "not for diagnostic use" in json.loads(METADATA.read_text())["intended_use"]


def test_eval_metrics_are_the_committed_benchmark_of_the_shipped_weights():
    """``eval_metrics`` quote ``docs/benchmarks/cpu128/results.json`` (``psctnet``: the shipped weights)."""
    metrics = json.loads(METADATA.read_text())["eval_metrics"]
    results = json.loads((ROOT / "bundle" / "docs" / "benchmarks" / "cpu128" / "results.json").read_text())
    (shipped,) = [r["track_b"] for r in results if r["variant"] == "psctnet"]
    assert metrics["psnr_3d_db"] == pytest.approx(shipped["psnr_3d"], abs=0.005)
    assert metrics["ssim_3d"] == pytest.approx(shipped["ssim_3d"], abs=0.0005)
    assert metrics["mae_hu"] == pytest.approx(shipped["mae_hu"], abs=0.005)
    assert metrics["bone_dice_300hu"] == pytest.approx(shipped["bone_dice"], abs=0.0005)


def test_the_version_has_a_changelog_entry_and_is_the_newest():
    """The model zoo's version check: ``version`` is a key of ``changelog``, and the latest one."""
    metadata = json.loads(METADATA.read_text())
    versions = [tuple(map(int, v.split("."))) for v in metadata["changelog"]]
    assert metadata["version"] in metadata["changelog"]
    assert tuple(map(int, metadata["version"].split("."))) == max(versions)
