"""The learning-rate schedule of PSCT-Net and X2CT-GAN: constant, then a linear decay to zero."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def linear_decay_schedule(optimizer: Optimizer, constant_epochs: int, decay_epochs: int) -> LambdaLR:
    """Learning rate constant for ``constant_epochs``, then falling linearly to zero over ``decay_epochs``.

    Step it once per epoch (MONAI ``LrScheduleHandler(epoch_level=True)``); PSCT-Net uses 50 + 50.

    Raises:
        ValueError: negative epoch counts.
    """
    if constant_epochs < 0 or decay_epochs < 0:
        raise ValueError(f"epoch counts must be >= 0, got {constant_epochs}, {decay_epochs}.")

    def factor(epoch: int) -> float:
        return 1.0 - max(0, epoch - constant_epochs + 1) / (decay_epochs + 1)

    return LambdaLR(optimizer, factor)


__all__ = ["linear_decay_schedule"]
