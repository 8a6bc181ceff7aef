from __future__ import annotations

import json
import math

import pytest
from custom.benchmark.results import markdown, write_results
from custom.metrics.protocol import TRACK_A, TRACK_B
from PIL import Image

EFFICIENCY = {
    "params": 10,
    "model_mb": 0.1,
    "infer_ms": 1.0,
    "peak_mem_mb": 50.0,
    "train_s_per_iter": None,
    "iterations": 0,
}


def _record(name: str, mae: float, psnr: float) -> dict:
    track_b = dict.fromkeys(TRACK_B, 0.5) | {"mae_hu": mae, "psnr_3d": psnr}
    cases = [{"case": "c1", **dict.fromkeys(TRACK_A, 1.0), **track_b}]
    return {
        "variant": name,
        "description": f"{name} method",
        "track_a": dict.fromkeys(TRACK_A, 1.0),
        "track_b": track_b,
        **EFFICIENCY,
        "device": "cpu",
        "cases": cases,
    }


def test_the_best_value_is_bold_in_the_right_direction_and_equal_columns_have_none():
    text = markdown([_record("a", mae=100.0, psnr=20.0), _record("b", mae=50.0, psnr=15.0)], [], {"profile": "x"})
    lines = [line for line in text.splitlines() if line.startswith(("| a |", "| b |"))]
    assert "**20.0**" in lines[0] and "**50.0**" in lines[1]  # higher PSNR, lower MAE
    assert "**100.0**" not in lines[0] and "**15.0**" not in lines[1]
    assert "**" not in lines[2] + lines[3]  # Track A: all equal, no winner
    assert "**" not in lines[4] + lines[5]  # efficiency is not ranked
    assert "- profile: x" in text


def test_result_files_are_strict_json_csv_and_markdown(tmp_path):
    records = [_record("a", mae=math.inf, psnr=math.inf)]
    write_results(tmp_path, records, records, {"ood": "real"}, Image.new("L", (4, 4)))
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert loaded[0]["track_b"]["psnr_3d"] == "inf" and loaded[0]["variant"] == "a"
    assert json.loads((tmp_path / "ood_results.json").read_text())[0]["variant"] == "a"
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert header == ["variant", *TRACK_A, *TRACK_B, *EFFICIENCY, "device"]
    assert (tmp_path / "cases.csv").read_text().splitlines()[1].startswith("a,c1,")
    assert "Out of distribution: real" in (tmp_path / "results.md").read_text()
    with pytest.raises(FileExistsError):
        write_results(tmp_path, records, [], {}, Image.new("L", (4, 4)))
