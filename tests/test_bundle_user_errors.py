"""Bad inputs as a user meets them through ``python -m monai.bundle run inference``: one line, nothing written.

Each refusal must come before any reconstruction, as one ``error: ...`` line on stderr with exit status
1, leave the output folder as it was, and a rerun after fixing the input must succeed without
clean-up. A kill part-way through a case must leave nothing of that case after the next run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from custom.data.xray import MIN_XRAY_PIXELS
from custom.files import STAGING_PREFIX
from custom.networks.psctnet import psctnet
from PIL import Image
from test_bundle_workflows import ROOT, TINY, TINY_GEOMETRY, infer

pytestmark = pytest.mark.slow
SAMPLES = ROOT / "bundle" / "docs" / "samples"
PAIR = {"frontal": str(SAMPLES / "sample_frontal.png"), "lateral": str(SAMPLES / "sample_lateral.png")}
HINT = " (run with --debug true for the traceback)"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "model.pt"
    torch.manual_seed(0)
    torch.save(psctnet("tiny", TINY_GEOMETRY).state_dict(), path)
    return path


def refused(result: subprocess.CompletedProcess) -> str:
    """The one-line message of a refused run (asserting that it was one line and no traceback)."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Failed to evaluate" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and last.endswith(HINT)
    return last[len("error: ") : -len(HINT)]


def test_one_view_alone_is_refused_naming_the_missing_one(tmp_path, weights):
    message = refused(infer(weights, tmp_path / "out", "--frontal", PAIR["frontal"], check=False))
    assert message == (
        f"only the frontal X-ray was given ({PAIR['frontal']}); give the lateral one too (--lateral FILE): "
        "a reconstruction needs both views of the same child."
    )
    assert not (tmp_path / "out").exists()


def test_a_bad_third_case_fails_the_run_before_anything_is_written_and_a_fixed_list_runs(tmp_path, weights):
    icon = tmp_path / "icon_frontal.png"
    Image.fromarray((np.indices((8, 8)).sum(0) * 16).astype(np.uint8)).save(icon)
    cases = [{"case": name, **PAIR} for name in "ab"]
    cases += [{"case": "c", "frontal": str(icon), "lateral": PAIR["lateral"]}]
    cases += [{"case": "d", "frontal": str(SAMPLES), "lateral": PAIR["lateral"]}]  # a folder
    datalist = tmp_path / "cases.json"
    datalist.write_text(json.dumps(cases))
    out = tmp_path / "out"
    message = refused(infer(weights, out, "--input_datalist", str(datalist), check=False))
    assert message.startswith("2 of 4 cases cannot be reconstructed, so nothing was: case 'c': ")
    assert f"8 x 8 pixels; an X-ray needs at least {MIN_XRAY_PIXELS} on each side" in message
    assert f"case 'd': {SAMPLES} is a folder, not an X-ray file (a folder of X-ray pairs goes to" in message
    assert not out.exists()
    datalist.write_text(json.dumps([{**case, **PAIR} for case in cases]))  # the user fixes the list
    infer(weights, out, "--input_datalist", str(datalist))
    assert sorted(p.name for p in out.iterdir()) == [f"{c}{s}" for c in "abcd" for s in (".nii.gz", ".png")]


@pytest.mark.parametrize("where", ["is a file", "is below a file"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_reconstructing(tmp_path, weights, where):
    (tmp_path / "results").write_text("notes")
    out = tmp_path / "results" if where == "is a file" else tmp_path / "results" / "run1"
    message = refused(infer(weights, out, check=False))
    expected = "is a file" if where == "is a file" else f"cannot be created: {tmp_path / 'results'} is a file"
    assert message == f"the output folder {out} {expected}; give a folder (--output_dir)."
    assert (tmp_path / "results").read_text() == "notes"


def test_missing_weights_and_weights_of_another_geometry_are_named(tmp_path, weights):
    message = refused(infer(tmp_path / "nowhere.pt", tmp_path / "out", check=False))
    assert message == f"no weights at {tmp_path / 'nowhere.pt'}: give the weights file with --ckpt_path."
    other = refused(infer(weights, tmp_path / "out", "--geometry#vol_shape", "[16,16,16]", check=False))
    assert other.startswith(f"the weights in {weights} do not fit the network the config builds (")
    assert other.endswith("use the geometry and network settings they were trained with.")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_the_debug_flag_keeps_the_traceback(tmp_path, weights):
    result = infer(weights, tmp_path / "out", "--frontal", PAIR["frontal"], "--debug", "true", check=False)
    assert result.returncode == 1 and "Traceback" in result.stderr and "give the lateral one too" in result.stderr


KILLED_IN_THE_DICOM_SERIES = """
import os, runpy, signal, sys
import custom.outputs.writers as writers

real_save, slices = writers.save_dicom, []
def save_then_die(dataset, path):  # the process is killed while writing the fifth slice
    slices.append(path)
    if len(slices) == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(dataset, path)

writers.save_dicom = save_then_die
sys.argv = ["monai.bundle", *sys.argv[1:]]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)  # python -m monai.bundle ARGS
"""


def test_a_kill_mid_case_leaves_nothing_of_it_and_the_rerun_needs_no_clean_up(tmp_path, weights):
    out = tmp_path / "out"
    config = str(ROOT / "bundle" / "configs" / "inference.json")
    options = ["--ckpt_path", str(weights), "--output_dir", str(out), "--save_dicom", "true", *TINY]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", KILLED_IN_THE_DICOM_SERIES, "run", "inference", "--config_file", config, *options]
    killed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    (staging,) = out.iterdir()  # all the killed case left: its staging folder, no output
    assert staging.name.startswith(STAGING_PREFIX) and (staging / "sample.nii.gz").is_file()
    rerun = infer(weights, out, "--save_dicom", "true")
    assert "a killed run's incomplete outputs removed" in rerun.stdout + rerun.stderr
    assert sorted(p.name for p in out.iterdir()) == ["sample.nii.gz", "sample.png", "sample_dicom"]
    assert len(list((out / "sample_dicom").iterdir())) == TINY_GEOMETRY.vol_shape[2]
