"""Pediatric head phantoms grounded in measured infant cranial anatomy (phantom v2).

Pediatric skull CT is private, so the bundle draws its default training data here. One module per
concept: :mod:`~custom.phantom.atlas` (the measured calvaria and adult skull base), :mod:`~.norms`
(published growth figures and stated assumptions), :mod:`~.parameters` (one case drawn from a seed),
:mod:`~.calvarium`, :mod:`~.base_face` and :mod:`~.soft_tissue` (the anatomy), :mod:`~.labels` (label
vocabularies), :mod:`~.render` (composition) and :mod:`~.realism` (the report against the normative
tables). Their command line is :mod:`custom.cli.phantoms` (``python -m custom.cli.phantoms
generate|validate|fit``); nothing here imports the data pipeline.
"""

from custom.phantom.atlas import VAULT_TYPES
from custom.phantom.labels import BONE_LABELS, BONES, LABELS, OPENINGS, STRUCTURES, SUTURES
from custom.phantom.parameters import PhantomParameters, sample_parameters
from custom.phantom.render import Phantom, case_seed, make_phantom, render

__all__ = [
    "BONES",
    "BONE_LABELS",
    "LABELS",
    "OPENINGS",
    "STRUCTURES",
    "SUTURES",
    "VAULT_TYPES",
    "Phantom",
    "PhantomParameters",
    "case_seed",
    "make_phantom",
    "render",
    "sample_parameters",
]
