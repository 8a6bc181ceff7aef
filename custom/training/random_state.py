"""Every random generator a training run draws from, as one checkpointable object.

Resuming must give the same result as never stopping: a checkpoint therefore holds, besides the
networks, optimisers, schedulers and the trainer's epoch and iteration, the :class:`RandomState`: the
torch (CPU and CUDA), numpy and Python generators, which decide the data order and the workers'
seeds, and the generators of the random transforms that run in this process.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, Randomizable


def _randomizables(transform: Any) -> list[Randomizable]:
    """The random transforms in ``transform`` (a Compose, possibly nested), in order."""
    if isinstance(transform, Compose):  # a Compose draws too (OneOf, SomeOf, RandomOrder)
        return [transform, *(r for t in transform.transforms for r in _randomizables(t))]
    return [transform] if isinstance(transform, Randomizable) else []


def _numpy_state(state: tuple) -> tuple:
    """A numpy MT19937 state with its key as a tensor (for saving), or back as an array (for numpy)."""
    name, key, position, has_gauss, gauss = state
    key = key.numpy().astype(np.uint32) if isinstance(key, torch.Tensor) else torch.from_numpy(key.astype(np.int64))
    return name, key, int(position), int(has_gauss), float(gauss)


class RandomState:
    """Every random generator a training run draws from, as a checkpointable object.

    Args:
        transforms: the training transforms (a Compose) whose random generators run in this process
            (with DataLoader workers, MONAI reseeds the workers' copies from torch's generator).
            Defaults to None.

    Use it as one more entry in the ``save_dict`` of MONAI's ``CheckpointSaver`` and the ``load_dict``
    of ``CheckpointLoader``. Exact resumption holds with ``num_workers`` 0 or more, but not with
    ``persistent_workers=True`` (the workers' transform generators then live on across epochs, out
    of reach of the checkpoint).
    """

    def __init__(self, transforms: Any = None) -> None:
        self.transforms = _randomizables(transforms)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain Python values only, so checkpoints load with ``torch.load(weights_only=True)``."""
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": _numpy_state(np.random.get_state()),
            "python": random.getstate(),
            "transforms": [_numpy_state(t.R.get_state()) for t in self.transforms],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["transforms"]) != len(self.transforms):
            raise ValueError(
                f"the checkpoint holds {len(state['transforms'])} transform generators, this run has "
                f"{len(self.transforms)}: the transforms changed since it was saved."
            )
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        np.random.set_state(_numpy_state(state["numpy"]))
        random.setstate(state["python"])
        for transform, generator in zip(self.transforms, state["transforms"]):
            transform.R.set_state(_numpy_state(generator))


__all__ = ["RandomState"]
