"""The model-zoo zip: MONAI's checks pass and it runs from a folder outside the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from custom.cli.export import MAX_FILE_MB, export
from custom.imaging.geometry import BiplanarGeometry

pytestmark = pytest.mark.slow  # builds, unzips and runs the zoo package in subprocesses

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "tests" / "data" / "meta_schema_20240725.json"
METADATA = json.loads((ROOT / "bundle" / "configs" / "metadata.json").read_text())
NAME = METADATA["name"]


def outside(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` in ``cwd`` with the repository off the import path (the zip's copy is used)."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def unzipped(tmp_path_factory) -> tuple[Path, Path]:
    """The exported zip and the bundle unzipped into an empty folder outside the repository."""
    dist = tmp_path_factory.mktemp("dist")
    archive = Path(export(out=str(dist)))
    target = tmp_path_factory.mktemp("zoo")
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(target)
    return archive, target / NAME


def test_the_zip_holds_the_bundle_layout_and_no_large_file(unzipped):
    archive, _ = unzipped
    assert archive.name == f"{NAME}_v{METADATA['version']}.zip"
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
        assert all(info.file_size <= MAX_FILE_MB * 2**20 for info in opened.infolist())
    configs = ("metadata.json", "inference.json", "train.json", "evaluate.json", "multi_gpu_train.json", "logging.conf")
    expected = {f"configs/{name}" for name in configs} | {"models/model.pt", "models/spider_model.pt", "LICENSE"}
    expected |= {"docs/README.md", "docs/data_license.txt", "custom/monailabel/reconstruct.py"}
    expected |= {"docs/samples/sample_frontal.png", "custom/__init__.py", "custom/networks/psctnet.py"}
    expected |= {"custom/phantom/anatomy.npz"}  # the phantoms need their atlas
    assert {f"{NAME}/{name}" for name in expected} <= set(names)
    assert all(name.startswith(f"{NAME}/") and "__pycache__" not in name for name in names)
    with pytest.raises(FileExistsError):
        export(out=str(archive.parent))


def test_inference_runs_from_the_unzipped_bundle_with_its_own_package(unzipped, tmp_path):
    _, bundle = unzipped
    marker = bundle / "custom" / "__init__.py"
    marker.write_text(marker.read_text() + "\nimport sys\nprint('custom imported from', __file__, file=sys.stderr)\n")
    for cwd, root in ((bundle, "."), (tmp_path, str(bundle))):  # from the bundle root, and from elsewhere
        config = f"{root}/configs/inference.json"
        args = [
            "--config_file",
            config,
            "--bundle_root",
            root,
            "--output_dir",
            str(tmp_path / "out"),
            "--overwrite",
            "true",
        ]
        result = outside("-m", "monai.bundle", "run", "inference", *args, cwd=cwd)
        assert f"custom imported from {marker}" in result.stderr.replace(f"{root}/", f"{bundle}/")
        assert f"Restored all variables from {root}/models/model.pt" in result.stdout + result.stderr
    image = nib.load(tmp_path / "out" / "sample.nii.gz")
    assert np.allclose(image.affine, BiplanarGeometry().affine) and (tmp_path / "out" / "sample.png").is_file()


def test_monai_checks_pass_on_the_unzipped_bundle(unzipped):
    _, bundle = unzipped
    (bundle / SCHEMA.name).write_bytes(SCHEMA.read_bytes())  # the vendored schema: no download
    meta, infer = ["--meta_file", "configs/metadata.json"], ["--config_file", "configs/inference.json"]
    outside("-m", "monai.bundle", "verify_metadata", *meta, "--filepath", SCHEMA.name, cwd=bundle)
    outside("-m", "monai.bundle", "verify_net_in_out", "network_def", *meta, *infer, "--device", "cpu", cwd=bundle)
    files = ["--filepath", "models/model.ts", "--ckpt_file", "models/model.pt"]
    trace = ["--use_trace", "true", "--input_shape", "[1, 2, 128, 128]"]
    outside("-m", "monai.bundle", "ckpt_export", "network_def", *files, *meta, *infer, *trace, cwd=bundle)
    assert (bundle / "models" / "model.ts").stat().st_size > 1e6
    same = (  # the traced module (the zoo cannot script the projector, see the model card) equals eager
        "import torch\nfrom monai.bundle import ConfigParser\n"
        "parser = ConfigParser(); parser.read_config('configs/inference.json')\n"
        "net = parser.get_parsed_content('network_def').eval()\n"
        "net.load_state_dict(torch.load('models/model.pt', weights_only=True))\n"
        "views = torch.rand(1, 2, 128, 128)\n"
        "with torch.no_grad():\n"
        "    print(torch.equal(torch.jit.load('models/model.ts')(views), net(views)))\n"
    )
    assert outside("-c", same, cwd=bundle).stdout.strip() == "True"


SPIDER = {"_target_": "custom.networks.spider.SPIDER", "num_classes": 13, "hash_log2_table_size": 15}


def test_download_from_the_zip_then_load_gives_both_trained_networks_in_a_fresh_process(unzipped, tmp_path):
    archive, _ = unzipped
    assert json.loads((ROOT / "bundle/configs/spider_inference.json").read_text())["network_def"] == {
        **SPIDER,
        "projector": "@projector",
        "decoder": "shared",
    }  # the model card's load call builds the shipped SPIDER
    code = (
        "import monai, sys, torch\n"
        f"monai.bundle.download(name={NAME!r}, bundle_dir='zoo', url={archive.as_uri()!r})\n"
        "for workflow, weights, override in (('train', 'model.pt', None), ('inference', 'model.pt', None),\n"
        f"                                   ('inference', 'spider_model.pt', {SPIDER!r})):\n"
        f"    net = monai.bundle.load(name={NAME!r}, bundle_dir='zoo', workflow_type=workflow, device='cpu',\n"
        "                            model_file='models/' + weights, net_override=override)\n"
        f"    state = torch.load('zoo/{NAME}/models/' + weights, weights_only=True)\n"
        "    assert net.state_dict().keys() == state.keys()\n"
        "    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())\n"
        "    print('loaded', type(net).__name__)\n"
    )  # no sys.path change: the configs put the bundle root on it
    lines = outside("-c", code, cwd=tmp_path).stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("loaded ")] == ["PSCTNet", "PSCTNet", "SPIDER"]
