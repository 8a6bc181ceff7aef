"""The MONAI model zoo's checks that run offline, on the bundle as a zoo pull request would add it.

The zoo (https://github.com/Project-MONAI/model-zoo) keeps a bundle at ``models/<name>/`` and checks it
with ``runtests.sh --codeformat`` (isort, black ``--skip-magic-trailing-comma``, flake8 with
pep8-naming, bugbear, comprehensions and executable), its pre-commit hooks, ``ci/verify_bundle.py``
(metadata schema, network input/output, TorchScript: this bundle is on the zoo's
``exclude_verify_torchscript_list``, see the model card) and per-bundle unit tests that build the
workflows with ``ConfigWorkflow``, check their properties and run them. Its settings are restated
here (:data:`ZOO_SETUP_CFG`, :data:`ZOO_PYPROJECT`); weights come through ``large_files.yml``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from custom.cli.export import WEIGHTS, export
from custom.imaging.geometry import BiplanarGeometry
from custom.phantom import make_phantom
from monai.bundle import ConfigParser, ConfigWorkflow

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundle" / "configs"
NAME = json.loads((CONFIGS / "metadata.json").read_text())["name"]
ZOO_SETUP_CFG = """[flake8]
select = B,C,E,F,N,P,T4,W,B9
max_line_length = 120
ignore = E203,E501,E741,W503,W504,C408,N812,B023,B905,B028,B907,C419
per_file_ignores = __init__.py: F401, __main__.py: F401

[isort]
known_first_party = models
profile = black
line_length = 120
"""
ZOO_PYPROJECT = """[tool.black]
line-length = 120
target-version = ['py37', 'py38', 'py39']
"""
TINY_GRID = {
    "geometry#vol_shape": [32, 32, 32],
    "geometry#vol_spacing": 6.0,
    "geometry#det_shape": [32, 32],
    "geometry#det_spacing": 7.2,
    "network_def#preset": "tiny",
}


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"{command[:3]} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """A zoo checkout holding only this bundle, exported in the zoo layout (weights not fetched yet)."""
    root = tmp_path_factory.mktemp("model-zoo")
    export(out=str(root), layout="zoo", weights_url=(ROOT / "bundle" / "models").as_uri())
    (root / "setup.cfg").write_text(ZOO_SETUP_CFG)
    (root / "pyproject.toml").write_text(ZOO_PYPROJECT)
    return root


def test_the_zoo_layout_fetches_its_weights_through_large_files(zoo):
    bundle = zoo / "models" / NAME
    shipped = [name for name in WEIGHTS if (ROOT / "bundle" / name).is_file()]
    assert not list(bundle.rglob("*.pt")) and (bundle / "LICENSE").is_file()
    listed = (bundle / "large_files.yml").read_text()
    assert all(f'path: "{name}"' in listed for name in shipped) and 'hash_type: "sha256"' in listed
    run(sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", str(bundle), cwd=zoo)
    for name in shipped:
        assert (bundle / name).read_bytes() == (ROOT / "bundle" / name).read_bytes()
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() in listed


def test_the_zoo_style_checks_pass(zoo):
    run(sys.executable, "-m", "isort", "--check", "--diff", ".", cwd=zoo)
    run(sys.executable, "-m", "black", "--skip-magic-trailing-comma", "--check", ".", cwd=zoo)
    run(sys.executable, "-m", "flake8", ".", "--count", "--statistics", cwd=zoo)
    every = [str(p) for p in sorted((zoo / "models").rglob("*")) if p.is_file() and p.suffix != ".pt"]  # weights:
    files = [f for f in every if not f.endswith((".png", ".npz"))]  # large_files.yml; text files: the hooks' input
    python = [f for f in files if f.endswith(".py")]
    json_files = [f for f in files if f.endswith(".json")]
    hooks = Path(sys.executable).parent
    run(str(hooks / "pretty-format-json"), "--no-sort-keys", "--indent=4", *json_files, cwd=zoo)
    run(str(hooks / "check-docstring-first"), *python, cwd=zoo)
    run(str(hooks / "end-of-file-fixer"), *files, cwd=zoo)  # exits non-zero when it had to fix a file
    run(str(hooks / "trailing-whitespace-fixer"), *files, cwd=zoo)
    run(str(hooks / "mixed-line-ending"), *files, cwd=zoo)
    run(str(hooks / "check-yaml"), str(zoo / "models" / NAME / "large_files.yml"), cwd=zoo)
    big = [f for f in every if os.path.getsize(f) > 1024 * 1024]  # check-added-large-files --maxkb=1024
    assert not big, f"the zoo hosts files over 1 MB through large_files.yml: {big}"


def test_metadata_keeps_every_required_package_through_monai_parsing():
    import tomllib

    parser = ConfigParser()
    parser.read_meta(str(CONFIGS / "metadata.json"))
    required = parser.get("_meta_")["required_packages_version"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]}
    names = (names - {"torch", "monai", "numpy"}) | {"pytorch-ignite"}  # monai[ignite] brings ignite
    assert names <= set(required), f"missing from required_packages_version: {names - set(required)}"
    assert "optional_packages_version" not in json.loads((CONFIGS / "metadata.json").read_text())
    assert not {"mamba-ssm", "mlflow"} & set(required)  # optional extras, not for the zoo to pin


def write_ct_folder(folder: Path, geometry: BiplanarGeometry, n: int) -> None:
    folder.mkdir()
    for seed in range(n):
        phantom = make_phantom(seed, geometry, pose=False)
        nib.save(nib.Nifti1Image(phantom.hu.numpy(), geometry.affine), folder / f"head_{seed}.nii.gz")


def test_the_workflows_pass_the_zoo_unit_test_pattern(tmp_path):
    """What a zoo ``ci/unit_tests/test_<bundle>.py`` does: override ``dataset_dir``, check, run."""
    geometry = BiplanarGeometry(vol_shape=(32,) * 3, vol_spacing=6.0, det_shape=(32, 32), det_spacing=7.2)
    write_ct_folder(tmp_path / "cts", geometry, 4)
    folders = {"output_dir": str(tmp_path / "eval"), "ckpt_dir": str(tmp_path / "models")}
    small = {"epochs": 1, "num_workers": 0, "split_fractions": [0.5, 0.5, 0.0], "discriminator_def#num_scales": 1}
    training = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        workflow_type="train",
        dataset_dir=str(tmp_path / "cts"),
        **folders,
        **small,
        **TINY_GRID,
    )
    training.initialize()
    assert training.check_properties() == []
    training.run()
    training.finalize()
    weights = tmp_path / "models" / "model.pt"
    assert torch.load(weights, weights_only=True)
    pairs = tmp_path / "xrays"
    pairs.mkdir()
    for view in ("frontal", "lateral"):
        (pairs / f"child_{view}.png").write_bytes(
            (CONFIGS.parent / "docs" / "samples" / f"sample_{view}.png").read_bytes()
        )
    inference = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"),
        workflow_type="infer",
        dataset_dir=str(pairs),
        ckpt_path=str(weights),
        output_dir=str(tmp_path / "out"),
        **TINY_GRID,
    )
    inference.initialize()
    assert inference.check_properties() == []
    inference.run()
    inference.finalize()
    ct = nib.load(tmp_path / "out" / "child.nii.gz")
    assert ct.shape == geometry.vol_shape and np.allclose(ct.affine, geometry.affine)
