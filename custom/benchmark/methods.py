"""The methods the benchmark sets side by side, each a way to build and train a model from the bundle.

A :class:`Method` is the bundle's training config (``bundle/configs/train.json``) plus what makes the
method: config overrides and extra config files layered on top (the generator's module switches, or
another network's configs), or a baseline class fitted instead of trained. Every method therefore
uses the same data pipeline, simulator, losses, optimisers and schedule, and differs only where it
does.

What the benchmark replaces in every method's config, by config id: :data:`BENCHMARK_OVERRIDES` (no
logging writers, the data order seeded apart from the model's initialisation) and, in each trained
method's ``overrides``, ``train#handlers``: the learning-rate schedules of its trainer and nothing else
(:data:`TRAINING_HANDLERS`; no validation, the benchmark measures the final weights). ``train#handlers``
stays a plain list of handler configs in the bundle, because MONAI's workflow checks read it to find
the ``ValidationHandler``; the benchmark therefore states its lists instead of deriving them, and a
test holds them equal to the bundle's less its validation.

Order of :data:`METHODS`: the three fitted baselines, the X2CT-GAN-style generator, PSCT-Net's
ablations as in the paper's table, all modules, then SPIDER and its decoder ablations (two branches,
two stages). Another network joins by adding a method whose ``config_files`` hold its bundle
override configs (its network, loss and trainer) and whose ``overrides`` give its ``train#handlers``;
the benchmark needs nothing else from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from custom.benchmark.baselines import CalibratedBackProjection, MeanAtlas, VoxelwiseBackProjection
from custom.networks.psctnet import ABLATIONS
from torch import nn

BENCHMARK_OVERRIDES: dict[str, Any] = {  # config ids every method's config replaces in a benchmark run
    "train#writers": [],  # no progress bar, console or TensorBoard logging
    "train#dataloader#generator": "$torch.Generator().manual_seed(@seed)",  # data order apart from model init
}


def _schedule(scheduler: str) -> dict[str, Any]:
    """The bundle's handler that steps the learning-rate scheduler ``scheduler`` (a config reference)."""
    return {"_target_": "LrScheduleHandler", "lr_scheduler": scheduler, "print_lr": False}


TRAINING_HANDLERS: dict[str, list[dict[str, Any]]] = {  # per family: its train#handlers without validation
    "psctnet": [_schedule("@g_scheduler"), _schedule("@d_scheduler")],  # train.json's GAN trainer
    "spider": [_schedule("@g_scheduler")],  # spider_train.json's point-sampled trainer
}


@dataclass(frozen=True)
class Method:
    """One method of the benchmark.

    Args:
        name: its name in the results (``results.json``'s ``variant``).
        description: what it is, one line, for the table.
        overrides: ``train.json`` config ids and values that make it (e.g. ``network_def#variant``, the
            PSCT-Net ablation) and that it replaces for the benchmark (``train#handlers``).
        config_files: bundle configs layered over ``train.json``, relative to the bundle root.
        fitted: a baseline class ``cls(geometry=...)`` with ``fit(loader)``, fitted in one pass over
            the training data instead of trained; None for a network trained by the bundle's trainer.
        family: the network family whose size overrides a profile applies (``psctnet`` or ``spider``).
    """

    name: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    config_files: tuple[str, ...] = ()
    fitted: type[nn.Module] | None = None
    family: str = "psctnet"


_ABLATION_DESCRIPTIONS = {
    "x2ct": "X2CT-GAN-style: fully connected 2D->3D link, MV3D-C; no BP-I/BP-C/AGP-3D/BiM-3D",
    "bp_i": "+BP-I (back-projected views into a 3D encoder)",
    "bp_i_bp_c": "+BP-I +BP-C (back-projected 2D features at every level)",
    "agp": "AGP-3D link only",
    "bim": "BiM-3D only (fully connected link)",
    "bp_agp": "BP-I +BP-C +AGP-3D",
    "bp_bim": "BP-I +BP-C +BiM-3D",
    "psctnet": "PSCT-Net: BP-I, BP-C, AGP-3D, BiM-3D, MV3D-C",
}

METHODS: dict[str, Method] = {
    "mean_atlas": Method("mean_atlas", "training-set mean CT, ignores the views", fitted=MeanAtlas),
    "bp_only": Method(
        "bp_only", "BP-I prior, linear HU calibration on the training set", fitted=CalibratedBackProjection
    ),
    "bp_voxelwise": Method(
        "bp_voxelwise",
        "BP-I prior, gain and offset per voxel fitted on the training set (the generators' floor)",
        fitted=VoxelwiseBackProjection,
    ),
    **{
        name: Method(
            name,
            _ABLATION_DESCRIPTIONS[name],
            overrides={"network_def#variant": name, "train#handlers": TRAINING_HANDLERS["psctnet"]},
        )
        for name in ABLATIONS
    },
    **{
        name: Method(
            name,
            description,
            {"network_def#decoder": decoder, "train#handlers": TRAINING_HANDLERS["spider"]},
            ("configs/spider_train.json",),
            family="spider",
        )
        for name, decoder, description in (
            ("spider", "shared", "SPIDER: implicit decoder, intensity + structure from one shared MLP"),
            ("spider_two_branch", "two_branch", "SPIDER, two decoder branches (intensity, structure)"),
            ("spider_two_stage", "two_stage", "SPIDER, two stages (structure, then intensity)"),
        )
    },
}


__all__ = ["BENCHMARK_OVERRIDES", "METHODS", "TRAINING_HANDLERS", "Method"]
