"""One case's calvarium: the measured vault grown to the case's age, sized, shaped, and cut by its sutures.

The growth model's surface of the case's variant is interpolated between the two nearest ages of the
atlas, modulated by smooth random modes, and scaled so that its breadth / length is the case's cephalic
index (normal cases; a synostosis keeps its own shape) and the perimeter of its widest section plus the
scalp is the case's head circumference. Bone thickness comes per bone from the normative table (the
temporal squama, absent from the table, takes the parietal value: an assumption). Open sutures are bands
of the suture width centred on the borders between bones; the fontanelles are diamonds of the drawn
area at the bregma and the lambda, where the bones meet.

Distances: a voxel at head-frame point ``h`` lies at model offset ``m = h / s`` (``s`` the case's
scale per axis) from the map centre, in direction ``d``; its signed distance to the outer surface is
the radial gap ``|s * d| (|m| - r(d))`` divided by ``sqrt(1 + g^2)``, ``g`` the surface's slope
against the radial direction, which makes it the normal distance to first order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from custom.phantom.atlas import VAULT_TYPES, Atlas, direction_grid, fill_map, map_coordinates, sample_map, unit_vectors
from custom.phantom.labels import BONE_LABELS, BONES, FONTANELLE_BONES, OPENINGS, SUTURES, suture_between
from custom.phantom.norms import ANTERIOR_ASPECT
from custom.phantom.parameters import PhantomParameters

THICKNESS_COLUMN = {  # normative thickness column of each bone
    "frontal": "thickness_frontal",
    "parietal": "thickness_parietal",
    "occipital": "thickness_occipital",
    "temporal": "thickness_parietal",  # assumption: the table has no temporal squama
}


class VoxelPlace(NamedTuple):
    """Per voxel (each the grid's shape): signed distance (mm) to the outer surface (negative inside),
    the same to the vault carried on below its rim (:attr:`Vault.extended`), map coordinates, how much of
    the voxel's direction the calvarium covers (0..1) and the nearest bone-map value."""

    distance: torch.Tensor
    extended_distance: torch.Tensor
    where: torch.Tensor
    weight: torch.Tensor
    bone: torch.Tensor


@dataclass
class Vault:
    """The case's calvarium in the head frame (origin at the map centre).

    Attributes:
        radius: (1, H, W) outer surface radius of the model, mm, with the case's shape modes.
        slope: (1, H, W) the surface's slope ``g`` against the radial direction.
        extended: (1, H, W) the radius with the vault's rim carried on across the base opening instead
            of the closure: where a vault would continue (used to trim the adult skull below the rim).
        bones: (H2, W2) bone-map values (1..7, 0 in the base opening).
        scale: (3,) head-frame mm per model mm along x, y, z.
        thickness: (8,) thickness (mm) of bone-map values 0..7 (0 for the opening).
        openings: (1 + len(OPENINGS), H2, W2) per-cell distance (mm along the surface) to each open
            suture or fontanelle edge, negative inside a fontanelle; +inf where closed.
        suture_half_width: (len(OPENINGS),) half width (mm) of each opening's band (0 for fontanelles,
            which are regions).
        points: (H2, W2, 3) head-frame outer surface point of every cell of ``bones``, mm.
    """

    radius: torch.Tensor
    slope: torch.Tensor
    extended: torch.Tensor
    bones: torch.Tensor
    scale: torch.Tensor
    thickness: torch.Tensor
    openings: torch.Tensor
    suture_half_width: torch.Tensor
    points: torch.Tensor

    def top(self) -> float:
        """Height (head-frame z, mm) of the vertex."""
        return float(self.points[self.bones > 0][:, 2].max())

    def locate(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> VoxelPlace:
        """Where each voxel (head-frame x, y, z in mm) lies against the calvarium (see :class:`VoxelPlace`)."""
        model = torch.stack((x / self.scale[0], y / self.scale[1], z / self.scale[2]), -1)
        rho = model.norm(dim=-1).clamp(min=1e-6)
        direction = model / rho[..., None]
        where = map_coordinates(direction)
        r, g, extended = sample_map(torch.cat((self.radius, self.slope, self.extended)), where)
        stretch = (direction * self.scale).norm(dim=-1)
        return VoxelPlace(
            distance=stretch * (rho - r) / torch.sqrt(1 + g * g),
            extended_distance=stretch * (rho - extended),
            where=where,
            weight=sample_map((self.bones > 0).float()[None], where)[0],
            bone=sample_map(self.bones.float()[None], where, mode="nearest")[0].long(),
        )


def _interpolate_age(maps: np.ndarray, ages: np.ndarray, age: float) -> torch.Tensor:
    """(H, W) map at ``age`` from (A, H, W) maps at ``ages``: linear between the two nearest."""
    k = int(np.clip(np.searchsorted(ages, age) - 1, 0, len(ages) - 2))
    t = float(np.clip((age - ages[k]) / (ages[k + 1] - ages[k]), 0, 1))
    return torch.as_tensor((1 - t) * maps[k] + t * maps[k + 1], dtype=torch.float32)


def _shape_modes(unit: torch.Tensor, coefficients) -> torch.Tensor:
    """1 + sum c_k q_k(d): q the quadratic direction terms xy, xz, yz, x^2 - y^2, 2z^2 - x^2 - y^2, x."""
    x, y, z = unit.unbind(-1)
    modes = (x * y, x * z, y * z, x * x - y * y, 2 * z * z - x * x - y * y, x)
    return 1 + sum(c * q for c, q in zip(coefficients, modes))


def _slope(radius: torch.Tensor) -> torch.Tensor:
    """|grad r| / r over the direction grid of a (H, W) radius map."""
    rows, cols = radius.shape
    theta, _ = direction_grid(rows, cols)
    d_theta = (torch.roll(radius, -1, 0) - torch.roll(radius, 1, 0)) / (2 * math.pi / rows)
    d_theta[0], d_theta[-1] = 0, 0
    d_phi = (torch.roll(radius, -1, 1) - torch.roll(radius, 1, 1)) / (4 * math.pi / cols)
    d_phi = d_phi / torch.sin(theta).float()[:, None].clamp(min=0.05)
    return torch.sqrt(d_theta**2 + d_phi**2) / radius.clamp(min=1.0)


def _turn(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """z of the cross product (b - a) x (c - a): positive for a counter-clockwise turn."""
    return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))


def convex_perimeter(points: np.ndarray) -> float:
    """Perimeter of the convex hull of (N, 2) points (Andrew's monotone chain): a tape's length round them."""
    points = np.unique(np.asarray(points, dtype=float), axis=0)
    if len(points) < 3:
        return 0.0

    def chain(sequence):
        kept = []
        for q in sequence:
            while len(kept) >= 2 and _turn(kept[-2], kept[-1], q) <= 0:
                kept.pop()
            kept.append(q)
        return kept[:-1]

    ordered = points[np.lexsort((points[:, 1], points[:, 0]))]
    hull = np.array(chain(ordered) + chain(ordered[::-1]))
    return float(np.linalg.norm(hull - np.roll(hull, -1, 0), axis=1).sum())


def _outline(points: torch.Tensor, covered: torch.Tensor) -> tuple[float, float, float, tuple[float, float, float]]:
    """Breadth, length, perimeter (mm) and centre of the vault's widest axial section from surface points.

    The widest section is the 2 mm slab (in z) with the largest breadth x length; its perimeter is that
    of the slab's convex outline; its centre is the middle of its breadth and length, at the slab's level.
    """
    p = points[covered]
    best, centre, perimeter = (0.0, 0.0), (0.0, 0.0, 0.0), 0.0
    for level in torch.arange(float(p[:, 2].min()), float(p[:, 2].max()), 2.0).tolist():
        section = p[(p[:, 2] >= level) & (p[:, 2] < level + 2)]
        if len(section) < 8:
            continue
        low, high = section.amin(0), section.amax(0)
        breadth, length = float(high[0] - low[0]), float(high[1] - low[1])
        if breadth * length > best[0] * best[1]:
            best, perimeter = (breadth, length), convex_perimeter(section[:, :2].numpy())
            centre = (float(high[0] + low[0]) / 2, float(high[1] + low[1]) / 2, level + 1)
    return best[0], best[1], perimeter, centre


def outline(vault: Vault) -> tuple[float, float, float, tuple[float, float, float]]:
    """Breadth, length, perimeter (mm) and head-frame centre of the case vault's widest section."""
    return _outline(vault.points, vault.bones > 0)


def _open_distances(vault_points: torch.Tensor, bones: torch.Tensor, p: PhantomParameters) -> torch.Tensor:
    """Distance (mm) of every cell's surface point to each opening (see :attr:`Vault.openings`)."""
    rows, cols = bones.shape
    flat, labels = vault_points.reshape(-1, 3), bones.reshape(-1).long()
    out = torch.full((len(OPENINGS), rows * cols), math.inf)
    # suture borders: pairs of neighbouring cells (down, right with wrap) of different bones
    index = torch.arange(rows * cols).reshape(rows, cols)
    pairs = torch.cat(
        [
            torch.stack((index[:-1].reshape(-1), index[1:].reshape(-1)), 1),
            torch.stack((index.reshape(-1), torch.roll(index, -1, 1).reshape(-1)), 1),
        ]
    )
    a, b = labels[pairs[:, 0]], labels[pairs[:, 1]]
    border = (a > 0) & (b > 0) & (a != b)
    names = [suture_between(int(i), int(j)) for i, j in zip(a[border].tolist(), b[border].tolist())]
    middle = (flat[pairs[border, 0]] + flat[pairs[border, 1]]) / 2
    for k, name in enumerate(SUTURES):
        chosen = [i for i, n in enumerate(names) if n == name]
        if name in p.fused or not chosen:
            continue
        out[k] = torch.cdist(flat, middle[chosen]).amin(1)
    # fontanelles: diamonds on the surface around the point where their bones meet
    sizes = {
        "anterior_fontanelle": (math.sqrt(p.anterior_fontanelle_mm2 / (2 * ANTERIOR_ASPECT)), ANTERIOR_ASPECT),
        "posterior_fontanelle": (p.posterior_fontanelle_mm / 2, 1.0),
    }
    for name, meeting in FONTANELLE_BONES.items():
        half_width, aspect = sizes[name]
        if half_width <= 0:
            continue
        present = torch.stack(
            [F.max_pool2d((bones == BONE_LABELS[bone]).float()[None], 5, 1, 2)[0] > 0 for bone in meeting]
        ).all(0)
        if not present.any():
            continue
        centre = vault_points[present].mean(0)
        delta = flat - centre
        diamond = delta[:, 0].abs() / half_width + delta[:, 1].abs() / (half_width * aspect)
        out[OPENINGS.index(name)] = torch.where(delta[:, 2] > -20, (diamond - 1) * half_width, math.inf)
    return out.reshape(len(OPENINGS), rows, cols)


def make_vault(atlas: Atlas, p: PhantomParameters) -> Vault:
    """The case's calvarium (see the module docstring)."""
    vault = atlas.vault
    kind = VAULT_TYPES.index(p.variant)
    age = float(np.clip(p.age_months, vault.ages_months[0], vault.ages_months[-1]))
    radius = _interpolate_age(vault.radius[kind], vault.ages_months, age)
    nearest = int(np.abs(vault.ages_months - age).argmin())
    bones = torch.as_tensor(vault.bones[kind, nearest].astype(np.int64))
    theta, phi = direction_grid(*radius.shape)
    radius = radius * _shape_modes(unit_vectors(theta[:, None], phi[None, :]).float(), p.shape_modes)
    fine_theta, fine_phi = direction_grid(*bones.shape)
    fine_unit = unit_vectors(fine_theta[:, None], fine_phi[None, :]).float()
    model_points = fine_unit * sample_map(radius[None], map_coordinates(fine_unit))[0][..., None]
    covered = bones > 0
    # scale: the cephalic index first (normal cases), then the head circumference over the scalp
    breadth, length, _, _ = _outline(model_points, covered)
    stretch = math.sqrt(p.cephalic_index / 100 / (breadth / length)) if p.cephalic_index else 1.0
    scale = torch.tensor([stretch, 1 / stretch, 1.0])
    _, _, perimeter, _ = _outline(model_points * scale, covered)
    size = (p.head_circumference_cm * 10 - 2 * math.pi * p.scalp_mm) / perimeter
    scale = scale * size
    points = model_points * scale
    thickness = torch.zeros(len(BONES) + 1)
    for i, bone in enumerate(BONES):
        column = THICKNESS_COLUMN[bone.split("_")[0]]
        thickness[i + 1] = atlas.norm(column, p.age_months, p.sex) * p.thickness_factor
    half = torch.tensor([p.metopic_mm / 2 if s == "metopic" else p.suture_mm / 2 for s in SUTURES] + [0.0, 0.0])
    coarse_covered = (
        sample_map(covered.float()[None], map_coordinates(unit_vectors(theta[:, None], phi[None, :]).float()))[0] > 0.5
    )
    extended = fill_map(radius.numpy(), coarse_covered.numpy(), ~coarse_covered.numpy(), steps=max(radius.shape))
    return Vault(
        radius=radius[None],
        slope=_slope(radius)[None],
        extended=torch.as_tensor(extended, dtype=torch.float32)[None],
        bones=bones,
        scale=scale,
        thickness=thickness,
        openings=_open_distances(points, bones, p),
        suture_half_width=half,
        points=points,
    )


def paint_vault(canvas, vault: Vault, p: PhantomParameters, place: VoxelPlace) -> torch.Tensor:
    """Paint the calvarium at the voxels' :class:`VoxelPlace`; return the openings map."""
    distance, where, weight, bone = place.distance, place.where, place.weight, place.bone
    shell = (canvas.inside(distance) - canvas.inside(distance + vault.thickness[bone])) * weight
    gaps = torch.zeros_like(shell)
    opening_map = torch.zeros(shell.shape, dtype=torch.uint8)
    near = sample_map(vault.openings.clamp(max=1e3), where)
    for k, name in enumerate(OPENINGS):
        if not torch.isfinite(vault.openings[k]).any():
            continue
        if name.endswith("fontanelle"):
            fraction = canvas.inside(near[k])
        else:
            fraction = canvas.band(near[k], float(vault.suture_half_width[k]))
        gaps = torch.maximum(gaps, fraction)
        opening_map[(fraction >= 0.25) & (shell >= 0.5)] = k + 1
    canvas.paint(shell * (1 - gaps), p.vault_hu, "bone", bone=bone.to(torch.uint8))
    return opening_map


__all__ = ["Vault", "VoxelPlace", "convex_perimeter", "make_vault", "outline", "paint_vault"]
