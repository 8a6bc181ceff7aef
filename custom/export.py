"""Package the bundle as a model-zoo zip that runs without this repository.

``python -m custom.export --out dist/`` writes ``dist/<name>_v<version>.zip`` (name and version from
``bundle/configs/metadata.json``) holding one folder ``<name>/`` with ``configs/``, ``models/``
(``model.pt``), ``docs/``, ``LICENSE`` and the ``custom/`` package (Python sources and the phantom
atlas). MONAI puts a bundle's root on ``sys.path`` when it runs it, so after unzipping, from the bundle
root::

    python -m monai.bundle run inference --config_file configs/inference.json --bundle_root .

and ``monai.bundle.download(name=<name>, url="file://.../<name>_v<version>.zip")`` followed by
``monai.bundle.load(name=<name>, ...)`` gives the network with its weights. The zip is written
atomically; a file over :data:`MAX_FILE_MB` is refused.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import fire

from custom.files import atomic_write

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_MB = 25.0
SKIPPED = ("__pycache__", ".gitkeep", ".DS_Store")


def bundle_files(root: Path = ROOT) -> dict[str, Path]:
    """The files of the packaged bundle by their path inside ``<name>/``.

    ``configs/`` and ``docs/`` whole, of ``models/`` only the weights (``model.pt``; not a TorchScript
    or checkpoint left there), ``LICENSE`` and the ``custom/`` package's Python sources with the data
    they read (the phantoms' compact anatomy atlas, ``*.npz``).
    """
    bundle = root / "bundle"
    files = {
        str(p.relative_to(bundle)): p for folder in ("configs", "docs") for p in sorted((bundle / folder).rglob("*"))
    }
    files["models/model.pt"] = bundle / "models" / "model.pt"
    files["LICENSE"] = root / "LICENSE"
    for pattern in ("*.py", "*.npz"):
        files.update({str(p.relative_to(root)): p for p in sorted((root / "custom").rglob(pattern))})
    return {name: path for name, path in files.items() if path.is_file() and not any(s in name for s in SKIPPED)}


def export(out: str = "dist", overwrite: bool = False) -> str:
    """Write ``<out>/<name>_v<version>.zip`` and return its path.

    Args:
        out: the output folder. Defaults to ``dist``.
        overwrite: replace an existing zip of the same version. Defaults to False.

    Raises:
        FileNotFoundError: no ``bundle/models/model.pt`` (train or fetch the weights first).
        ValueError: metadata without ``name`` or ``version``, or a file over :data:`MAX_FILE_MB`.
        FileExistsError: the zip exists and ``overwrite`` is False.
    """
    metadata = json.loads((ROOT / "bundle" / "configs" / "metadata.json").read_text())
    if not metadata.get("name") or not metadata.get("version"):
        raise ValueError("bundle/configs/metadata.json needs a 'name' and a 'version'.")
    files = bundle_files()
    if "models/model.pt" not in files:
        raise FileNotFoundError("bundle/models/model.pt is missing: train the network (run training) first.")
    too_large = [name for name, path in files.items() if path.stat().st_size > MAX_FILE_MB * 2**20]
    if too_large:
        raise ValueError(f"files over {MAX_FILE_MB:g} MB cannot go into the bundle: {too_large}.")
    name = metadata["name"]
    target = Path(out) / f"{name}_v{metadata['version']}.zip"

    def write(temporary: Path) -> None:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for inside, path in files.items():
                archive.write(path, f"{name}/{inside}")

    atomic_write(target, write, overwrite)
    return str(target)


def main() -> None:
    try:
        fire.Fire(export)  # prints the zip's path
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()


__all__ = ["MAX_FILE_MB", "bundle_files", "export"]
