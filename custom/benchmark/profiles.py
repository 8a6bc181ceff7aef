"""Benchmark profiles: the grid, data, network size and training budget of a side-by-side run.

- ``quick``: a CPU check that every method runs end to end, in under 20 minutes on 2 cores: a 32^3
  grid at 6 mm (the default field of view, 192 mm), 32^2 views at 7.2 mm, a small generator and
  discriminator, 48 phantoms (38 train, 10 test) and 100 updates per method (about 0.9 s each on 2
  cores: PyTorch's CPU 3D convolution takes its slow path on tensors this small). Its numbers show
  the pipeline and the very early ranking, not what the methods reach.
- ``cpu128``: the model card's headline on 2 CPU cores: the bundle's own training setting (the 128^3
  grid at 1.5 mm, the ``default`` generator, the bundle's discriminator, 160 phantoms split 0.8 / 0.1 /
  0.1 by the bundle's seeded hash, so its test cases are the shipped weights' held-out ones) and the
  shipped recipe's 810 updates (6 epochs of 135 cases) per method.
- ``full``: the paper's protocol for a GPU: the 128^3 grid at 1.5 mm, the ``default`` generator and
  the bundle's discriminator, 200 phantoms (about 180 train, 20 test), 16000 updates (about 90 epochs).

A profile is a set of ``train.json`` overrides plus the iteration budget; ``--budget`` and
``--num_phantoms`` on the command line replace the profile's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Profile:
    """A benchmark configuration.

    Args:
        name: ``quick``, ``cpu128`` or ``full``.
        budget: generator updates per trained method (batch size 1).
        num_phantoms: phantoms generated when the data is ``phantom``.
        overrides: ``train.json`` config ids and values (geometry, data, discriminator).
        networks: per network family (a method's ``family``), its size overrides.
    """

    name: str
    budget: int
    num_phantoms: int
    overrides: dict[str, Any]
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        "quick",
        budget=100,
        num_phantoms=48,
        overrides={
            "split_fractions": [0.75, 0.0, 0.25],  # no validation split: the benchmark measures final weights
            "geometry#vol_shape": [32, 32, 32],
            "geometry#vol_spacing": 6.0,  # mm: 192 mm, the default field of view
            "geometry#det_shape": [32, 32],
            "geometry#det_spacing": 7.2,  # mm: one pixel spans one voxel at the isocentre
            "discriminator_def#channels": 16,
            "discriminator_def#num_layers": 2,
            "discriminator_def#num_scales": 1,  # 32 voxels: one scale of two layers
            "points": 4096,  # SPIDER's query points per case
        },
        networks={
            "psctnet": {"network_def#preset": "tiny", "network_def#channels": [8, 16, 32, 48]},
            "spider": {
                "network_def#unet_features": [8, 8, 16, 32, 64, 8],
                "network_def#feature_channels": 16,
                "network_def#hash_log2_table_size": 16,
                "network_def#hash_finest_resolution": 128,
                "network_def#hidden": [64, 64],
            },
        },
    ),
    "cpu128": Profile("cpu128", budget=810, num_phantoms=160, overrides={"split_fractions": [0.8, 0.1, 0.1]}),
    "full": Profile("full", budget=16000, num_phantoms=200, overrides={"split_fractions": [0.9, 0.0, 0.1]}),
}


__all__ = ["PROFILES", "Profile"]
