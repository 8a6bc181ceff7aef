"""The evaluation report: every case's metrics in a CSV, their statistics in a JSON summary.

:class:`CaseMetricsReport` computes the evaluation protocol (:class:`custom.metrics.protocol.CaseEvaluator`:
Track A and Track B) for each case an evaluator runs and, when the run completes, writes
``metrics.csv`` (one row per case, Track A columns then Track B) and ``summary.json`` (the number of
cases and, per track, the mean, standard deviation, median, minimum and maximum of each metric). It
reads decollated evaluator outputs whose ``pred`` and ``label`` are (1, X, Y, Z) CTs in HU (the
bundle's evaluation post-processing converts them); case names and input X-rays come from the batch.
Both are written by :func:`custom.files.write_csv` and :func:`custom.files.write_json`: non-finite
values (the infinite PSNR of a perfect reconstruction) are written as the strings ``"inf"``, ``"-inf"``
or ``"nan"``, so the summary stays valid JSON.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from custom.files import refuse_existing, write_csv, write_json
from custom.imaging.geometry import BiplanarGeometry
from custom.metrics.protocol import TRACKS, CaseEvaluator, summarise
from custom.metrics.structures import STRUCTURE_METRICS, structure_metrics
from ignite.engine import Engine, Events


def _items(output: Any) -> list[dict[str, Any]]:
    """An engine's output as a list of per-case dicts (decollated or a batch of one)."""
    return list(output) if isinstance(output, list) else [output]


class CaseMetricsReport:
    """Collect every case's metrics during an evaluation run and write the report when it completes.

    Args:
        output_dir: the report's folder (``metrics.csv`` and ``summary.json``).
        geometry: the acquisition the CTs and X-rays belong to (voxel spacing, DRRs).
        case_key: the case name in each batch item. Defaults to ``case``.
        image_key: the input X-rays (2, H, W) in each batch item. Defaults to ``image``.
        overwrite: replace an existing report. Defaults to False: an existing report is refused before
            the run starts, so no evaluation time is lost.
        structure_key, truth_structure_key: the predicted structure map in each output item and the
            truth in each batch item (SPIDER on phantoms, :mod:`custom.metrics.structures`); when both are
            given and present, the report adds a ``structures`` track (per-bone Dice, suture patency
            agreement). Default to None.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        geometry: BiplanarGeometry,
        case_key: str = "case",
        image_key: str = "image",
        overwrite: bool = False,
        structure_key: str | None = None,
        truth_structure_key: str | None = None,
    ) -> None:
        self.paths = {"csv": Path(output_dir) / "metrics.csv", "json": Path(output_dir) / "summary.json"}
        self.evaluate = CaseEvaluator(geometry)
        self.case_key, self.image_key, self.overwrite = case_key, image_key, overwrite
        self.structure_key, self.truth_structure_key = structure_key, truth_structure_key
        self.rows: list[dict[str, Any]] = []
        self.tracks = dict(TRACKS)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _start(self, engine: Engine) -> None:
        refuse_existing(self.paths.values(), self.overwrite)
        self.rows, self.tracks = [], dict(TRACKS)

    def _collect(self, engine: Engine) -> None:
        for batch, item in zip(_items(engine.state.batch), _items(engine.state.output)):
            tracks = self.evaluate(item["pred"], item["label"], batch.get(self.image_key))
            row = {"case": str(batch[self.case_key]), **tracks["track_a"], **tracks["track_b"]}
            if self.structure_key in item and self.truth_structure_key in batch:
                row.update(structure_metrics(item[self.structure_key], batch[self.truth_structure_key]))
                self.tracks["structures"] = STRUCTURE_METRICS
            self.rows.append(row)

    def summary(self) -> dict[str, Any]:
        """Statistics of each metric over the cases, per track (an infinite PSNR gives mean inf, std nan)."""
        result: dict[str, Any] = {"cases": len(self.rows)}
        for track, names in self.tracks.items():
            result[track] = {}
            for name in names if self.rows else ():
                values = [row[name] for row in self.rows]
                if track == "structures":  # a bone that neither map of a case shows has no Dice
                    values = [v for v in values if not math.isnan(v)]
                    if not values:
                        continue
                result[track][name] = summarise(values)
        return result

    def _write(self, engine: Engine) -> None:
        columns = ["case", *(name for names in self.tracks.values() for name in names)]
        write_csv(self.paths["csv"], self.rows, columns, self.overwrite)
        write_json(self.paths["json"], self.summary(), self.overwrite)


__all__ = ["CaseMetricsReport"]
