"""SPIDER's training objective at query points: L1 on the intensity plus Dice on the structure classes.

``loss = lambda_rec * L1(intensity) + lambda_seg * Dice(softmax(logits), labels)`` (SPIDER, arXiv
2507.04684; lambda_seg = 0.3 by default, weights in the config). Intensities are on the networks' [0, 1]
CT scale; the Dice is MONAI's soft Dice over all classes, computed over the points of each case.
"""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch import nn


class SpiderLoss(nn.Module):
    """Intensity L1 and structure Dice of decoded query points.

    Args:
        lambda_rec: weight of the intensity L1. Defaults to 1.
        lambda_seg: weight of the Dice loss. Defaults to 0.3.

    ``forward(pred (B, N, 1 + C), intensity (B, N), labels (B, N) integer classes)`` returns
    ``{"loss", "rec", "seg"}`` (the weighted terms and their sum).
    """

    def __init__(self, lambda_rec: float = 1.0, lambda_seg: float = 0.3) -> None:
        super().__init__()
        if lambda_rec < 0 or lambda_seg < 0:
            raise ValueError(f"loss weights must be >= 0, got {lambda_rec}, {lambda_seg}.")
        self.lambda_rec, self.lambda_seg = lambda_rec, lambda_seg
        self.dice = DiceLoss(to_onehot_y=True, softmax=True)

    def forward(self, pred: torch.Tensor, intensity: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        rec = self.lambda_rec * (pred[..., 0] - intensity).abs().mean()
        logits = pred[..., 1:].transpose(1, 2)  # (B, C, N)
        seg = self.lambda_seg * self.dice(logits, labels[:, None].long())
        return {"loss": rec + seg, "rec": rec, "seg": seg}


__all__ = ["SpiderLoss"]
