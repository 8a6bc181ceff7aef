"""The MONAI Label app: a real server on 127.0.0.1 answers /infer with the CT in HU on the geometry's grid.

Runs where MONAI Label is installed (the README's MONAI Label environment; CI builds one); skipped
elsewhere, since MONAI Label cannot share the test environment's pins (it needs pydicom < 3).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from custom.imaging.geometry import BiplanarGeometry
from custom.monailabel.__main__ import app

pytest.importorskip("monailabel")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "bundle" / "docs" / "samples"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def snapshot(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A MONAI Label server started by the documented command, its studies the sample pair."""
    work = tmp_path_factory.mktemp("monailabel")
    studies = work / "studies"
    studies.mkdir()
    for view in ("frontal", "lateral"):
        shutil.copy(SAMPLES / f"sample_{view}.png", studies / f"child01_{view}.png")
    app(str(work / "app"))
    port = free_port()
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(work / "app")]
    command += ["--studies", str(studies), "--conf", "models", "psctnet", "--conf", "device", "cpu"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log = open(work / "server.log", "w")
    process = subprocess.Popen(
        command, cwd=work, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(work)}
    )
    base = f"http://127.0.0.1:{port}"
    try:
        yield base, wait_for(base, process, work / "server.log")
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def wait_for(base: str, process: subprocess.Popen, log: Path) -> dict:
    """The server's ``/info/`` once it answers (start-up takes seconds: imports and the datastore)."""
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"{base}/info/", timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if process.poll() is not None:
                raise AssertionError(f"the server stopped: {log.read_text()[-3000:]}") from None
            time.sleep(1)
    raise AssertionError(f"the server never answered: {log.read_text()[-3000:]}")


def infer(base: str, image: str, output: str, params: dict | None = None) -> bytes:
    """POST ``/infer/psctnet``; ``params`` go as MONAI Label's multipart form field of that name."""
    boundary = "psct-test-boundary"
    form = f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{json.dumps(params or {})}\r\n'
    body = (form + f"--{boundary}--\r\n").encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    url = f"{base}/infer/psctnet?image={image}&output={output}"
    with urllib.request.urlopen(urllib.request.Request(url, body, headers, method="POST"), timeout=300) as response:
        return response.read()


def test_the_app_lists_the_bundle_and_its_model(server):
    _, info = server
    assert info["name"] == json.loads((ROOT / "bundle/configs/metadata.json").read_text())["name"]
    assert info["models"]["psctnet"]["dimension"] == 3
    assert info["datastore"]["total"] == 2  # each view is an image of the studies


def test_infer_returns_the_ct_in_hu_on_the_geometry_grid_twice(server, tmp_path):
    base, _ = server
    bundle_before = snapshot(ROOT / "bundle")
    volumes = []
    for k, image in enumerate(("child01_frontal", "child01_lateral")):  # either view names the case
        path = tmp_path / f"answer{k}.nii.gz"
        path.write_bytes(infer(base, image, "image"))
        volume = nib.load(path)
        assert volume.shape == BiplanarGeometry().vol_shape and volume.get_data_dtype() == np.int16
        assert np.allclose(volume.affine, BiplanarGeometry().affine)
        hu = np.asarray(volume.dataobj)
        assert hu.min() >= -1024 and hu.max() > 300  # air to bone, in HU
        volumes.append(hu)
    assert np.array_equal(volumes[0], volumes[1])
    summary = json.loads(infer(base, "child01_frontal", "json"))
    assert summary["case"] == "child01" and summary["units"] == "HU" and summary["latency_s"] > 0
    assert snapshot(ROOT / "bundle") == bundle_before  # nothing written into the bundle


def test_params_may_name_both_views_and_the_case_follows_inference_naming(server, tmp_path):
    base, _ = server
    views = {view: str(SAMPLES / f"sample_{view}.png") for view in ("frontal", "lateral")}
    summary = json.loads(infer(base, "child01_frontal", "json", params=views))
    assert summary["case"] == "sample" and summary["frontal"] == views["frontal"]
