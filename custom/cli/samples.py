"""The sample X-ray pair shipped with the bundle, so ``run inference`` works with no arguments.

The pair is made by the project's own phantom and simulator: one phantom from a seed no training set
uses (:data:`SAMPLE_SEED`; the bundle trains on seed 0), projected through the default geometry onto a
detector with realistic quantum noise and unsharpness, written as 16-bit PNGs of the detector's size
(so they need no pixel spacing). Regenerate it with::

    python -m custom.cli.samples --out bundle/docs/samples
"""

from __future__ import annotations

from pathlib import Path

from custom.cli import run_commands
from custom.data.simulate import DetectorModel, SimulateBiplanarXRay
from custom.data.xray import write_xray
from custom.files import refuse_existing
from custom.imaging.geometry import VIEW_NAMES, BiplanarGeometry
from custom.phantom import case_seed, make_phantom

SAMPLE_SEED = 2026  # a phantom set disjoint from the training set (seed 0)
SAMPLE_DETECTOR = DetectorModel(photons=3e4, blur_mm=0.4)  # a clinical dose and a typical unsharpness


def sample_paths(folder: str | Path) -> dict[str, Path]:
    """The sample's files by view: ``sample_frontal.png`` and ``sample_lateral.png`` in ``folder``."""
    return {view: Path(folder) / f"sample_{view}.png" for view in VIEW_NAMES}


def write_sample_pair(out: str = "bundle/docs/samples", overwrite: bool = False) -> dict[str, Path]:
    """Simulate the sample pair with the default geometry and write it (nothing if any file exists).

    Args:
        out: output folder. Defaults to ``bundle/docs/samples``.
        overwrite: replace existing files. Defaults to False.
    """
    paths = sample_paths(out)
    refuse_existing(paths.values(), overwrite)
    geometry = BiplanarGeometry()
    phantom = make_phantom(case_seed(SAMPLE_SEED, 0), geometry)
    simulator = SimulateBiplanarXRay(geometry, detector=SAMPLE_DETECTOR).set_random_state(SAMPLE_SEED)
    views = simulator(phantom.hu)  # (2, H, W) in [0, 1]
    for view, image in zip(VIEW_NAMES, views):
        write_xray(paths[view], image, overwrite=overwrite)
    return paths


def main() -> None:
    run_commands(write_sample_pair)  # prints the written paths


__all__ = ["SAMPLE_DETECTOR", "SAMPLE_SEED", "sample_paths", "write_sample_pair"]


if __name__ == "__main__":
    main()
