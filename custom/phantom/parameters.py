"""What decides one phantom, drawn from a seed: age, sex, suture state, size, shape variation, pose.

Everything comes from ``numpy.random.default_rng(seed)`` in a fixed order, so (seed, arguments) give
the same case on any machine, and an argument that is given never shifts the other draws.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from custom.phantom import norms
from custom.phantom.atlas import VAULT_TYPES, Atlas, load_atlas

FUSED = {  # sutures closed from birth by each vault type (normal growth and four single-suture synostoses)
    "normal": (),
    "metopic": ("metopic",),
    "sagittal": ("sagittal",),
    "left_coronal": ("coronal_left",),
    "right_coronal": ("coronal_right",),
}
SEXES = ("male", "female")
SHAPE_MODES = 6  # smooth shape variation: radial modulation by the quadratic terms of the direction
SHAPE_SD = 0.015  # assumption: each mode modulates the radius by N(0, 1.5 %)


@dataclass(frozen=True)
class PhantomParameters:
    """Everything that decides one phantom; lengths in mm, ages in months, densities in HU.

    Build it with :func:`sample_parameters`; :func:`custom.phantom.render.render` turns it into volumes.
    """

    seed: int
    age_months: float
    sex: str
    variant: str  # one of VAULT_TYPES
    head_circumference_cm: float  # over the scalp, at the widest section
    cephalic_index: float | None  # 100 x breadth / length of the vault; None keeps the variant's own shape
    shape_modes: tuple[float, ...]  # radial modulation coefficients (see SHAPE_MODES)
    thickness_factor: float  # times the normative thickness of each bone
    scalp_mm: float
    suture_mm: float  # open suture width
    metopic_mm: float  # metopic suture width (0 once fused)
    anterior_fontanelle_mm2: float  # 0 once closed
    posterior_fontanelle_mm: float  # diagonal, 0 once closed
    fused: tuple[str, ...]  # sutures closed by synostosis or by age (the metopic)
    vault_hu: float
    tooth_buds: bool
    ventricle_scale: float
    rotation_deg: tuple[float, float, float]  # head pose about x, y, z
    shift_mm: tuple[float, float, float]  # head pose translation (after centring)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def sample_parameters(
    seed: int,
    age_months: float | None = None,
    variant: str | None = None,
    sex: str | None = None,
    pose: bool = True,
    tooth_buds: bool = True,
    max_rotation_deg: float = 5.0,
    max_shift_mm: float = 5.0,
    atlas: Atlas | None = None,
) -> PhantomParameters:
    """Draw one phantom's parameters; anything given is used as is, the rest comes from ``seed``.

    Args:
        seed: seed of the case's random generator.
        age_months: age, months in [0, 24]. Defaults to uniform in [0, 24].
        variant: the vault type, one of :data:`~custom.phantom.atlas.VAULT_TYPES`. Defaults to ``normal``
            with probability 1/2, else a uniform choice among the four synostoses.
        sex: ``male`` or ``female``. Defaults to a coin flip.
        pose: draw a random head pose. Defaults to True; False keeps the head upright and centred.
        tooth_buds: add tooth buds to the jaws. Defaults to True.
        max_rotation_deg: largest pose rotation about each axis, degrees. Defaults to 5.
        max_shift_mm: largest pose shift along each axis, mm. Defaults to 5.
        atlas: whose normative cephalic index normal cases follow. Defaults to the committed atlas.

    Raises:
        ValueError: an age outside [0, 24], an unknown variant or sex.
    """
    rng = np.random.default_rng(seed)
    draws = {name: rng.uniform() for name in ("age", "variant_coin", "variant", "sex")}
    draws.update(hc_z=float(np.clip(rng.normal(), -2, 2)), ci_z=float(np.clip(rng.normal(), -2, 2)))
    draws.update(modes=rng.normal(0, SHAPE_SD, SHAPE_MODES), thick=rng.normal(1, norms.THICKNESS_SPREAD))
    draws.update(
        scalp=rng.uniform(0.85, 1.15), af_close=rng.uniform(), pf_close=rng.uniform(*norms.POSTERIOR_CLOSES_MONTHS)
    )
    draws.update(metopic_close=rng.uniform(*norms.METOPIC_FUSES_MONTHS), ventricles=rng.uniform(0.8, 1.25))
    draws.update(rotation=rng.uniform(-1, 1, 3), shift=rng.uniform(-1, 1, 3))

    age = 24 * draws["age"] if age_months is None else float(age_months)
    if not 0 <= age <= 24:
        raise ValueError(f"age_months must lie in [0, 24], got {age_months}.")
    if variant is None:
        variant = "normal" if draws["variant_coin"] < 0.5 else VAULT_TYPES[1 + int(draws["variant"] * 4)]
    if variant not in VAULT_TYPES:
        raise ValueError(f"variant must be one of {VAULT_TYPES}, got {variant!r}.")
    sex = sex or SEXES[int(draws["sex"] * 2)]
    if sex not in SEXES:
        raise ValueError(f"sex must be one of {SEXES}, got {sex!r}.")
    atlas = atlas or load_atlas()
    hc = norms.head_circumference(age, sex) + draws["hc_z"] * norms.HC_SD_CM
    index = (
        atlas.norm("cephalic_index", age, sex) + draws["ci_z"] * norms.CEPHALIC_INDEX_SD
        if variant == "normal"
        else None
    )
    metopic_fuses = 0.0 if variant == "metopic" else draws["metopic_close"]
    suture = norms.at_age(norms.SUTURE_WIDTH_MM, age)
    metopic = suture * float(np.clip((metopic_fuses - age) / 2, 0, 1))  # narrows over two months, then fuses
    fused = FUSED[variant] + (("metopic",) if metopic == 0 and variant != "metopic" else ())
    anterior = norms.anterior_fontanelle_area(age, norms.anterior_closure_age(draws["af_close"]))
    posterior = norms.POSTERIOR_DIAGONAL_MM * max(0.0, 1 - age / draws["pf_close"])
    rotation = draws["rotation"] * max_rotation_deg if pose else np.zeros(3)
    shift = draws["shift"] * max_shift_mm if pose else np.zeros(3)
    return PhantomParameters(
        seed=int(seed),
        age_months=round(age, 3),
        sex=sex,
        variant=variant,
        head_circumference_cm=round(hc, 2),
        cephalic_index=None if index is None else round(index, 2),
        shape_modes=tuple(round(float(v), 4) for v in draws["modes"]),
        thickness_factor=round(float(np.clip(draws["thick"], 0.7, 1.3)), 3),
        scalp_mm=round(norms.at_age(norms.SCALP_MM, age) * draws["scalp"], 2),
        suture_mm=round(suture, 2),
        metopic_mm=round(metopic, 2),
        anterior_fontanelle_mm2=round(anterior, 1),
        posterior_fontanelle_mm=round(posterior, 2),
        fused=fused,
        vault_hu=round(norms.at_age(norms.VAULT_HU, age), 1),
        tooth_buds=tooth_buds,
        ventricle_scale=round(draws["ventricles"], 3),
        rotation_deg=tuple(round(float(v), 3) for v in rotation),
        shift_mm=tuple(round(float(v), 3) for v in shift),
    )


__all__ = ["FUSED", "SEXES", "PhantomParameters", "sample_parameters"]
