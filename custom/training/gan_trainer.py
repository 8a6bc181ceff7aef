"""Training engine: PSCT-Net's paired conditional GAN trainer, its learning-rate schedule and resumable random state.

:class:`PairedGanTrainer` is a MONAI :class:`~monai.engines.Trainer`: each iteration updates the
discriminator on (real CT, generated CT) and then the generator on the weighted objective of
:class:`~custom.training.losses.GeneratorLoss`, following PSCT-Net (arXiv 2606.19867) and X2CT-GAN. MONAI
handlers (checkpoints, statistics, validation) attach to it as to any trainer.

Resuming must give the same result as never stopping: a checkpoint therefore holds, besides the
networks, optimisers, schedulers and the trainer's epoch and iteration, the :class:`RandomState`: the
torch (CPU and CUDA), numpy and Python generators, which decide the data order and the workers'
seeds, and the generators of the random transforms that run in this process.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from custom.training.losses import GeneratorLoss, lsgan_discriminator_loss
from monai.engines import IterationEvents, Trainer
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import Compose, Randomizable
from torch.optim.lr_scheduler import LambdaLR


def linear_decay_schedule(optimizer: torch.optim.Optimizer, constant_epochs: int, decay_epochs: int) -> LambdaLR:
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


class CudaAmpTrainer(Trainer):
    """A MONAI :class:`~monai.engines.Trainer` whose mixed precision is on only where it applies (CUDA).

    The bundle's trainers build on it; the arguments are :class:`~monai.engines.Trainer`'s
    (``train_data_loader`` is its ``data_loader``, ``key_train_metric`` its ``key_metric``,
    ``train_handlers`` its ``handlers``).
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
        loss_function: the generator objective; its projector also makes the discriminator's
            condition (the BP-I prior of the views) when the discriminator is conditioned.
        image_key, target_key: batch keys. Default to ``image`` and ``target``.
        inferer: how the generator is applied to the views (``inferer(views, generator)``). Defaults to
            MONAI's :class:`~monai.inferers.SimpleInferer` (one whole-volume forward pass).
        adversarial_start: the supervised warm-up, in iterations: during the first
            ``adversarial_start`` iterations the discriminator neither trains nor enters the
            generator's objective (volume and projection L1 only); from the next one on, both run as in
            PSCT-Net. Defaults to 0 (the paper's objective throughout).
        trainer_args: ``amp``, ``epoch_length``, ``non_blocking``, ``key_train_metric``,
            ``train_handlers``, ``postprocessing``, ``decollate``, as :class:`CudaAmpTrainer`.

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
        image_key: str = "image",
        target_key: str = "target",
        inferer: Inferer | None = None,
        adversarial_start: int = 0,
        **trainer_args: Any,
    ) -> None:
        if adversarial_start < 0:
            raise ValueError(f"adversarial_start must be >= 0, got {adversarial_start}.")
        super().__init__(device, max_epochs, train_data_loader, **trainer_args)
        self.adversarial_start = adversarial_start
        self.network, self.discriminator = generator, discriminator
        self.optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.loss_function = loss_function
        self.image_key, self.target_key = image_key, target_key
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.g_scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.d_scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def _step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

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
        # 1. generate; the discriminator's condition is the views' BP-I prior
        prior = None
        discriminator = getattr(self.discriminator, "module", self.discriminator)  # DDP or not
        if adversarial and getattr(discriminator, "conditioned", False):
            prior = self.loss_function.projection.projector.backproject(views)
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
            self._step(d_loss, self.d_optimizer, self.d_scaler)
        # 3. generator step: fool the discriminator, match the CT and its projections
        self.optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = self.discriminator(fake, prior) if adversarial else None
        terms = self.loss_function(fake.float(), target.float(), logits)  # float32: projections sum many voxels
        self._step(terms["loss"], self.optimizer, self.g_scaler)
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


__all__ = ["CudaAmpTrainer", "PairedGanTrainer", "RandomState", "linear_decay_schedule"]
