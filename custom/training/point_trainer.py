"""Training an implicit network (SPIDER) from query points sampled in each case.

Each iteration encodes the batch's views once, draws ``points`` voxel centres per case (uniform plus
bone-boundary voxels, :func:`custom.data.points.sample_voxels`), decodes them with the network's
``query`` and takes one optimiser step on :class:`custom.training.losses.SpiderLoss`. Whole volumes are
never decoded during training, which is what makes implicit networks cheap to train at any grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from custom.data.points import sample_voxels
from custom.phantom import LABELS
from custom.training.trainer import CudaAmpTrainer
from monai.engines.utils import IterationEvents


class PointSampledTrainer(CudaAmpTrainer):
    """Supervised training of a network with ``view_features(views)`` and ``query(features, points)``.

    Args:
        device: where the network runs.
        max_epochs: epochs to train.
        train_data_loader: batches with ``image_key`` (B, 2, H, W) views, ``target_key`` (B, 1, X, Y, Z)
            CTs on the networks' scale and ``labels_key`` (B, 1, X, Y, Z) structure labels.
        network: e.g. :class:`~custom.networks.spider.SPIDER` (its geometry gives the voxel centres).
        optimizer: its optimiser.
        loss_function: ``(pred (B, N, 1 + C), intensity (B, N), labels (B, N))`` -> ``{"loss", ...}``.
        points: query points per case and iteration. Defaults to 8192.
        boundary_fraction: share of them on bone boundaries. Defaults to 0.5.
        image_key, target_key, labels_key: batch keys. Default to ``image``, ``label``, ``labels``.
        bone_classes: the label values that are bone (boundary points are drawn on their edges).
            Defaults to the tissue vocabulary's bone; SPIDER's structures have eight bone classes
            (:data:`custom.phantom.labels.BONE_STRUCTURES`).
        trainer_args: passed to :class:`~custom.training.trainer.CudaAmpTrainer` (``amp``,
            ``epoch_length``, ``train_handlers``, ``decollate``...).

    Each iteration's output: the floats ``loss``, ``rec`` and ``seg``. Points are drawn from torch's
    global random state, which the bundle's checkpoints carry, so a resume continues exactly. One
    process only: the network's ``query`` is called directly, which a DDP wrapper would not synchronise.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable[..., dict[str, torch.Tensor]],
        points: int = 8192,
        boundary_fraction: float = 0.5,
        image_key: str = "image",
        target_key: str = "label",
        labels_key: str = "labels",
        bone_classes: Sequence[int] = (LABELS["bone"],),
        **trainer_args: Any,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, **trainer_args)
        self.network, self.optimizer, self.loss_function = network, optimizer, loss_function
        self.points, self.boundary_fraction, self.bone_classes = points, boundary_fraction, tuple(bone_classes)
        self.image_key, self.target_key, self.labels_key = image_key, target_key, labels_key
        self.grad_scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def _iteration(self, engine: PointSampledTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        self.network.train()  # a validation run between epochs leaves the network in eval mode
        device = engine.state.device
        views = torch.as_tensor(batchdata[self.image_key]).to(device, non_blocking=self.non_blocking)
        target = torch.as_tensor(batchdata[self.target_key]).to(device)[:, 0]  # (B, X, Y, Z)
        labels = torch.as_tensor(batchdata[self.labels_key]).to(device)[:, 0].long()
        # 1. the points of each case: voxel indices, their world positions and targets
        network = self.network
        centres = network.geometry.voxel_centres(views.dtype, device)  # (X, Y, Z, 3) mm
        bone_classes = torch.as_tensor(self.bone_classes, device=device)
        picks = [sample_voxels(torch.isin(case, bone_classes), self.points, self.boundary_fraction) for case in labels]
        index = [(b, *p.unbind(-1)) for b, p in enumerate(picks)]
        points = torch.stack([centres[x, y, z] for _, x, y, z in index])  # (B, N, 3)
        intensity = torch.stack([target[b, x, y, z] for b, x, y, z in index])  # (B, N)
        classes = torch.stack([labels[b, x, y, z] for b, x, y, z in index])
        # 2. decode and step
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=self.amp):
            pred = network.query(network.view_features(views), points)
        terms = self.loss_function(pred.float(), intensity.float(), classes)
        self.step(terms["loss"], self.optimizer, self.grad_scaler)
        engine.state.output = {name: value.item() for name, value in terms.items()}
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


__all__ = ["PointSampledTrainer"]
