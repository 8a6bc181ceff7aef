"""Procedural pediatric head phantoms in HU, normal and with craniosynostosis, on the CT grid.

Pediatric skull CT is private, so the bundle draws its default training data from this module. A
phantom is the anatomy a skull radiograph shows, built from implicit shapes evaluated at the voxel
centres with partial-volume edges:

- head: scalp over the vault, facial soft tissue, neck;
- cranial vault: a bony shell of direction-dependent thickness (outer and inner tables with diploe
  once it is thick enough), cut by the open sutures (metopic, sagittal, coronal, lambdoid, squamosal)
  and the anterior and posterior fontanelles;
- skull base: a stepped floor (anterior, middle and posterior fossae) with petrous ridges and the
  foramen magnum; cervical vertebrae below it;
- face: orbits with eyes and bony rims, nasal cavity, maxilla, mandible, optional tooth buds;
- inside: brain, the CSF around it and the lateral ventricles.

Age (0-24 months) sets the head circumference (WHO Child Growth Standards, head circumference-for-
age, 2007: medians of boys and girls), the scalp and vault thickness, bone density, suture width and
the fontanelles: the posterior fontanelle closes at 1.5-3 months, the metopic suture fuses at 3-9
months and the anterior fontanelle closes at 12-18 months (each case draws its own ages); the
sagittal, coronal, lambdoid and squamosal sutures stay open. Craniosynostosis variants fuse their
suture(s) and deform the vault as described by Kabbani & Raghuveer (Am Fam Physician 2004) and
Persing (Plast Reconstr Surg 2008):

=============  =================  ===============================================================
variant        fused suture(s)    shape
=============  =================  ===============================================================
normal         none               cephalic index about 0.8
sagittal       sagittal           scaphocephaly: long and narrow (index about 0.68), tapered occiput
metopic        metopic            trigonocephaly: narrow triangular forehead, midline keel,
                                  orbits closer together
unicoronal     one coronal        anterior plagiocephaly: forehead flat on the fused side and
                                  bossed on the other, orbit raised on the fused side
bicoronal      both coronal       brachycephaly: short, wide (index about 0.95), tall, flat forehead
lambdoid       one lambdoid       posterior plagiocephaly: occiput flat on the fused side
=============  =================  ===============================================================

Everything is drawn from ``numpy.random.default_rng(seed)``, so (seed, parameters) give the same
volume on any machine. A head frame (origin at the vault centre, x to the patient's right, y anterior,
z superior, mm) is posed in the RAS world of :class:`~custom.geometry.BiplanarGeometry` with a small
random rotation and shift around the grid centre.

Command line: ``python -m custom.phantom --out DIR --n 8 --seed 0`` writes volumes, label maps,
parameters and a montage per case (see :func:`main`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import fire
import nibabel as nib
import numpy as np
import torch
from PIL import Image

from custom.files import atomic_write, refuse_existing
from custom.geometry import BiplanarGeometry, rotation_matrix
from custom.physics import AIR_HU

LABELS = {"background": 0, "soft_tissue": 1, "brain": 2, "bone": 3}  # label map values
VARIANTS = ("normal", "sagittal", "metopic", "unicoronal", "bicoronal", "lambdoid")
SIDES = ("left", "right")  # the patient's side of a unilateral synostosis
BONE_FRACTION = (0.01, 0.05)  # share of bone-labelled voxels of the default grid, 0-24 months (tested)

# WHO head circumference-for-age medians, mean of boys and girls: (months, cm)
_HEAD_CIRCUMFERENCE = ((0, 34.2), (3, 40.0), (6, 42.8), (12, 45.5), (18, 46.8), (24, 47.8))
_HEAD_CIRCUMFERENCE_SD = 1.2  # cm, about one WHO standard deviation at these ages
_CEPHALIC_INDEX = {"normal": 0.80, "sagittal": 0.68, "metopic": 0.80, "unicoronal": 0.83, "bicoronal": 0.95}
_CEPHALIC_INDEX["lambdoid"] = 0.82
_FUSED = {  # sutures closed by each variant (side-specific names carry _left / _right)
    "normal": (),
    "sagittal": ("sagittal",),
    "metopic": ("metopic",),
    "unicoronal": ("coronal_{side}",),
    "bicoronal": ("coronal_left", "coronal_right"),
    "lambdoid": ("lambdoid_{side}",),
}
SUTURES = (
    "metopic",
    "sagittal",
    "coronal_left",
    "coronal_right",
    "lambdoid_left",
    "lambdoid_right",
    "squamosal_left",
    "squamosal_right",
)
OPENINGS = (*SUTURES, "anterior_fontanelle", "posterior_fontanelle")  # values 1.. of Phantom.openings


def head_circumference(age_months: float) -> float:
    """WHO median head circumference (cm) at an age in months (0-24), linearly interpolated."""
    months, cm = zip(*_HEAD_CIRCUMFERENCE)
    return float(np.interp(age_months, months, cm))


def ellipse_perimeter(a: float, b: float) -> float:
    """Ramanujan's approximation of the perimeter of an ellipse with semi-axes a, b (same unit)."""
    return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))


@dataclass(frozen=True)
class PhantomParameters:
    """Everything that decides one phantom; lengths in mm, ages in months, densities in HU.

    Build it with :func:`sample_parameters`; :func:`render` turns it into volumes.
    """

    seed: int
    age_months: float
    variant: str
    side: str | None  # fused side of a unilateral variant (patient's), else None
    severity: float  # 0 (normal shape) .. 1 (marked deformation)
    head_circumference_cm: float
    cephalic_index: float  # skull width / length
    skull_semi_axes: tuple[float, float, float]  # outer vault surface a (x), b (y), c (z), mm
    scalp_mm: float
    vault_mm: float  # mean vault thickness
    suture_mm: float  # open suture width
    metopic_mm: float  # metopic suture width (0 once fused)
    anterior_fontanelle_mm: float  # diagonal of the diamond (0 once closed)
    posterior_fontanelle_mm: float
    fused: tuple[str, ...]
    bone_hu: float  # vault tables
    tooth_buds: bool
    thickness_direction: tuple[float, float, float]  # unit vector of the vault's thicker side
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
    side: str | None = None,
    severity: float | None = None,
    pose: bool = True,
    tooth_buds: bool = True,
    max_rotation_deg: float = 5.0,
    max_shift_mm: float = 5.0,
) -> PhantomParameters:
    """Draw one phantom's parameters; anything given is used as is, the rest comes from ``seed``.

    Args:
        seed: seed of the case's random generator.
        age_months: age, months in [0, 24]. Defaults to uniform in [0, 24].
        variant: one of :data:`VARIANTS`. Defaults to ``normal`` with probability 1/2, else a uniform
            choice among the five craniosynostosis variants.
        side: ``left`` or ``right`` for ``unicoronal`` and ``lambdoid``. Defaults to a coin flip.
        severity: deformation strength in [0, 1]. Defaults to uniform in [0.6, 1].
        pose: draw a random head pose. Defaults to True; False keeps the head upright and centred.
        tooth_buds: add tooth buds to the jaws. Defaults to True.
        max_rotation_deg: largest pose rotation about each axis, degrees. Defaults to 5.
        max_shift_mm: largest pose shift along each axis, mm. Defaults to 5.

    Raises:
        ValueError: an age outside [0, 24], an unknown variant or side, a side for a bilateral or
            normal variant, or a severity outside [0, 1].
    """
    rng = np.random.default_rng(seed)
    # 1. draw every random number in a fixed order, so a given argument never shifts the others
    draws = {name: rng.uniform() for name in ("age", "variant_coin", "variant", "side", "severity")}
    draws.update(hc_z=float(np.clip(rng.normal(), -2, 2)), ci_noise=rng.normal(0, 0.025))
    draws.update(thick=rng.uniform(0.9, 1.1), scalp=rng.uniform(0.85, 1.15), direction=rng.normal(size=3))
    draws.update(af_size=rng.uniform(20, 30), af_close=rng.uniform(12, 18), pf_close=rng.uniform(1.5, 3))
    draws.update(metopic_close=rng.uniform(3, 9), ventricles=rng.uniform(0.8, 1.25))
    draws.update(rotation=rng.uniform(-1, 1, 3), shift=rng.uniform(-1, 1, 3))

    # 2. the case: age, variant, side, severity
    age = 24 * draws["age"] if age_months is None else float(age_months)
    if not 0 <= age <= 24:
        raise ValueError(f"age_months must lie in [0, 24], got {age_months}.")
    if variant is None:
        variant = "normal" if draws["variant_coin"] < 0.5 else VARIANTS[1 + int(draws["variant"] * 5)]
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    unilateral = variant in ("unicoronal", "lambdoid")
    if side is not None and (side not in SIDES or not unilateral):
        raise ValueError(f"side must be one of {SIDES} and only for unicoronal or lambdoid, got {side!r} ({variant}).")
    side = (side or SIDES[int(draws["side"] * 2)]) if unilateral else None
    severity = (0.6 + 0.4 * draws["severity"] if severity is None else float(severity)) if variant != "normal" else 0.0
    if not 0 <= severity <= 1:
        raise ValueError(f"severity must lie in [0, 1], got {severity}.")

    # 3. size: head circumference over the scalp, shape from the cephalic index
    hc = head_circumference(age) + draws["hc_z"] * _HEAD_CIRCUMFERENCE_SD
    index = _CEPHALIC_INDEX["normal"] + severity * (_CEPHALIC_INDEX[variant] - _CEPHALIC_INDEX["normal"])
    index += draws["ci_noise"]
    scalp = (2.5 + 0.06 * age) * draws["scalp"]
    half_length = hc * 10 / ellipse_perimeter(index, 1.0)  # scalp, mm
    b = half_length - scalp
    a = index * half_length - scalp
    c = 0.78 * b * (1 + 0.12 * severity if variant == "bicoronal" else 1)

    # 4. bone and sutures by age
    fused = tuple(name.format(side=side) for name in _FUSED[variant])
    metopic = 0.0 if "metopic" in fused else float(np.clip((draws["metopic_close"] - age) / 2, 0, 1))
    suture = 2.0 - 0.04 * age
    anterior = draws["af_size"] * max(0.0, 1 - age / draws["af_close"]) ** 0.7
    posterior = 10.0 * max(0.0, 1 - age / draws["pf_close"])
    direction = draws["direction"] / np.linalg.norm(draws["direction"])
    rotation = draws["rotation"] * max_rotation_deg if pose else np.zeros(3)
    shift = draws["shift"] * max_shift_mm if pose else np.zeros(3)

    return PhantomParameters(
        seed=int(seed),
        age_months=round(age, 3),
        variant=variant,
        side=side,
        severity=round(severity, 3),
        head_circumference_cm=round(hc, 2),
        cephalic_index=round(index, 3),
        skull_semi_axes=(round(a, 2), round(b, 2), round(c, 2)),
        scalp_mm=round(scalp, 2),
        vault_mm=round((1.2 + 0.09 * age) * draws["thick"], 2),
        suture_mm=round(suture, 2),
        metopic_mm=round(metopic * suture, 2),
        anterior_fontanelle_mm=round(anterior, 2),
        posterior_fontanelle_mm=round(posterior, 2),
        fused=fused,
        bone_hu=round(800 + 25 * age, 1),
        tooth_buds=tooth_buds,
        thickness_direction=tuple(round(float(v), 4) for v in direction),
        ventricle_scale=round(draws["ventricles"], 3),
        rotation_deg=tuple(round(float(v), 3) for v in rotation),
        shift_mm=tuple(round(float(v), 3) for v in shift),
    )


@dataclass
class Phantom:
    """One rendered case.

    Attributes:
        hu: (X, Y, Z) float32 CT numbers, HU, RAS on the geometry's grid.
        labels: (X, Y, Z) uint8 label map, values of :data:`LABELS`.
        openings: (X, Y, Z) uint8 map of the open sutures and fontanelles: vault voxels that an
            opening empties by at least a quarter (a 1 mm suture on a 1.5 mm grid is partial volume)
            are ``i + 1`` for ``OPENINGS[i]``, all others 0.
        parameters: the :class:`PhantomParameters` it was rendered from.
        head_to_world: (4, 4) pose of the head frame (origin at the vault centre, x right, y anterior,
            z superior, mm) in the world (RAS, mm).
    """

    hu: torch.Tensor
    labels: torch.Tensor
    openings: torch.Tensor
    parameters: PhantomParameters
    head_to_world: np.ndarray


class _Canvas:
    """The CT grid seen from the head frame, and the volumes being painted on it.

    Head-frame coordinates of voxel centres are ``R^T (world - t)``; they are made for the whole grid
    once and for small boxes on demand. ``paint`` blends a value in by partial-volume fractions and
    relabels the voxels that the structure covers by at least half.
    """

    def __init__(self, geometry: BiplanarGeometry, rotation: np.ndarray, translation: np.ndarray) -> None:
        self.spacing = geometry.vol_spacing  # mm
        self.axes = [c.float() for c in geometry.voxel_coordinates()]  # world x, y, z of voxel centres, mm
        self.rotation, self.translation = rotation, translation  # head -> world
        self.hu = torch.full(geometry.vol_shape, AIR_HU)
        self.labels = torch.zeros(geometry.vol_shape, dtype=torch.uint8)
        self.full = self.coordinates((slice(None),) * 3)

    def coordinates(self, box: tuple[slice, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Head-frame x, y, z (mm) of the voxel centres in ``box``, each broadcast to the box shape."""
        shifted = [
            (axis[s] - t).view([-1 if i == k else 1 for k in range(3)])
            for i, (axis, s, t) in enumerate(zip(self.axes, box, self.translation))
        ]
        return tuple(sum(float(self.rotation[j, i]) * shifted[j] for j in range(3)) for i in range(3))

    def box(self, centre: Sequence[float], radius: float) -> tuple[slice, ...] | None:
        """Index box holding the ball of ``radius`` mm around a head-frame ``centre``; None if off grid."""
        world = self.rotation @ np.asarray(centre, dtype=float) + self.translation
        box = []
        for axis, w in zip(self.axes, world):
            start = int(np.searchsorted(axis.numpy(), w - radius - self.spacing))
            stop = int(np.searchsorted(axis.numpy(), w + radius + self.spacing))
            if stop <= start:
                return None
            box.append(slice(start, stop))
        return tuple(box)

    def paint(self, fraction: torch.Tensor, hu: float | torch.Tensor, label: str, box=None) -> None:
        """Blend ``hu`` over the volume by ``fraction`` (0..1) and relabel where ``fraction >= 0.5``."""
        box = box or (slice(None),) * 3
        self.hu[box] = torch.lerp(self.hu[box], torch.as_tensor(hu, dtype=torch.float32), fraction)
        self.labels[box] = torch.where(fraction >= 0.5, LABELS[label], self.labels[box])

    def inside(self, distance: torch.Tensor) -> torch.Tensor:
        """Partial-volume fraction of a voxel from the signed distance (mm) of its centre to a surface."""
        return (0.5 - distance / self.spacing).clamp(0, 1)

    def band(self, distance: torch.Tensor, half_width: float) -> torch.Tensor:
        """Partial-volume fraction of a voxel inside the slab ``|distance| < half_width`` (mm)."""
        return (0.5 + (half_width - distance.abs()) / self.spacing).clamp(0, 1)


def _ellipsoid_distance(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, semi: Sequence[float]) -> torch.Tensor:
    """Approximate signed distance (mm) to an ellipsoid at the origin; exact on the surface, first order near it."""
    ux, uy, uz = x / semi[0], y / semi[1], z / semi[2]
    radius = torch.sqrt(ux * ux + uy * uy + uz * uz)
    gradient = torch.sqrt((ux / semi[0]) ** 2 + (uy / semi[1]) ** 2 + (uz / semi[2]) ** 2)  # |grad radius| * radius
    return torch.where(gradient > 1e-9, (radius - 1) * radius / gradient.clamp(min=1e-9), -min(semi))


def _ball(canvas: _Canvas, centre: Sequence[float], semi: Sequence[float], yaw_deg: float = 0.0, box=None):
    """Box and fraction of an ellipsoid at a head-frame ``centre``, turned by ``yaw_deg`` about z.

    The box is the smallest one holding the ellipsoid unless given; (None, None) when off the grid.
    """
    box = box or canvas.box(centre, max(semi))
    if box is None:
        return None, None
    x, y, z = (q - c for q, c in zip(canvas.coordinates(box), centre))
    cos, sin = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    x, y = cos * x + sin * y, -sin * x + cos * y
    return box, canvas.inside(_ellipsoid_distance(x, y, z, semi))


def _pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(4, 4) homogeneous matrix of a rotation followed by a translation (mm)."""
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, translation
    return pose


def _vault_coordinates(p: PhantomParameters, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor):
    """The variant's deformation: head-frame points -> the frame where the vault is an ellipsoid.

    Scaling a coordinate up pulls the surface in along it; each variant scales where its shape differs.
    """
    a, b, _ = p.skull_semi_axes
    k = p.severity
    front, back = (y / b).clamp(min=0), (-y / b).clamp(min=0)  # 0 at the centre, 1 at the forehead / occiput
    if p.variant == "sagittal":  # tapered, bullet-shaped occiput
        x = x / (1 - 0.25 * k * back**2)
    elif p.variant == "metopic":  # narrow triangular forehead with a midline keel
        x = x / (1 - 0.35 * k * front**1.5)
        y = y / (1 + 0.08 * k * front * torch.exp(-((x / 10) ** 2)))
    elif p.variant == "bicoronal":  # flat forehead
        y = y * (1 + 0.2 * k * front**2)
    elif p.variant in ("unicoronal", "lambdoid"):
        sign = -1.0 if p.side == "left" else 1.0  # the patient's left is -x
        ipsilateral = torch.sigmoid(sign * x / (0.25 * a))
        region = front if p.variant == "unicoronal" else back
        flatten, boss = (0.25, 0.1) if p.variant == "unicoronal" else (0.25, 0.06)
        y = y * (1 + k * region * (flatten * ipsilateral - boss * (1 - ipsilateral)))
    return x, y, z


def _openings(p: PhantomParameters, canvas: _Canvas, x, y, z) -> dict[str, torch.Tensor]:
    """Fraction of vault bone missing at each open suture and fontanelle (:data:`OPENINGS`), from vault-frame points.

    Sutures are bands of the suture width around lines on the vault, fontanelles diamonds at the bregma
    and the lambda; fused or closed ones are left out.
    """
    a, b, c = p.skull_semi_axes
    radius = torch.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2).clamp(min=1e-6)
    nx, ny, nz = x / a / radius, y / b / radius, z / c / radius  # direction on the unit sphere
    bregma_y, lambda_y = 0.25, -0.6
    coronal_y = bregma_y + 0.15 * (1 - nz)  # runs down and slightly forward to the pterion
    lambdoid_y = lambda_y + 0.25 * (0.8 - nz)  # runs down and forward to the asterion
    squamosal_z = 0.05 + 0.1 * ny
    left, right = nx < 0, nx >= 0
    between = (ny < coronal_y) & (ny > lambdoid_y)
    lines = {  # name: (distance to the suture line in mm, where the suture runs, half width in mm)
        "metopic": (nx * a, (ny > coronal_y) & (nz > -0.05), p.metopic_mm / 2),
        "sagittal": (nx * a, between & (nz > 0), p.suture_mm / 2),
    }
    for side, on_side in (("left", left), ("right", right)):
        lines[f"coronal_{side}"] = ((ny - coronal_y) * b, on_side & (nz > squamosal_z - 0.05), p.suture_mm / 2)
        lines[f"lambdoid_{side}"] = ((ny - lambdoid_y) * b, on_side & (nz > -0.25), p.suture_mm / 2)
        squamous = on_side & (nx.abs() > 0.55) & between
        lines[f"squamosal_{side}"] = ((nz - squamosal_z) * c, squamous, p.suture_mm / 2)
    openings = {
        name: canvas.band(distance, half_width) * where
        for name, (distance, where, half_width) in lines.items()
        if name not in p.fused and half_width > 0
    }
    for name, diagonal, centre_y in (
        ("anterior_fontanelle", p.anterior_fontanelle_mm, bregma_y),
        ("posterior_fontanelle", p.posterior_fontanelle_mm, lambda_y),
    ):
        if diagonal > 0:  # a diamond on the vault top, its long axis along the sagittal suture
            diamond = (nx * a).abs() / (0.4 * diagonal) + ((ny - centre_y) * b).abs() / (0.5 * diagonal)
            openings[name] = canvas.inside((diamond - 1) * 0.4 * diagonal) * (nz > 0.3)
    return openings


def render(parameters: PhantomParameters, geometry: BiplanarGeometry | None = None) -> Phantom:
    """Paint the phantom of ``parameters`` on the CT grid of ``geometry`` (default grid if None)."""
    geometry = geometry or BiplanarGeometry()
    p = parameters
    a, b, c = p.skull_semi_axes
    mandible_z, chin = -0.95 * c, -0.95 * c - 12  # mm, the jaw and the bottom of the chin's soft tissue
    # 1. pose: centre the head from vertex to chin on the grid, then rotate and shift it
    rotation = rotation_matrix(p.rotation_deg)
    translation = np.array(p.shift_mm) + rotation @ np.array([0.0, -0.1 * b, -(c + p.scalp_mm + chin) / 2])
    canvas = _Canvas(geometry, rotation, translation)
    x, y, z = canvas.full

    # 2. soft tissue: scalp over the vault, face, neck
    scalp = _ellipsoid_distance(x, y, z, (a + p.scalp_mm, b + p.scalp_mm, c + p.scalp_mm))
    face = _ellipsoid_distance(x, y - 0.55 * b, z + 0.65 * c, (0.6 * a, 0.45 * b, 0.45 * c))
    neck_radius = torch.sqrt((x / (0.42 * a)) ** 2 + ((y + 0.1 * b) / (0.45 * b)) ** 2)
    neck = torch.maximum((neck_radius - 1) * 0.42 * a, z + 0.4 * c)
    canvas.paint(canvas.inside(torch.minimum(torch.minimum(scalp, face), neck)), 40.0, "soft_tissue")

    # 3. vault: a shell between the outer surface and the surface ``thickness`` inside it
    vx, vy, vz = _vault_coordinates(p, x, y, z)
    outer = _ellipsoid_distance(vx, vy, vz, (a, b, c))
    direction = (
        vx / a * p.thickness_direction[0] + vy / b * p.thickness_direction[1] + vz / c * p.thickness_direction[2]
    ) / torch.sqrt((vx / a) ** 2 + (vy / b) ** 2 + (vz / c) ** 2).clamp(min=1e-6)
    thickness = p.vault_mm * (1 + 0.2 * direction + 0.3 * (-vy / b).clamp(min=0))  # thicker toward the occiput
    if "sagittal" in p.fused:  # the fused suture leaves a ridge
        thickness = thickness + 1.5 * torch.exp(-((vx / 6) ** 2)) * (vz > 0)
    lateral = (x / a) ** 2  # 0 in the midline, 1 at the side walls
    anterior_fossa = -0.06 * c + 0.12 * c * lateral  # orbital roofs bulge up beside the cribriform plate
    middle_fossa = -0.33 * c - 0.1 * c * lateral  # deepest under the temporal lobes
    posterior_fossa = -0.5 * c - 0.05 * c * lateral
    floor = (
        posterior_fossa
        + (middle_fossa - posterior_fossa) * torch.sigmoid((y + 0.15 * b) / 4)
        + (anterior_fossa - middle_fossa) * torch.sigmoid((y - 0.2 * b) / 4)
    )  # mm, the cranial cavity's floor
    base_mm = 2.5 + 0.05 * p.age_months  # skull base plate thickness
    above_base = (0.5 + (z - floor + base_mm) / canvas.spacing).clamp(0, 1)
    openings = _openings(p, canvas, vx, vy, vz)
    gaps = torch.stack(list(openings.values())).amax(0) if openings else torch.zeros_like(x)
    shell = (canvas.inside(outer) - canvas.inside(outer + thickness)) * above_base
    diploe_weight = min(1.0, max(0.0, (p.vault_mm - 2) / 1.5))  # diploe shows once the vault is thick enough
    diploe = canvas.inside(outer + 0.3 * thickness) - canvas.inside(outer + 0.7 * thickness)
    canvas.paint(shell * (1 - gaps), p.bone_hu * (1 - 0.45 * diploe_weight * diploe), "bone")
    opening_map = torch.zeros(geometry.vol_shape, dtype=torch.uint8)
    for name, fraction in openings.items():  # vault voxels an opening empties by at least a quarter
        opening_map[(fraction >= 0.25) & (shell >= 0.5)] = OPENINGS.index(name) + 1

    # 4. skull base: the fossa floors, petrous ridges, foramen magnum
    plate = canvas.band(z - floor + base_mm / 2, base_mm / 2) * canvas.inside(outer)
    hole = canvas.inside(torch.sqrt(x**2 + (y + 0.3 * b) ** 2) - 0.13 * a) * (y < -0.1 * b)
    canvas.paint(plate * (1 - hole), 0.9 * p.bone_hu, "bone")
    for sign in (-1, 1):
        box, fraction = _ball(canvas, (sign * 0.33 * a, -0.12 * b, -0.38 * c - 2), (0.3 * a, 5, 6), sign * 35)
        if box is not None:
            canvas.paint(fraction, p.bone_hu + 500, "bone", box)

    # 5. inside the vault: CSF, brain, ventricles
    cavity = canvas.inside(outer + thickness) * (0.5 + (z - floor) / canvas.spacing).clamp(0, 1)
    canvas.paint(cavity, 8.0, "brain")
    canvas.paint(
        canvas.inside(outer + thickness + 2.0) * (0.5 + (z - floor - 2) / canvas.spacing).clamp(0, 1), 30.0, "brain"
    )
    s = p.ventricle_scale
    for sign in (-1, 1):
        box, fraction = _ball(canvas, (sign * 7, -0.05 * b, 0.15 * c), (4.5 * s, 0.3 * b * s, 0.1 * c * s))
        if box is not None:
            canvas.paint(fraction, 8.0, "brain", box)

    # 6. face: orbits, eyes, nasal cavity, maxilla, mandible, teeth, cervical spine
    ox = 0.3 * a * (1 - 0.15 * p.severity if p.variant == "metopic" else 1)  # trigonocephaly brings the orbits in
    orbit_r = 0.17 * c
    for sign, side in ((-1, "left"), (1, "right")):
        raised = 4 * p.severity if p.variant == "unicoronal" and p.side == side else 0  # harlequin orbit
        centre = (sign * ox, 0.72 * b, -0.3 * c + raised)
        box, rim = _ball(canvas, centre, (orbit_r + 2,) * 3)
        if box is None:
            continue
        _, socket = _ball(canvas, centre, (orbit_r,) * 3, box=box)
        front = (canvas.coordinates(box)[1] > centre[1] + 0.3 * orbit_r).float()
        canvas.paint((rim - socket) * (1 - front), 0.8 * p.bone_hu, "bone", box)
        canvas.paint(socket, -80.0, "soft_tissue", box)
        box, eye = _ball(canvas, (centre[0], centre[1] + 3, centre[2]), (0.6 * orbit_r,) * 3)
        if box is not None:
            canvas.paint(eye, 15.0, "soft_tissue", box)
    for centre, semi, hu, label in (
        ((0, 0.68 * b, -0.6 * c), (0.38 * a, 0.28 * b, 0.18 * c), 0.7 * p.bone_hu, "bone"),  # maxilla
        ((0, 0.8 * b, -0.42 * c), (0.1 * a, 0.22 * b, 0.2 * c), AIR_HU, "background"),  # nasal cavity
    ):
        box, fraction = _ball(canvas, centre, semi)
        if box is not None:
            canvas.paint(fraction, hu, label, box)
    _paint_mandible(canvas, p, mandible_z)
    for k in range(3):  # C1-C3 vertebral bodies
        box, fraction = _ball(canvas, (0, -0.15 * b, -0.55 * c - 10 - 13 * k), (9, 7, 5))
        if box is not None:
            canvas.paint(fraction, 0.6 * p.bone_hu, "bone", box)
    return Phantom(canvas.hu, canvas.labels, opening_map, p, _pose(rotation, translation))


def _paint_mandible(canvas: _Canvas, p: PhantomParameters, jaw_z: float) -> None:
    """A U-shaped body with two rami up to the skull base, and tooth buds in both jaws."""
    a, b, c = p.skull_semi_axes
    arch_x, arch_y, arch_centre_y = 0.42 * a, 0.4 * b, 0.35 * b  # the arch: half an ellipse, mm
    box = canvas.box((0, arch_centre_y + arch_y / 2, jaw_z), max(arch_x, arch_y) + 10)
    if box is not None:
        x, y, z = canvas.coordinates(box)
        ring = (torch.sqrt((x / arch_x) ** 2 + ((y - arch_centre_y) / arch_y) ** 2) - 1) * (arch_x + arch_y) / 2
        body = torch.sqrt((ring / 3.5) ** 2 + ((z - jaw_z) / 8) ** 2) - 1  # an elliptic tube, 7 x 16 mm
        canvas.paint(canvas.inside(body * 3.5) * (y > arch_centre_y).float(), 0.85 * p.bone_hu, "bone", box)
    joint_z = -0.45 * c
    for sign in (-1, 1):
        box, ramus = _ball(canvas, (sign * arch_x, arch_centre_y, (jaw_z + joint_z) / 2), (3, 8, (joint_z - jaw_z) / 2))
        if box is not None:
            canvas.paint(ramus, 0.85 * p.bone_hu, "bone", box)
    if not p.tooth_buds:
        return
    mineral = 1200 + 40 * p.age_months  # HU, enamel caps mineralise with age
    for jaw_centre_z, scale in ((jaw_z + 5, 0.9), (-0.6 * c - 0.1 * c, 0.85)):
        for angle in np.linspace(15, 165, 8):
            t = math.radians(angle)
            centre = (scale * arch_x * math.cos(t), arch_centre_y + scale * arch_y * math.sin(t), jaw_centre_z)
            box, bud = _ball(canvas, centre, (2.5, 2.5, 3))
            if box is not None:
                canvas.paint(bud, mineral, "bone", box)


def make_phantom(seed: int, geometry: BiplanarGeometry | None = None, **parameters: Any) -> Phantom:
    """Draw and render one phantom: ``render(sample_parameters(seed, **parameters), geometry)``."""
    return render(sample_parameters(seed, **parameters), geometry)


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` in a set drawn with ``seed``: independent streams for every pair."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


MONTAGE_ROWS = 16  # cases shown in the CLI's montage


def generate(
    out: str,
    n: int = 8,
    seed: int = 0,
    age: float | None = None,
    variant: str | None = None,
    size: int = 128,
    spacing: float = 1.5,
    pose: bool = True,
    overwrite: bool = False,
) -> None:
    """Write ``n`` phantoms and a montage to look at.

    Files in ``out``: ``phantom_NNN.nii.gz`` (HU, int16, RAS affine of the grid),
    ``phantom_NNN_labels.nii.gz`` (uint8, :data:`LABELS`), ``phantoms.json`` (the parameters of each
    case and its generation time) and ``montage.png`` (one row per case for the first
    :data:`MONTAGE_ROWS`: axial, coronal and sagittal slices, then the frontal and lateral X-rays
    simulated with the default detector). An interrupted run removes what it wrote.

    Args:
        out: output folder.
        n: number of cases. Defaults to 8.
        seed: seed of the set; case i uses ``case_seed(seed, i)``. Defaults to 0.
        age: age of every case, months. Defaults to drawn per case.
        variant: variant of every case (see :data:`VARIANTS`). Defaults to drawn per case.
        size: grid voxels per axis, and detector pixels per side. Defaults to 128.
        spacing: voxel size, mm. Defaults to 1.5.
        pose: random head pose. Defaults to True.
        overwrite: replace existing files. Defaults to False (then nothing is written if any exists).
    """
    from custom.data.simulate import SimulateBiplanarXRay  # the CLI's pictures and files only: a light import
    from custom.data.writers import write_ct_nifti
    from custom.preview import montage

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    folder = Path(out)
    names = [f"phantom_{i:03d}" for i in range(n)]
    paths = [folder / f"{name}{suffix}" for name in names for suffix in (".nii.gz", "_labels.nii.gz")]
    refuse_existing([*paths, folder / "phantoms.json", folder / "montage.png"], overwrite)
    geometry = BiplanarGeometry(vol_shape=(size,) * 3, vol_spacing=spacing, det_shape=(size, size))
    simulate = SimulateBiplanarXRay(geometry)
    records, rows, written = [], [], []
    try:
        for i, name in enumerate(names):
            tick = time.perf_counter()
            phantom = make_phantom(case_seed(seed, i), geometry, age_months=age, variant=variant, pose=pose)
            seconds = time.perf_counter() - tick
            written.append(write_ct_nifti(folder / f"{name}.nii.gz", phantom.hu, geometry, overwrite))
            labels = nib.Nifti1Image(phantom.labels.numpy(), geometry.affine)
            save = lambda tmp, image=labels: nib.save(image, tmp)  # noqa: E731
            written.append(atomic_write(folder / f"{name}_labels.nii.gz", save, overwrite))
            p = phantom.parameters
            side = f" {p.side}" if p.side else ""
            title = f"{name}: {p.age_months:.1f} months, {p.variant}{side}, seed {p.seed}"
            if i < MONTAGE_ROWS:
                rows.append(montage(phantom.hu, simulate(phantom.hu), title, height=160))
            records.append({"name": name, "seconds": round(seconds, 3), **p.to_dict()})
            print(f"{title}  ({seconds:.2f} s)")
        picture = Image.new("L", (max(r.width for r in rows), sum(r.height for r in rows)))
        for k, row in enumerate(rows):
            picture.paste(row, (0, sum(r.height for r in rows[:k])))
        written.append(atomic_write(folder / "montage.png", lambda tmp: picture.save(tmp, format="PNG"), overwrite))
        text = json.dumps({"geometry": geometry.to_dict(), "cases": records}, indent=2) + "\n"
        written.append(atomic_write(folder / "phantoms.json", lambda tmp: tmp.write_text(text), overwrite))
    except BaseException:  # all or nothing: an interrupted set leaves no partial files behind
        for path in written:
            path.unlink(missing_ok=True)
        raise
    print(f"wrote {n} phantoms, phantoms.json and montage.png to {folder}")


def main() -> None:
    try:
        fire.Fire(generate)
    except (ValueError, FileExistsError) as error:  # the user's input: a message, not a traceback
        sys.exit(f"error: {error}")


__all__ = [
    "BONE_FRACTION",
    "LABELS",
    "OPENINGS",
    "SIDES",
    "SUTURES",
    "VARIANTS",
    "Phantom",
    "PhantomParameters",
    "case_seed",
    "generate",
    "head_circumference",
    "make_phantom",
    "render",
    "sample_parameters",
]

if __name__ == "__main__":
    main()
