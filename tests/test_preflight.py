"""Inference's checks before any compute: every case, the output folder, the weights; user errors in one line."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from custom.data.datasets import xray_datalist
from custom.data.preflight import check_weights, inference_cases
from custom.data.xray import LoadXRayd
from custom.errors import (
    DEBUG_HINT,
    ExistingOutputError,
    InvalidInputError,
    MissingInputError,
    OutputFolderError,
    UserError,
    report_user_errors,
    user_error_in,
)
from custom.files import STAGING_PREFIX
from custom.imaging.geometry import BiplanarGeometry
from custom.outputs.reconstruction import SaveReconstructiond
from PIL import Image

SAMPLES = Path(__file__).resolve().parents[1] / "bundle" / "docs" / "samples"
PAIR = {"frontal": str(SAMPLES / "sample_frontal.png"), "lateral": str(SAMPLES / "sample_lateral.png")}
GEOMETRY = BiplanarGeometry(vol_shape=(16,) * 3, vol_spacing=12.0, det_shape=(64, 64), det_spacing=3.6)


def _image(path: Path, shape: tuple[int, int]) -> str:
    Image.fromarray((np.indices(shape).sum(0) % 256).astype(np.uint8)).save(path)
    return str(path)


def _checked(items, output_dir, **options):
    writer = SaveReconstructiond(GEOMETRY, output_dir)
    return inference_cases(items, LoadXRayd(geometry=GEOMETRY), writer.paths, output_dir, **options)


def _datalist(tmp_path: Path) -> list[dict[str, str]]:
    """Five cases, the third to fifth bad: a tiny image, a folder, a missing file."""
    return [
        {"case": "a", **PAIR},
        {"case": "b", **PAIR},
        {"case": "c", "frontal": _image(tmp_path / "icon.png", (8, 8)), "lateral": PAIR["lateral"]},
        {"case": "d", "frontal": PAIR["frontal"], "lateral": str(tmp_path)},
        {"case": "e", "frontal": str(tmp_path / "gone.png"), "lateral": PAIR["lateral"]},
    ]


def test_every_bad_case_is_named_before_anything_is_written(tmp_path):
    with pytest.raises(InvalidInputError) as refused:
        _checked(_datalist(tmp_path), tmp_path / "out")
    message = str(refused.value)
    assert message.startswith("3 of 5 cases cannot be reconstructed, so nothing was: case 'c': ")
    assert "8 x 8 pixels; an X-ray needs at least 32" in message and "case 'd': " in message
    assert f"{tmp_path} is a folder, not an X-ray file" in message and "case 'e': " in message
    assert "no such X-ray file" in message and "--skip_bad_cases true" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_skipping_bad_cases_reconstructs_the_rest_and_reports_them(tmp_path):
    kept = _checked(_datalist(tmp_path), tmp_path / "out", skip_bad_cases=True)
    assert [item["case"] for item in kept] == ["a", "b"]
    (report,) = (tmp_path / "out").glob("skipped_cases_*.json")
    content = json.loads(report.read_text())
    assert content["reconstructed"] == 2 and [s["case"] for s in content["skipped"]] == ["c", "d", "e"]
    assert "8 x 8 pixels" in content["skipped"][0]["reason"]


def test_no_usable_case_at_all_is_an_error_even_when_skipping(tmp_path):
    with pytest.raises(InvalidInputError, match="none of the 1 cases"):
        _checked(_datalist(tmp_path)[2:3], tmp_path / "out", skip_bad_cases=True)


def test_a_coarse_image_is_reconstructed_with_a_warning(tmp_path):
    item = {"case": "coarse", "frontal": _image(tmp_path / "f.png", (40, 40)), "lateral": PAIR["lateral"]}
    detector = BiplanarGeometry(det_shape=(128, 128))
    load, paths = LoadXRayd(geometry=detector), SaveReconstructiond(detector, tmp_path).paths
    with pytest.warns(UserWarning, match=r"'coarse': the frontal X-ray .*\(40 x 40 pixels\) is magnified 3.2x") as w:
        assert inference_cases([item], load, paths, tmp_path) == [item]
    assert len(w) == 1  # the 128-pixel lateral fills the 128-pixel detector as it is


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_an_unusable_output_folder_is_found_before_any_case_runs(tmp_path, where):
    (tmp_path / "file").write_text("")
    output = tmp_path / "file" if where == "a file" else tmp_path / "file" / "out"
    with pytest.raises(OutputFolderError, match="give a folder"):
        _checked([{"case": "a", **PAIR}], output)


def test_existing_results_are_listed_and_kept_unless_overwriting(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"earlier")
    with pytest.raises(ExistingOutputError, match=r"1 results of an earlier run .*a.nii.gz.*--overwrite true"):
        _checked([{"case": "a", **PAIR}, {"case": "b", **PAIR}], tmp_path)
    assert _checked([{"case": "a", **PAIR}], tmp_path, overwrite=True) == [{"case": "a", **PAIR}]


def test_what_a_killed_run_left_is_removed_before_the_checks(tmp_path):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f"{STAGING_PREFIX}{int(child.stdout)}.x"
    leftover.mkdir()
    (leftover / "a.nii.gz").write_bytes(b"half")  # uncommitted: the kill came while writing
    assert _checked([{"case": "a", **PAIR}], tmp_path) == [{"case": "a", **PAIR}]
    assert list(tmp_path.iterdir()) == []


def test_the_same_file_for_both_views_is_refused():
    with pytest.raises(InvalidInputError, match="same file is given for more than one view"):
        LoadXRayd(geometry=GEOMETRY)({"frontal": PAIR["frontal"], "lateral": str(SAMPLES / "." / "sample_frontal.png")})


def test_weights_must_exist_and_fit_the_configured_network(tmp_path):
    network = torch.nn.Conv3d(1, 2, 3)
    with pytest.raises(MissingInputError, match="no weights at .*nowhere.pt: give the weights file with --ckpt_path"):
        check_weights(tmp_path / "nowhere.pt", network)
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(InvalidInputError, match="not a weights file"):
        check_weights(tmp_path / "notes.pt", network)
    torch.save(torch.nn.Conv3d(1, 4, 3).state_dict(), tmp_path / "other.pt")
    with pytest.raises(InvalidInputError, match=r"2 differences: weight is \(4, 1, 3, 3, 3\), the network's is \(2, "):
        check_weights(tmp_path / "other.pt", network)
    torch.save({"model": network.state_dict()}, tmp_path / "mine.pt")  # MONAI's checkpoint layout
    assert check_weights(tmp_path / "mine.pt", network) == tmp_path / "mine.pt"


def test_the_user_error_is_found_behind_monais_wrappers():
    try:
        try:
            xray_datalist(frontal=PAIR["frontal"])
        except ValueError as error:
            raise RuntimeError("Failed to evaluate ConfigExpression") from error
    except RuntimeError as wrapped:
        found = user_error_in(wrapped)
    assert isinstance(found, UserError) and "give the lateral one too" in str(found)
    assert user_error_in(RuntimeError("a programming error")) is None


def test_the_one_line_report_is_installed_only_for_monai_bundle_runs():
    assert report_user_errors() is False  # pytest is not ``python -m monai.bundle``: tracebacks stay


def test_the_hook_prints_user_errors_in_one_line_and_passes_other_errors_on(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *info: seen.append(info[1]))
    main = type(sys)("__main__")
    main.__spec__ = importlib.util.find_spec("monai.bundle.__main__")  # as under python -m monai.bundle
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert report_user_errors(debug=True) is False  # --debug true: tracebacks as usual
    assert report_user_errors() is True
    wrapped = RuntimeError("Failed to evaluate ConfigExpression")
    wrapped.__cause__ = MissingInputError("no weights at x.pt:\nline two")
    sys.excepthook(RuntimeError, wrapped, None)
    assert capsys.readouterr().err == f"error: no weights at x.pt:; line two ({DEBUG_HINT})\n" and not seen
    bug = TypeError("a programming error")
    sys.excepthook(TypeError, bug, None)
    assert seen == [bug] and capsys.readouterr().err == ""
