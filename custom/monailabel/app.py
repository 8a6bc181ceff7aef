"""The MONAI Label app class: the bundle's reconstruction tasks over a studies folder of X-ray pairs.

See :mod:`custom.monailabel` for the commands. ``--conf models`` picks the tasks (comma-separated,
default every one whose weights the bundle holds), ``--conf device`` their device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from custom.data.datasets import XRAY_SUFFIXES
from custom.monailabel.reconstruct import ReconstructCT
from custom.phantom.labels import STRUCTURES
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore

PACKAGE_PARENT = Path(__file__).resolve().parents[2]
# the exported bundle holds configs/ beside custom/; the repository keeps them in bundle/
BUNDLE_ROOT = PACKAGE_PARENT if (PACKAGE_PARENT / "configs").is_dir() else PACKAGE_PARENT / "bundle"

SPIDER_CONFIGS = ("inference.json", "spider_inference.json")
MODELS: dict[str, dict[str, Any]] = {
    "psctnet": {
        "config_files": ("inference.json",),
        "weights": "models/model.pt",
        "description": "PSCT-Net: the CT (HU) from a frontal and a lateral skull X-ray",
    },
    "spider": {
        "config_files": SPIDER_CONFIGS,
        "weights": "models/spider_model.pt",
        "description": "SPIDER: the CT (HU) from a frontal and a lateral skull X-ray",
    },
    "spider_structures": {
        "config_files": SPIDER_CONFIGS,
        "weights": "models/spider_model.pt",
        "result": "structures",
        "labels": dict(STRUCTURES),
        "description": "SPIDER: calvarial bones, sutures and fontanelles from a frontal and a lateral X-ray",
    },
}


class PediatricSkullCT(MONAILabelApp):
    """Pediatric skull CT from two radiographs, as MONAI Label infer tasks (one per model)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundle_root = Path(conf.get("bundle_root", BUNDLE_ROOT))
        metadata = json.loads((self.bundle_root / "configs" / "metadata.json").read_text())
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=metadata["name"],
            description="Pediatric skull CT from a frontal and a lateral X-ray (PSCT-Net, SPIDER)",
            version=metadata["version"],
        )

    def init_datastore(self) -> Datastore:
        """The studies folder, listing X-ray files (each view is an image; either names its case)."""
        return LocalDatastore(
            self.studies,
            extensions=[f"*{s}" for suffix in XRAY_SUFFIXES for s in (suffix, suffix.upper())],  # case-sensitive
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, ReconstructCT]:
        wanted = [m.strip() for m in self.conf["models"].split(",")] if self.conf.get("models") else list(MODELS)
        unknown = sorted(set(wanted) - set(MODELS))
        if unknown:
            raise ValueError(f"unknown models {unknown}: choose from {sorted(MODELS)}.")
        tasks = {
            name: ReconstructCT(self.bundle_root, device=self.conf.get("device"), **MODELS[name]) for name in wanted
        }
        missing = [str(task.weights) for name, task in tasks.items() if not task.is_valid()]
        if missing and self.conf.get("models"):
            raise FileNotFoundError(f"no weights for the models asked for: {missing}.")
        return {name: task for name, task in tasks.items() if task.is_valid()}


__all__ = ["BUNDLE_ROOT", "MODELS", "PediatricSkullCT"]
