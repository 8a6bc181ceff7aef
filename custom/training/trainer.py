"""The base of the bundle's trainers: a MONAI trainer whose mixed precision is on only where it applies."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from monai.engines import Trainer


class CudaAmpTrainer(Trainer):
    """A MONAI :class:`~monai.engines.Trainer` whose mixed precision is on only where it applies (CUDA).

    Args:
        device: where the networks run.
        max_epochs: epochs to train.
        train_data_loader: the training batches (MONAI's ``data_loader``).
        amp: mixed precision on CUDA (ignored elsewhere). Defaults to False.
        epoch_length, non_blocking, postprocessing, decollate: as :class:`~monai.engines.Trainer`.
        key_train_metric: MONAI's ``key_metric``. Defaults to None.
        train_handlers: MONAI's ``handlers``. Defaults to None.

    The bundle's trainers take their own arguments and pass every other keyword through to it
    (``**trainer_args``), so the argument list above is written once.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        amp: bool = False,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        key_train_metric: dict | None = None,
        train_handlers: Sequence | None = None,
        postprocessing: Callable | None = None,
        decollate: bool = False,
    ) -> None:
        device = torch.device(device)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            key_metric=key_train_metric,
            handlers=train_handlers,
            postprocessing=postprocessing,
            amp=amp and device.type == "cuda",
            decollate=decollate,
        )

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        """Backpropagate ``loss`` through ``scaler`` and take one step of ``optimizer``."""
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


__all__ = ["CudaAmpTrainer"]
