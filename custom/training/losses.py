"""The training objectives: PSCT-Net's (LSGAN terms, volume L1, projection consistency) and SPIDER's.

PSCT-Net (arXiv 2606.19867): the generator minimises ``lambda_adv * LSGAN + lambda_rec * L1(volume) +
lambda_proj * L1(projections)`` (PSCT-Net: 0.1, 10, 10); the discriminator minimises the LSGAN loss of
Mao et al. (ICCV 2017). Projection consistency compares projections of the prediction and the target.
``geometry`` mode projects both through the acquisition's own :class:`~custom.imaging.projector.Projector`
(the X-rays the network was given, up to the attenuation scale); ``parallel`` mode is PSCT-Net's and
X2CT-GAN's: the means along the three volume axes. Either way projections are means along the rays
(sums divided by the grid's depth), so the term is on the volume's scale and its weight means the same
at any grid.

SPIDER (arXiv 2507.04684), at query points: ``lambda_rec * L1(intensity) + lambda_seg *
Dice(softmax(logits), labels)`` (lambda_seg = 0.3 by default), MONAI's soft Dice over all classes,
computed over the points of each case.

All intensities are on the networks' [0, 1] CT scale (:data:`custom.imaging.physics.NETWORK_HU_RANGE`);
the weights are arguments, set in the configs.
"""

from __future__ import annotations

import torch
from custom.imaging.projector import Projector
from monai.losses import DiceLoss
from torch import nn

PROJECTION_MODES = ("geometry", "parallel")


def lsgan_discriminator_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN discriminator loss summed over scales: ``0.5 * (mean((D(real) - 1)^2) + mean(D(fake)^2))`` each.

    The convention of pix2pixHD and X2CT-GAN (whose weights PSCT-Net's 0.1 was tuned with): the
    discriminator's two terms halved, the scales summed.
    """
    terms = [0.5 * ((r - 1).square().mean() + f.square().mean()) for r, f in zip(real_logits, fake_logits)]
    return torch.stack(terms).sum()


def lsgan_generator_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN generator loss summed over scales: ``mean((D(fake) - 1)^2)`` each (pix2pixHD, X2CT-GAN)."""
    return torch.stack([(f - 1).square().mean() for f in fake_logits]).sum()


class ProjectionConsistencyLoss(nn.Module):
    """L1 between projections of a predicted and a target volume.

    Args:
        projector: the acquisition's projector (``geometry`` mode).
        mode: ``geometry`` (both views through the projector) or ``parallel`` (means along x, y, z).
            Defaults to ``geometry``.

    ``forward(pred (B, 1, X, Y, Z), target (B, 1, X, Y, Z))`` -> scalar.

    Raises:
        ValueError: an unknown mode.
    """

    def __init__(self, projector: Projector, mode: str = "geometry") -> None:
        super().__init__()
        if mode not in PROJECTION_MODES:
            raise ValueError(f"mode must be one of {PROJECTION_MODES}, got {mode!r}.")
        self.projector = projector
        self.mode = mode

    def project(self, volume: torch.Tensor) -> list[torch.Tensor]:
        """Mean projections of (B, C, X, Y, Z): both views (geometry) or the three axes (parallel)."""
        if self.mode == "parallel":
            return [volume.mean(dim=axis) for axis in (2, 3, 4)]
        depth = self.projector.geometry.fov  # mm along x (lateral rays) and y (frontal rays)
        views = self.projector(volume)  # (B, C, 2, H, W): sums along rays, mm
        return [views[:, :, 0] / depth[1], views[:, :, 1] / depth[0]]

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pairs = zip(self.project(pred), self.project(target))
        return torch.stack([(p - t).abs().mean() for p, t in pairs]).mean()


class GeneratorLoss(nn.Module):
    """PSCT-Net's generator objective; returns the total and its weighted terms.

    Args:
        projector: for the projection term.
        lambda_adv: weight of the LSGAN term. Defaults to 0.1.
        lambda_rec: weight of the volume L1. Defaults to 10.
        lambda_proj: weight of the projection L1. Defaults to 10.
        projection_mode: see :class:`ProjectionConsistencyLoss`. Defaults to ``geometry``.

    ``forward(pred, target, fake_logits or None)`` -> ``{"loss", "adv", "rec", "proj"}`` (weighted
    terms; ``adv`` is 0 without logits, e.g. when ``lambda_adv`` is 0).
    """

    def __init__(
        self,
        projector: Projector,
        lambda_adv: float = 0.1,
        lambda_rec: float = 10.0,
        lambda_proj: float = 10.0,
        projection_mode: str = "geometry",
    ) -> None:
        super().__init__()
        if min(lambda_adv, lambda_rec, lambda_proj) < 0:
            raise ValueError(f"loss weights must be >= 0, got {(lambda_adv, lambda_rec, lambda_proj)}.")
        self.lambda_adv, self.lambda_rec, self.lambda_proj = lambda_adv, lambda_rec, lambda_proj
        self.projection = ProjectionConsistencyLoss(projector, projection_mode)

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, fake_logits: list[torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        terms = {
            "adv": self.lambda_adv * lsgan_generator_loss(fake_logits) if fake_logits else pred.new_zeros(()),
            "rec": self.lambda_rec * (pred - target).abs().mean(),
            "proj": self.lambda_proj * self.projection(pred, target) if self.lambda_proj else pred.new_zeros(()),
        }
        return {"loss": sum(terms.values()), **terms}


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


__all__ = [
    "PROJECTION_MODES",
    "GeneratorLoss",
    "ProjectionConsistencyLoss",
    "SpiderLoss",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
]
