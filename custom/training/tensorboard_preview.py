"""TensorBoard pictures of validation: the first case's prediction, reference and input X-rays.

After each evaluation run, :class:`TensorBoardPreview` logs one grey-scale picture at the trainer's
epoch: central axial, coronal and sagittal slices of the prediction above those of the reference,
each row followed by the two input X-rays (:func:`custom.outputs.montage.montage`). It reads decollated
evaluator outputs: ``pred`` and ``label`` (1, X, Y, Z) CTs in HU, ``image`` (2, H, W) views.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from custom.outputs.montage import montage
from ignite.engine import Engine, Events
from monai.handlers import TensorBoardHandler


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
            output = engine.state.output
            item = output[0] if isinstance(output, list) else output
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


__all__ = ["TensorBoardPreview"]
