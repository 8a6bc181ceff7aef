"""Training checkpoints: written atomically, never replacing an earlier run's by surprise, resumable.

- :func:`prepare_training_run`: before anything is built, decides what a training run may do with the
  files already in its folders: resume from the latest full checkpoint, start afresh (refusing to
  replace an earlier run's checkpoints or best model unless told to), or overwrite.
- :class:`EpochCheckpointSaver`: after every epoch, the full training state (networks, optimisers,
  schedulers, scalers, the trainer's counters, the random generators) as
  ``checkpoint_epoch=N.pt``; the previous one is removed only once the new one is complete.
- :class:`BestModelSaver`: the generator's ``state_dict`` as ``model.pt`` whenever validation reaches
  a new best key metric.

Files are complete or absent (:func:`custom.files.atomic_write`), so a crash or kill during a save
leaves the previous checkpoint usable, and the next run removes the killed save's temporary. The format
is the one MONAI's ``CheckpointLoader`` reads (``{name: state_dict}``), loadable with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from custom.errors import ExistingOutputError, MissingInputError
from custom.files import atomic_write
from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_epoch=(\d+)\.pt$")


def epoch_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The full checkpoints in ``folder``, oldest epoch first."""
    found = [(CHECKPOINT_PATTERN.match(p.name), p) for p in Path(folder).glob("checkpoint_epoch=*.pt")]
    return [path for _, path in sorted((int(match.group(1)), path) for match, path in found if match)]


def stale_temporaries(checkpoint_dir: str | os.PathLike, model_path: str | os.PathLike) -> list[Path]:
    """The unfinished files of killed saves: :func:`~custom.files.atomic_write`'s hidden temporaries
    (``.checkpoint_epoch=N.pt.<random>.pt``, ``.model.pt.<random>.pt``) beside the checkpoints and the model."""
    model_path = Path(model_path)
    found = Path(checkpoint_dir).glob(".checkpoint_epoch=*.pt.*") if Path(checkpoint_dir).is_dir() else []
    beside_model = model_path.parent.glob(f".{model_path.name}.*") if model_path.parent.is_dir() else []
    return sorted({p for p in [*found, *beside_model] if p.is_file()})


def prepare_training_run(
    checkpoint_dir: str | os.PathLike, model_path: str | os.PathLike, resume: bool, overwrite: bool = False
) -> str | None:
    """The checkpoint a training run starts from (None: from scratch), after checking its folders.

    Args:
        checkpoint_dir: where the run's full checkpoints go.
        model_path: where its best generator goes (``model.pt``).
        resume: continue from the latest checkpoint in ``checkpoint_dir``.
        overwrite: start afresh even though an earlier run's files are there: its checkpoints are
            removed now, its ``model.pt`` is replaced at the first validation. Defaults to False.

    Temporaries that a save killed part-way left behind (:func:`stale_temporaries`) are removed first:
    they are never taken for checkpoints.

    Raises:
        MissingInputError: ``resume`` without a checkpoint to resume (a FileNotFoundError).
        ExistingOutputError: a fresh run (neither ``resume`` nor ``overwrite``) where checkpoints or a
            ``model.pt`` already exist; the message says how to proceed (a FileExistsError).
    """
    for temporary in stale_temporaries(checkpoint_dir, model_path):
        logger.warning(f"removing {temporary}, left by a save that was killed part-way.")
        temporary.unlink(missing_ok=True)
    checkpoints = epoch_checkpoints(checkpoint_dir)
    if resume:
        if not checkpoints:
            raise MissingInputError(f"nothing to resume: {checkpoint_dir} holds no checkpoint_epoch=N.pt.")
        return str(checkpoints[-1])
    existing = [*map(str, checkpoints), *([str(model_path)] if Path(model_path).exists() else [])]
    if existing and not overwrite:
        raise ExistingOutputError(
            f"an earlier run's files are in the way: {existing}. Continue that run with --resume true, "
            "replace them with --overwrite true, or start elsewhere with --output_dir and --ckpt_dir."
        )
    for path in checkpoints:
        path.unlink(missing_ok=True)  # every rank of a distributed run does this
    return None


def _save(path: Path, content: Any) -> None:
    atomic_write(path, lambda temporary: torch.save(content, temporary), overwrite=True)


class EpochCheckpointSaver:
    """Save ``{name: obj.state_dict()}`` of ``save_dict`` as ``checkpoint_epoch=N.pt`` every ``interval`` epochs.

    Args:
        folder: the checkpoint folder (created).
        save_dict: the objects to save, by name (networks, optimisers, schedulers, the trainer, ...).
        interval: epochs between checkpoints. Defaults to 1.

    Only the newest checkpoint is kept: older ones are removed after the new one is complete.
    """

    def __init__(self, folder: str | os.PathLike, save_dict: Mapping[str, Any], interval: int = 1) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1 epoch, got {interval}.")
        self.folder, self.save_dict, self.interval = Path(folder), dict(save_dict), interval

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        path = self.folder / f"checkpoint_epoch={engine.state.epoch}.pt"
        _save(path, {name: obj.state_dict() for name, obj in self.save_dict.items()})
        for older in epoch_checkpoints(self.folder):
            if older != path:
                older.unlink(missing_ok=True)


class BestModelSaver:
    """Save ``network.state_dict()`` to ``path`` when an evaluator's key metric reaches a new best.

    Args:
        path: the file, e.g. ``models/model.pt``.
        network: the generator (the module itself, not a DDP wrapper).

    Attach it to the validation evaluator (MONAI's evaluators track ``best_metric_epoch``).
    """

    def __init__(self, path: str | os.PathLike, network: torch.nn.Module) -> None:
        self.path, self.network = Path(path), network

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.best_metric_epoch == engine.state.epoch:
            _save(self.path, self.network.state_dict())


__all__ = [
    "CHECKPOINT_PATTERN",
    "BestModelSaver",
    "EpochCheckpointSaver",
    "epoch_checkpoints",
    "prepare_training_run",
    "stale_temporaries",
]
