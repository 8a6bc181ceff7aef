"""Ignite handlers the bundle attaches to its evaluators: TensorBoard previews and the evaluation report.

- :class:`TensorBoardPreview`: after each validation, one picture of the first case (central CT slices
  of the prediction above those of the reference, and the two input X-rays) in TensorBoard, at the
  trainer's epoch.
- :class:`CaseMetricsReport`: per-case metrics (:data:`custom.metrics.CASE_METRICS`) of every evaluated
  case, written at the end as ``metrics.csv`` (one row per case) and ``summary.json`` (mean, standard
  deviation, median, min and max of each metric, and the number of cases).

Both read decollated evaluator outputs whose ``pred`` and ``label`` are CTs in HU (the bundle's
evaluation post-processing converts them) and whose ``image`` holds the views; the case names come
from the batch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.handlers import TensorBoardHandler

from custom.files import atomic_write, refuse_existing
from custom.metrics import CASE_METRICS
from custom.preview import montage


def _items(output: Any) -> list[dict[str, Any]]:
    """An engine's output as a list of per-case dicts (decollated or a batch of one)."""
    return list(output) if isinstance(output, list) else [output]


class TensorBoardPreview(TensorBoardHandler):
    """Log a picture of the first case of each evaluation run to TensorBoard.

    Args:
        summary_writer, log_dir: as :class:`monai.handlers.TensorBoardHandler`.
        tag: the image's tag. Defaults to ``preview``.
    """

    def __init__(self, summary_writer: Any = None, log_dir: str = "./runs", tag: str = "preview") -> None:
        super().__init__(summary_writer, log_dir)
        self.tag = tag
        self._first: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._keep_first)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._first = None

    def _keep_first(self, engine: Engine) -> None:
        if self._first is None:
            item = _items(engine.state.output)[0]
            self._first = {key: item[key].detach().cpu() for key in ("pred", "label", "image")}

    def __call__(self, engine: Engine) -> None:
        if self._first is None:
            return
        pred, label, views = self._first["pred"], self._first["label"], self._first["image"]
        rows = [
            np.asarray(montage(volume, views, title=name))
            for name, volume in (("prediction", pred), ("reference", label))
        ]
        picture = np.concatenate(rows, axis=0)  # (H, W) uint8
        self._writer.add_image(self.tag, picture[None], engine.state.epoch, dataformats="CHW")
        self._writer.flush()


class CaseMetricsReport:
    """Collect every case's metrics during an evaluation run and write the report when it completes.

    Args:
        output_dir: the report's folder (``metrics.csv`` and ``summary.json``).
        case_key: the case name in each output item. Defaults to ``case``.
        overwrite: replace an existing report. Defaults to False: an existing report is refused before
            the run starts, so no evaluation time is lost.
    """

    def __init__(self, output_dir: str | os.PathLike, case_key: str = "case", overwrite: bool = False) -> None:
        self.paths = {"csv": Path(output_dir) / "metrics.csv", "json": Path(output_dir) / "summary.json"}
        self.case_key, self.overwrite = case_key, overwrite
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _start(self, engine: Engine) -> None:
        refuse_existing(self.paths.values(), self.overwrite)
        self.rows = []

    def _collect(self, engine: Engine) -> None:
        for batch, item in zip(_items(engine.state.batch), _items(engine.state.output)):
            pred, label = torch.as_tensor(item["pred"])[None], torch.as_tensor(item["label"])[None]
            values = {name: float(function(pred, label)[0]) for name, function in CASE_METRICS.items()}
            self.rows.append({"case": str(batch[self.case_key]), **values})

    def summary(self) -> dict[str, Any]:
        """Statistics of each metric over the cases (infinite PSNRs are kept: the mean is then inf)."""
        result: dict[str, Any] = {"cases": len(self.rows), "metrics": {}}
        for name in CASE_METRICS:
            values = [row[name] for row in self.rows]
            if values:
                finite = [v for v in values if math.isfinite(v)]
                result["metrics"][name] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.pstdev(finite) if len(finite) == len(values) else math.nan,
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                }
        return result

    def _write(self, engine: Engine) -> None:
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=["case", *CASE_METRICS], lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.paths["csv"], lambda tmp: tmp.write_text(table.getvalue()), self.overwrite)
        text = json.dumps(self.summary(), indent=2) + "\n"
        atomic_write(self.paths["json"], lambda tmp: tmp.write_text(text), self.overwrite)


__all__ = ["CaseMetricsReport", "TensorBoardPreview"]
