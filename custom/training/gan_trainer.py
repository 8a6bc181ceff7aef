"""PSCT-Net's paired conditional GAN trainer.

:class:`PairedGanTrainer` is a MONAI :class:`~monai.engines.Trainer`: each iteration updates the
discriminator on (real CT, generated CT) and then the generator on the weighted objective of
:class:`~custom.training.losses.GeneratorLoss`, following PSCT-Net (arXiv 2606.19867) and X2CT-GAN. MONAI
handlers (checkpoints, statistics, validation) attach to it as to any trainer; its learning-rate schedule
is :mod:`custom.training.schedule`, its resumable random state :mod:`custom.training.random_state`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from custom.training.losses import GeneratorLoss, lsgan_discriminator_loss
from custom.training.trainer import CudaAmpTrainer
from monai.engines import IterationEvents
from monai.inferers import Inferer, SimpleInferer


class PairedGanTrainer(CudaAmpTrainer):
    """Conditional GAN training on paired (X-rays, CT) batches: a discriminator step, then a generator step.

    Args:
        device: where the networks run.
        max_epochs: epochs to train.
        train_data_loader: batches with ``image_key`` (B, 2, H, W) views and ``target_key``
            (B, 1, X, Y, Z) CTs on the networks' scale.
        generator: maps views to CTs (e.g. :class:`~custom.networks.psctnet.PSCTNet`).
        discriminator: :class:`~custom.networks.discriminator.MultiScalePatchDiscriminator3d`.
        g_optimizer, d_optimizer: their optimisers.
        loss_function: the generator objective.
        condition: what a conditioned discriminator sees beside each CT: views (B, 2, H, W) ->
            (B, 1, X, Y, Z); the bundle's configs pass their projector's ``backproject`` (the BP-I
            prior of the views). Required exactly when the discriminator is conditioned. Defaults to None.
        image_key, target_key: batch keys. Default to ``image`` and ``target``.
        inferer: how the generator is applied to the views (``inferer(views, generator)``). Defaults to
            MONAI's :class:`~monai.inferers.SimpleInferer` (one whole-volume forward pass).
        adversarial_start: the supervised warm-up, in iterations: during the first
            ``adversarial_start`` iterations the discriminator neither trains nor enters the
            generator's objective (volume and projection L1 only); from the next one on, both run as in
            PSCT-Net. Defaults to 0 (the paper's objective throughout).
        trainer_args: passed to :class:`~custom.training.trainer.CudaAmpTrainer` (``amp``,
            ``epoch_length``, ``train_handlers``, ``decollate``...).

    Each iteration's output: ``image``, ``label`` (the target), ``pred`` (detached) and the floats
    ``loss`` (generator total), ``d_loss`` (0 during the warm-up), ``adv``, ``rec``, ``proj``; with
    ``decollate``, a list of one such dict per case with the floats repeated (what MONAI handlers' ``from_engine(...,
    first=True)`` expects, e.g. ``--tracking mlflow``). With ``amp``, checkpoint
    ``g_scaler`` and ``d_scaler`` too for an exact resume.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer,
        loss_function: GeneratorLoss,
        condition: Callable[[torch.Tensor], torch.Tensor] | None = None,
        image_key: str = "image",
        target_key: str = "target",
        inferer: Inferer | None = None,
        adversarial_start: int = 0,
        **trainer_args: Any,
    ) -> None:
        if adversarial_start < 0:
            raise ValueError(f"adversarial_start must be >= 0, got {adversarial_start}.")
        conditioned = getattr(getattr(discriminator, "module", discriminator), "conditioned", False)  # DDP or not
        if conditioned != (condition is not None):
            raise ValueError(
                "a conditioned discriminator needs a condition (views -> volume) and an unconditioned one none; "
                f"got conditioned={conditioned} and condition={condition!r}."
            )
        super().__init__(device, max_epochs, train_data_loader, **trainer_args)
        self.adversarial_start = adversarial_start
        self.network, self.discriminator = generator, discriminator
        self.optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.loss_function, self.condition = loss_function, condition
        self.image_key, self.target_key = image_key, target_key
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.g_scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.d_scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def adversarial(self, iteration: int) -> bool:
        """Whether the adversarial term runs at this (1-based) iteration: after the warm-up, with a weight."""
        return iteration > self.adversarial_start and self.loss_function.lambda_adv > 0

    def train_step(self, views: torch.Tensor, target: torch.Tensor, adversarial: bool = True) -> dict[str, Any]:
        """One update of both networks on a batch already on the device; the iteration's output dict.

        Args:
            views: (B, 2, H, W) X-rays.
            target: (B, 1, X, Y, Z) CTs on the networks' scale.
            adversarial: run the discriminator step and the generator's LSGAN term (False: the
                supervised warm-up).
        """
        self.network.train()  # a validation run between epochs leaves the networks in eval mode
        self.discriminator.train()
        autocast = torch.autocast(views.device.type, enabled=self.amp)
        # 1. generate, and the discriminator's condition (the views' BP-I prior in the bundle)
        prior = self.condition(views) if adversarial and self.condition is not None else None
        with autocast:
            fake = self.inferer(views, self.network)
        # 2. discriminator step: real CTs toward 1, generated toward 0
        d_loss = torch.zeros(())
        if adversarial:
            self.d_optimizer.zero_grad(set_to_none=True)
            with autocast:
                d_loss = lsgan_discriminator_loss(
                    self.discriminator(target, prior), self.discriminator(fake.detach(), prior)
                )
            self.step(d_loss, self.d_optimizer, self.d_scaler)
        # 3. generator step: fool the discriminator, match the CT and its projections
        self.optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = self.discriminator(fake, prior) if adversarial else None
        terms = self.loss_function(fake.float(), target.float(), logits)  # float32: projections sum many voxels
        self.step(terms["loss"], self.optimizer, self.g_scaler)
        self.discriminator.zero_grad(set_to_none=True)  # the generator step left gradients there
        return {
            "image": views,
            "label": target,
            "pred": fake.detach(),
            "d_loss": d_loss.item(),
            **{name: value.item() for name, value in terms.items()},
        }

    def _iteration(self, engine: PairedGanTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        device = engine.state.device
        views = torch.as_tensor(batchdata[self.image_key]).to(device, non_blocking=self.non_blocking)
        target = torch.as_tensor(batchdata[self.target_key]).to(device, non_blocking=self.non_blocking)
        engine.state.output = self.train_step(views, target, self.adversarial(engine.state.iteration))
        engine.fire_event(IterationEvents.MODEL_COMPLETED)  # MONAI's decollation and post-processing run here
        return engine.state.output


__all__ = ["PairedGanTrainer"]
