"""The MONAI Label infer task: the bundle's inference pipeline on one case's two radiographs.

:class:`ReconstructCT` is a MONAI Label ``InferTask`` of its own (not MONAI Label's
``BundleInferTask``, which assumes one input image and a segmentation bundle). A request names one
radiograph of a case (a datastore image id, or an absolute path) or a folder holding one pair
(:func:`custom.data.datasets.xray_pair`); ``params`` may name ``frontal`` and ``lateral`` files
instead. The task builds a :class:`monai.bundle.ConfigParser` from the bundle's own inference
configs, points it at the case and at a temporary output folder, runs the bundle's evaluator (its
X-ray loading, network and :class:`~custom.outputs.reconstruction.SaveReconstructiond`) and hands MONAI Label
a temporary copy of one output, which MONAI Label deletes once sent. A network is built on the
first request that needs it and shared by the tasks using the same configs, weights and device;
requests run one at a time (the pipeline uses every core). MONAI Label's batch inference is not
supported: it saves each result as a label of the studies and would reconstruct each case once per
view.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from custom.data.datasets import xray_datalist, xray_pair
from custom.imaging.geometry import VIEW_NAMES
from monai.bundle import ConfigParser
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

RESULTS = {"ct": "nifti", "structures": "structures"}  # the SaveReconstructiond output each result is
_NETWORKS: dict[tuple, Any] = {}  # built networks by (configs, weights, device), shared by the tasks
_LOCK = threading.Lock()  # one request at a time, whichever task


class ReconstructCT(InferTask):
    """Reconstruct a case with the bundle and return its CT (or a label map) as NIfTI.

    Args:
        bundle_root: the bundle folder (``configs/``, ``models/``).
        config_files: the inference configs under ``configs/``, merged in order (e.g.
            ``["inference.json", "spider_inference.json"]``).
        weights: the weights file, relative to ``bundle_root``.
        result: ``ct`` (HU, int16, the geometry's affine) or ``structures`` (SPIDER's label map, uint8).
        labels: the label names of the result and their values (``structures``: :data:`custom.phantom.STRUCTURES`).
        device: ``cpu``, ``cuda:0``, ...; None keeps the config's choice (CUDA when there).
        description: shown by MONAI Label clients.

    The result JSON holds ``case``, both view files, ``units`` and ``latency_s``.
    """

    def __init__(
        self,
        bundle_root: str | os.PathLike,
        config_files: Sequence[str],
        weights: str,
        result: str = "ct",
        labels: dict[str, int] | None = None,
        device: str | None = None,
        description: str = "",
    ) -> None:
        if result not in RESULTS:
            raise ValueError(f"result must be one of {sorted(RESULTS)}, got {result!r}.")
        kind = InferType.OTHERS if result == "ct" else InferType.SEGMENTATION
        super().__init__(type=kind, labels=dict(labels or {}), dimension=3, description=description)
        self.bundle_root = Path(bundle_root).resolve()
        self.config_files = [str(self.bundle_root / "configs" / name) for name in config_files]
        self.weights = self.bundle_root / weights
        self.result, self.device = result, device

    def is_valid(self) -> bool:
        return self.weights.is_file()

    def parser(self, **overrides: Any) -> ConfigParser:
        """The bundle's inference config for this task, with ``overrides`` (config ids and values)."""
        parser = ConfigParser()
        parser.read_config(self.config_files)
        parser.read_meta(str(self.bundle_root / "configs" / "metadata.json"))
        device = {} if self.device is None else {"device": f"$torch.device({self.device!r})"}
        parser.update({"bundle_root": str(self.bundle_root), "ckpt_path": str(self.weights), **device, **overrides})
        return parser

    @staticmethod
    def case(request: dict[str, Any]) -> dict[str, Any]:
        """The request's ``{"case", "frontal", "lateral"}``: named in ``params``, else from ``image``."""
        if any(request.get(view) for view in VIEW_NAMES):  # checked and named as inference does
            views = {view: request.get(view) for view in VIEW_NAMES}
            return xray_datalist(**views, case=request.get("case"))[0]
        image = request.get("image")
        if not image or not os.path.exists(image):
            raise ValueError(f"no X-ray {request.get('image')!r}: name an image of the studies, or a path.")
        return xray_pair(image)

    def network(self, parser: ConfigParser) -> Any:
        """The network of ``network_def``, built once per configs, weights and device."""
        key = (tuple(self.config_files), str(self.weights), self.device)
        if key not in _NETWORKS:
            _NETWORKS[key] = parser.get_parsed_content("network_def")
        return _NETWORKS[key]

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        start = time.perf_counter()
        item = self.case(request)
        with _LOCK, tempfile.TemporaryDirectory(prefix="psct-monailabel-") as work:
            outputs = {"output_dir": work, "overwrite": True, "save_preview": False, "save_dicom": False}
            case = {"case": item["case"], "input_datalist": None, "dataset_dir": None, "save_stl": False}
            parser = self.parser(**outputs, **case, **{v: str(item[v]) for v in VIEW_NAMES})
            parser["network_def"] = self.network(parser)  # each request reloads only the weights into it
            parser.get_parsed_content("evaluator").run()
            produced = parser.get_parsed_content("save_reconstruction").paths(item["case"])[RESULTS[self.result]]
            handle, result = tempfile.mkstemp(prefix="psct-", suffix=".nii.gz")
            os.close(handle)
            shutil.move(produced, result)
        units = "HU" if self.result == "ct" else "label"
        summary = {"case": item["case"], **{v: str(item[v]) for v in VIEW_NAMES}, "units": units}
        return result, {**summary, "latency_s": round(time.perf_counter() - start, 3)}


__all__ = ["RESULTS", "ReconstructCT"]
