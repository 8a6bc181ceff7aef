"""Package the bundle for the MONAI model zoo: a self-contained zip, or the zoo's folder layout.

``python -m custom.cli.export --out dist/`` writes ``dist/<name>_v<version>.zip`` (name and version from
``bundle/configs/metadata.json``) holding one folder ``<name>/`` with ``configs/``, ``models/`` (the
weights: ``model.pt``, and ``spider_model.pt`` when trained), ``docs/``, ``LICENSE`` and the
``custom/`` package (Python sources and the phantom atlas). After unzipping, from the bundle root::

    python -m monai.bundle run inference --config_file configs/inference.json

and ``monai.bundle.download(name=<name>, url="file://.../<name>_v<version>.zip")`` followed by
``monai.bundle.load(name=<name>, ...)`` gives the network with its weights (the configs put the
bundle root on ``sys.path`` themselves).

``python -m custom.cli.export --out zoo/ --layout zoo --weights_url https://host/folder`` writes the
folder a model-zoo pull request adds, ``zoo/models/<name>/``: the same files without the weights,
plus ``large_files.yml``, which names each weights file's ``path``, ``url`` (``weights_url`` +
``/`` + file name, where the maintainers host it) and SHA-256 ``hash_val``, for the zoo's CI and
``python -m monai.bundle download_large_files --bundle_path <folder>``.

Outputs are written atomically (complete or absent); a file over :data:`MAX_FILE_MB` is refused, and
in the zoo layout any other file than the weights over :data:`ZOO_MAX_FILE_MB`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

from custom.cli import run_commands
from custom.files import atomic_folder, atomic_write

ROOT = Path(__file__).resolve().parents[2]
MAX_FILE_MB = 25.0  # any file, weights included
ZOO_MAX_FILE_MB = 1.0  # what the zoo keeps in git (its pre-commit check-added-large-files): all but the weights
SKIPPED = ("__pycache__", ".gitkeep", ".DS_Store")
WEIGHTS = ("models/model.pt", "models/spider_model.pt")  # PSCT-Net's (required) and SPIDER's
LAYOUTS = ("bundle", "zoo")


def bundle_files(root: Path = ROOT) -> dict[str, Path]:
    """The files of the packaged bundle by their path inside ``<name>/``.

    ``configs/`` and ``docs/`` whole, of ``models/`` only the weights (:data:`WEIGHTS`; not a
    TorchScript or checkpoint left there), ``LICENSE`` and the ``custom/`` package's Python sources with
    the data they read (the phantoms' compact anatomy atlas, ``*.npz``).
    """
    bundle = root / "bundle"
    files = {
        str(p.relative_to(bundle)): p for folder in ("configs", "docs") for p in sorted((bundle / folder).rglob("*"))
    }
    files.update({name: bundle / name for name in WEIGHTS})
    files["LICENSE"] = root / "LICENSE"
    for pattern in ("*.py", "*.npz"):
        files.update({str(p.relative_to(root)): p for p in sorted((root / "custom").rglob(pattern))})
    return {name: path for name, path in files.items() if path.is_file() and not any(s in name for s in SKIPPED)}


def sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as opened:
        for block in iter(lambda: opened.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def large_files_yml(weights: dict[str, Path], weights_url: str) -> str:
    """``large_files.yml`` of the model zoo: for each weights file its ``path``, ``url`` and hash."""
    lines = ["large_files:"]
    for name, path in weights.items():
        url = f"{weights_url.rstrip('/')}/{Path(name).name}"
        lines += [
            f'  - path: "{name}"',
            f'    url: "{url}"',
            f'    hash_val: "{sha256(path)}"',
            '    hash_type: "sha256"',
        ]
    return "\n".join(lines) + "\n"


def export(out: str = "dist", overwrite: bool = False, layout: str = "bundle", weights_url: str | None = None) -> str:
    """Write the bundle as ``<out>/<name>_v<version>.zip`` (layout ``bundle``) or ``<out>/models/<name>/``
    (layout ``zoo``) and return its path.

    Args:
        out: the output folder. Defaults to ``dist``.
        overwrite: replace an existing output. Defaults to False.
        layout: ``bundle`` (self-contained zip with weights) or ``zoo`` (folder without weights, with
            ``large_files.yml``). Defaults to ``bundle``.
        weights_url: where the weights are hosted (layout ``zoo`` only): the folder URL the weights'
            file names are appended to; ``file://`` works for a local check.

    Raises:
        FileNotFoundError: no ``bundle/models/model.pt`` (train or fetch the weights first).
        ValueError: metadata without ``name`` or ``version``, a file over :data:`MAX_FILE_MB` (in the zoo
            layout: a file other than the weights over :data:`ZOO_MAX_FILE_MB`), an unknown layout, or
            layout ``zoo`` without ``weights_url``.
        FileExistsError: the output exists and ``overwrite`` is False.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    if layout == "zoo" and not weights_url:
        raise ValueError("the zoo layout needs --weights_url: where the weights files will be downloaded from.")
    metadata = json.loads((ROOT / "bundle" / "configs" / "metadata.json").read_text())
    if not metadata.get("name") or not metadata.get("version"):
        raise ValueError("bundle/configs/metadata.json needs a 'name' and a 'version'.")
    files = bundle_files()
    if WEIGHTS[0] not in files:
        raise FileNotFoundError(f"bundle/{WEIGHTS[0]} is missing: train the network (run training) first.")
    too_large = [name for name, path in files.items() if path.stat().st_size > MAX_FILE_MB * 2**20]
    if too_large:
        raise ValueError(f"files over {MAX_FILE_MB:g} MB cannot go into the bundle: {too_large}.")
    in_git = [
        name for name, path in files.items() if name not in WEIGHTS and path.stat().st_size > ZOO_MAX_FILE_MB * 2**20
    ]
    if layout == "zoo" and in_git:
        raise ValueError(f"the model zoo keeps no file over {ZOO_MAX_FILE_MB:g} MB in git: {in_git}.")
    name = metadata["name"]
    if layout == "bundle":
        target = Path(out) / f"{name}_v{metadata['version']}.zip"

        def write(temporary: Path) -> None:
            with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for inside, path in files.items():
                    archive.write(path, f"{name}/{inside}")

        atomic_write(target, write, overwrite)
        return str(target)
    return str(_write_zoo_folder(Path(out) / "models" / name, files, weights_url, overwrite))


def _write_zoo_folder(target: Path, files: dict[str, Path], weights_url: str, overwrite: bool) -> Path:
    """The zoo layout in ``target``: every file but the weights, and ``large_files.yml`` naming those."""
    weights = {inside: path for inside, path in files.items() if inside in WEIGHTS}

    def write(staging: Path) -> None:
        for inside, path in files.items():
            if inside not in weights:
                (staging / inside).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, staging / inside)
        (staging / "large_files.yml").write_text(large_files_yml(weights, weights_url))

    return atomic_folder(target, write, overwrite)


def main() -> None:
    run_commands(export)  # prints the output's path


__all__ = [
    "LAYOUTS",
    "MAX_FILE_MB",
    "WEIGHTS",
    "ZOO_MAX_FILE_MB",
    "bundle_files",
    "export",
    "large_files_yml",
    "sha256",
]


if __name__ == "__main__":
    main()
