"""The measured anatomy the phantoms are built from: infant calvaria as direction maps, an adult skull base.

Sources (both MIT licensed; the data files are not part of the bundle, see the model card):

- the average newborn calvarium and its data-driven growth to 24 months, normal and with single-suture
  synostosis: Liu et al., "Data-driven cranial suture growth model enables predicting phenotypes of
  craniosynostosis", Scientific Reports 13 (2023), data of github.com/cuMIP/cranialSutureGrowth
  (``vault_growth.npz``: external surfaces at 8 ages on an 84 x 84 spherical map, with the bone of
  every map point; ``averageBoneSegmentationSphericalImage.mha``: the bone map at 500 x 500);
- the normative tables of calvarial thickness, cephalic index and intracranial volume by age and sex:
  github.com/cuMIP/normativeCranialGrowth ("Data-driven normative reference of pediatric cranial
  bone development");
- the skull base and orbits: ``Skull.nrrd``, a real adult skull mask, github.com/CIBC-Internal/Seg3DData
  (Brain_DataSet).

A :class:`VaultAtlas` holds each calvarium as *direction maps* around its centre: for every direction
(``theta`` from the vertex, ``phi`` from the right, counter-clockwise seen from above) the distance of
the outer surface (mm) and the bone there (:data:`~custom.phantom.labels.BONES` + 1, 0 where the map has
no calvarium: the opening of the cranial base). Inside that opening the radius continues as the
ellipsoid that fits the calvarium best, scaled by :data:`FLOOR_SCALE`, which closes the cranial cavity.
A :class:`SkullTemplate` is the adult skull's bone fraction on a regular grid, in the head frame
(x right, y anterior, z superior, mm) with the origin at the centre of the vault's widest axial section.

Two ways to get them:

- :func:`load_atlas` with no folder reads ``anatomy.npz`` beside this module: direction maps of 64 x 128
  radii and 128 x 256 bones, the skull at 2 mm, and the normative tables at the atlas ages. The project
  derived that file with ``python -m custom.cli.phantoms fit --anatomy_dir ../shared/data/anatomy`` and it is
  all a fresh clone needs;
- :func:`load_atlas` with ``anatomy_dir`` (the folder layout of the source repositories, see the model
  card) builds the maps at 256 x 512 from the 500 x 500 bone map and reads the skull at its own 0.9 mm.
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

VAULT_TYPES = ("normal", "metopic", "sagittal", "left_coronal", "right_coronal")  # the growth model's cases
FLOOR_SCALE = 0.45  # closure of the cranial cavity below the vault; the realism report checks the ICV it gives
PACKAGED = Path(__file__).with_name("anatomy.npz")
COMPACT_SHAPE = {"radius": (64, 128), "bones": (128, 256)}  # direction maps committed with the bundle
FULL_SHAPE = {"radius": (256, 512), "bones": (256, 512)}  # direction maps built from the source data
TEMPLATE_SPACING_MM = 2.0  # the committed skull template; the source data keeps its own spacing
NORM_COLUMNS = {  # normative table file -> {quantity: (male column, female column)}
    "BoneThickness.csv": {
        "thickness_frontal": ("Frontal bone male (mm)", "Frontal bone female (mm)"),
        "thickness_parietal": ("Parietal bone male (mm)", "Parietal bone female (mm)"),
        "thickness_occipital": ("Occipital bone male (mm)", "Occipital bone female (mm)"),
    },
    "CI.csv": {"cephalic_index": ("CI male", "CI female")},
    "ICV.csv": {"icv_ml": ("ICV male (mL)", "ICV female (mL)")},
}


@dataclass(frozen=True)
class VaultAtlas:
    """Calvaria of every growth-model case and age as direction maps (see the module docstring).

    Attributes:
        ages_months: (A,) ages of the maps.
        radius: (T, A, H, W) float32 outer surface distance from ``centre``, mm, for :data:`VAULT_TYPES`.
        bones: (T, A, H2, W2) uint8, 1.. for each bone of :data:`~custom.phantom.labels.BONES`, 0 outside.
        centre: (T, A, 3) float32 where the directions start, in the growth model's frame (mm).
    """

    ages_months: np.ndarray
    radius: np.ndarray
    bones: np.ndarray
    centre: np.ndarray


@dataclass(frozen=True)
class SkullTemplate:
    """The adult skull as a bone fraction in the head frame.

    Attributes:
        fraction: (X, Y, Z) float32 bone fraction 0..1, axes x right, y anterior, z superior.
        origin: (3,) head-frame position of voxel (0, 0, 0), mm.
        spacing: (3,) voxel size, mm.
        width_mm, length_mm: breadth and length of the vault at its widest axial section.
    """

    fraction: np.ndarray
    origin: np.ndarray
    spacing: np.ndarray
    width_mm: float
    length_mm: float


@dataclass(frozen=True)
class Atlas:
    """Everything measured the generator uses: calvaria, the skull template and the normative tables.

    ``norms`` maps a quantity (``cephalic_index``, ``icv_ml``, ``thickness_frontal|parietal|occipital``)
    to a (2, A) array of male and female values at ``norm_ages_months`` (A,).
    """

    vault: VaultAtlas
    skull: SkullTemplate
    norm_ages_months: np.ndarray
    norms: dict[str, np.ndarray]
    source: str  # "packaged" or the anatomy folder

    def norm(self, quantity: str, age_months: float, sex: str) -> float:
        """A normative table value at an age (months, linear interpolation) for ``sex`` ``male|female``."""
        row = self.norms[quantity][0 if sex == "male" else 1]
        return float(np.interp(age_months, self.norm_ages_months, row))


# ---------------------------------------------------------------- direction maps


def direction_grid(rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-centre angles of a direction map: theta (rows,) in (0, pi) from +z, phi (cols,) in (-pi, pi)."""
    theta = (torch.arange(rows, dtype=torch.float64) + 0.5) * math.pi / rows
    phi = (torch.arange(cols, dtype=torch.float64) + 0.5) * 2 * math.pi / cols - math.pi
    return theta, phi


def unit_vectors(theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit vectors of broadcast angles (radians)."""
    s = torch.sin(theta)
    return torch.stack(torch.broadcast_tensors(s * torch.cos(phi), s * torch.sin(phi), torch.cos(theta)), -1)


def map_coordinates(vectors: torch.Tensor) -> torch.Tensor:
    """(..., 2) ``grid_sample`` coordinates (phi, theta scaled to [-1, 1]) of (..., 3) direction vectors."""
    rho = vectors.norm(dim=-1).clamp(min=1e-9)
    theta = torch.arccos((vectors[..., 2] / rho).clamp(-1, 1))
    phi = torch.atan2(vectors[..., 1], vectors[..., 0])
    return torch.stack((phi / math.pi, theta / math.pi * 2 - 1), -1)


def sample_map(image: torch.Tensor, coordinates: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample a (C, H, W) direction map at (..., 2) coordinates of :func:`map_coordinates` -> (C, ...).

    The map wraps around in phi (one column is copied to each side before sampling).
    """
    height, width = image.shape[-2:]
    padded = torch.cat((image[..., -1:], image, image[..., :1]), -1)
    grid = coordinates.reshape(1, 1, -1, 2).to(padded.dtype).clone()
    grid[..., 0] = grid[..., 0] * width / (width + 2)  # the padded map is two columns wider
    out = F.grid_sample(padded[None], grid, mode=mode, padding_mode="border", align_corners=False)
    return out[0, :, 0].reshape(image.shape[0], *coordinates.shape[:-1])


def _box3(image: np.ndarray) -> np.ndarray:
    """3 x 3 neighbourhood sum of a (H, W) map, wrapping in columns, edge-padded in rows."""
    padded = np.pad(np.pad(image, ((0, 0), (1, 1)), mode="wrap"), ((1, 1), (0, 0)), mode="edge")
    h, w = image.shape
    return sum(padded[i : i + h, j : j + w] for i in range(3) for j in range(3))


def fill_map(values: np.ndarray, known: np.ndarray, region: np.ndarray, steps: int = 50) -> np.ndarray:
    """Fill ``region`` cells without a known value by repeated 3 x 3 averaging of their known neighbours."""
    values, known = np.where(known, values, 0.0), known.astype(float)
    for _ in range(steps):
        missing = region & (known == 0)
        if not missing.any():
            break
        total, count = _box3(values * known), _box3(known)
        grow = missing & (count > 0)
        values[grow], known[grow] = total[grow] / count[grow], 1.0
    return values


def _opening(hit: np.ndarray) -> np.ndarray:
    """Cells of a direction map that the calvarium does not cover: the cells without a ``hit`` connected
    to the bottom row (the cranial base opening), by flood fill; empty cells enclosed by hits are holes
    of the sampling, not opening."""
    reached = np.zeros_like(hit)
    reached[-1] = ~hit[-1]
    while True:
        grown = (_box3(reached.astype(float)) > 0) & ~hit
        if (grown == reached).all():
            return reached
        reached = grown


def surface_to_maps(
    points: np.ndarray,
    bones: np.ndarray,
    centre: np.ndarray,
    radius_shape: tuple[int, int],
    bone_shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Direction maps of one calvarium from its surface points.

    Args:
        points: (N, 3) outer surface points, mm, dense enough for every map cell (finer than the map).
        bones: (N,) bone of each point, 1..7.
        centre: (3,) where the directions start, mm.
        radius_shape, bone_shape: (rows, cols) of the two maps.

    Returns:
        radius (rows, cols) float32 mm, closed below the vault by the fitted ellipsoid times
        :data:`FLOOR_SCALE`; bones (rows, cols) uint8, 0 in the cranial base opening.
    """
    offset = torch.as_tensor(points - centre, dtype=torch.float64)
    rho = offset.norm(dim=-1).numpy()
    coordinates = map_coordinates(offset).numpy()
    results = []
    for (rows, cols), is_bone in ((radius_shape, False), (bone_shape, True)):
        col = np.clip(((coordinates[:, 0] + 1) / 2 * cols).astype(int), 0, cols - 1)
        row = np.clip(((coordinates[:, 1] + 1) / 2 * rows).astype(int), 0, rows - 1)
        count = np.zeros((rows, cols))
        np.add.at(count, (row, col), 1)
        hit = count > 0
        covered = ~_opening(_box3(hit.astype(float)) >= 6)  # stray hits below the rim do not count
        if is_bone:
            votes = np.zeros((8, rows, cols))
            np.add.at(votes, (bones.astype(int), row, col), 1)
            label = votes.argmax(0).astype(float)
            for _ in range(rows):  # empty covered cells take their neighbours' most frequent bone
                empty = covered & ~hit
                if not empty.any():
                    break
                near = np.stack([_box3((label == k) & hit) for k in range(8)])
                grow = empty & (near.sum(0) > 0)
                label[grow], hit = near.argmax(0)[grow], hit | grow
            results.append(np.where(covered, label, 0).astype(np.uint8))
            continue
        outermost = np.zeros((rows, cols))
        np.maximum.at(outermost, (row, col), rho)  # where the surface folds under, its outer sheet
        radius = fill_map(outermost, hit & covered, covered)
        covered &= radius > 0  # a covered cell no hit reaches counts as opening
        theta, phi = direction_grid(rows, cols)
        unit = unit_vectors(theta[:, None], phi[None, :]).numpy()
        # the closure: least-squares ellipsoid 1/r^2 = sum(u_i^2 / a_i^2) over the calvarium's cells
        inverse_square, *_ = np.linalg.lstsq(unit[covered] ** 2, 1 / radius[covered] ** 2, rcond=None)
        ellipsoid = 1 / np.sqrt(np.maximum(unit**2 @ inverse_square, 1e-12))
        # inside the opening the radius blends from the vault's rim into the scaled ellipsoid
        rim = fill_map(radius - ellipsoid, covered, ~covered, steps=max(rows, cols))
        weight = covered.astype(float)
        for _ in range(6):  # about six cells of smooth blend below the rim
            weight = np.maximum(weight, _box3(weight) / 9 * 0.8)
        closed = ellipsoid * (FLOOR_SCALE + (1 - FLOOR_SCALE) * weight) + rim * weight
        results.append(np.where(covered, radius, closed).astype(np.float32))
    return results[0], results[1]


# ---------------------------------------------------------------- building from the source data


def _read_image(path: Path, pixel: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Array (ITK order: z, y, x), origin and spacing (x, y, z) of an image file read with ITK."""
    import itk  # only the builder reads source images

    pixel_type = {"float": itk.F, "vector": itk.Vector[itk.F, 3], "uchar": itk.UC}[pixel]
    image = itk.imread(str(path), pixel_type)
    return itk.array_from_image(image), np.array(image.GetOrigin()), np.array(image.GetSpacing())


def _upsample_surface(shape: np.ndarray, factor: int) -> np.ndarray:
    """(S, S, 3) -> ((S - 1) * factor + 1, ..., 3): bilinear refinement of a spherical-map surface."""
    grid = torch.as_tensor(shape, dtype=torch.float64).permute(2, 0, 1)[None]
    size = (shape.shape[0] - 1) * factor + 1
    return F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True)[0].permute(1, 2, 0).numpy()


def build_vault_atlas(folder: Path, full: bool) -> VaultAtlas:
    """Direction maps of every growth-model case and age from ``cranial_suture_growth/``.

    ``full`` refines the 84 x 84 surfaces six-fold onto the 500 x 500 bone map (the maps of
    :data:`FULL_SHAPE`); otherwise three-fold with the 84 x 84 bones (:data:`COMPACT_SHAPE`).
    """
    growth = np.load(folder / "vault_growth.npz")
    mask, bones = growth["mask"] > 0, growth["bone_labels"]
    factor = 6 if full else 3
    size = (mask.shape[0] - 1) * factor + 1
    if full:
        fine, _, _ = _read_image(folder / "averageBoneSegmentationSphericalImage.mha", "float")
        fine_mask, _, _ = _read_image(folder / "SphericalMaskImage.mha", "float")
        fine_bones, fine_mask = fine[:size, :size].astype(int), fine_mask[:size, :size] > 0
    else:
        index = np.arange(size) // factor
        fine_bones, fine_mask = bones[index][:, index].astype(int), mask[index][:, index]
    keep = fine_mask & (fine_bones >= 1) & (fine_bones <= 7)
    shapes = FULL_SHAPE if full else COMPACT_SHAPE
    radius, labels, centres = [], [], []
    for kind in VAULT_TYPES:
        for surface in growth[f"shape_{kind}"]:
            points = _upsample_surface(surface, factor)[keep]
            centre = (points.max(0) + points.min(0)) / 2
            r, b = surface_to_maps(points, fine_bones[keep], centre, shapes["radius"], shapes["bones"])
            radius.append(r)
            labels.append(b)
            centres.append(centre)
    count = len(VAULT_TYPES)
    return VaultAtlas(
        ages_months=np.asarray(growth["ages_years"], dtype=np.float32) * 12,
        radius=np.stack(radius).reshape(count, -1, *shapes["radius"]),
        bones=np.stack(labels).reshape(count, -1, *shapes["bones"]),
        centre=np.stack(centres).astype(np.float32).reshape(count, -1, 3),
    )


def build_skull_template(path: Path, spacing_mm: float | None) -> SkullTemplate:
    """The adult skull mask in the head frame, as a bone fraction (resampled to ``spacing_mm`` if given).

    The mask is LPS; the head frame flips x and y. Its origin is put at the centre of the axial section
    where the vault is largest (breadth x length).
    """
    mask, origin, spacing = _read_image(path, "uchar")
    volume = torch.as_tensor(mask > 0, dtype=torch.float32).permute(2, 1, 0).flip(0, 1)  # x right, y anterior
    spacing = spacing.astype(np.float64)
    # head-frame coordinate of the first voxel after the flips: -(L of the last column), -(P of the last row)
    corner = np.array(
        [
            -(origin[0] + (volume.shape[0] - 1) * spacing[0]),
            -(origin[1] + (volume.shape[1] - 1) * spacing[1]),
            origin[2],
        ]
    )
    if spacing_mm is not None:  # average over the new voxels; the grid keeps its outer bounds
        old = np.array(volume.shape)
        size = np.maximum(2, np.round(old * spacing / spacing_mm)).astype(int)
        volume = F.interpolate(volume[None, None], size=size.tolist(), mode="area")[0, 0]
        new_spacing = spacing * old / size
        corner, spacing = corner - spacing / 2 + new_spacing / 2, new_spacing
    present = volume > 0.5
    extent = []
    for k in range(volume.shape[2]):
        xs, ys = torch.nonzero(present[:, :, k], as_tuple=True)
        if len(xs):
            width, length = (xs.max() - xs.min()).item() * spacing[0], (ys.max() - ys.min()).item() * spacing[1]
            extent.append(
                (width * length, k, width, length, (xs.max() + xs.min()).item() / 2, (ys.max() + ys.min()).item() / 2)
            )
    _, k, width, length, cx, cy = max(extent)
    centre = corner + np.array([cx, cy, k]) * spacing
    return SkullTemplate(
        fraction=volume.numpy().astype(np.float32),
        origin=(corner - centre).astype(np.float32),
        spacing=np.asarray(spacing, dtype=np.float32),
        width_mm=float(width),
        length_mm=float(length),
    )


def read_norms(folder: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Ages (months) and (2, A) male/female rows of each quantity of :data:`NORM_COLUMNS`."""
    ages, norms = None, {}
    for name, columns in NORM_COLUMNS.items():
        with open(folder / name, newline="") as handle:
            rows = list(csv.DictReader(handle))
        years = np.array([float(row["Age (years)"]) for row in rows])
        ages = years * 12 if ages is None else ages
        for quantity, (male, female) in columns.items():
            norms[quantity] = np.array([[float(row[male]) for row in rows], [float(row[female]) for row in rows]])
    return ages, norms


def build_atlas(anatomy_dir: str | Path, full: bool = True) -> Atlas:
    """Read the source data under ``anatomy_dir`` (``cranial_suture_growth/``, ``normative_cranial_growth/``,
    ``adult_skull/Skull.nrrd``); ``full`` keeps their resolution, otherwise the committed compact one."""
    folder = Path(anatomy_dir)
    missing = [
        str(folder / p)
        for p in ("cranial_suture_growth/vault_growth.npz", "normative_cranial_growth/CI.csv", "adult_skull/Skull.nrrd")
        if not (folder / p).is_file()
    ]
    if missing:
        raise FileNotFoundError(f"not an anatomy folder, missing {missing} (see the model card for the sources).")
    ages, norms = read_norms(folder / "normative_cranial_growth")
    return Atlas(
        vault=build_vault_atlas(folder / "cranial_suture_growth", full),
        skull=build_skull_template(folder / "adult_skull" / "Skull.nrrd", None if full else TEMPLATE_SPACING_MM),
        norm_ages_months=ages,
        norms=norms,
        source=str(folder),
    )


# ---------------------------------------------------------------- the committed file


def save_atlas(atlas: Atlas, path: str | Path) -> None:
    """Write the compact atlas: radii as uint16 (0.01 mm), bones uint8, the skull fraction uint8, tables
    up to 36 months."""
    young = atlas.norm_ages_months <= 36
    np.savez_compressed(
        path,
        ages_months=atlas.vault.ages_months,
        radius_centi_mm=np.round(atlas.vault.radius * 100).astype(np.uint16),
        bones=atlas.vault.bones,
        centre=atlas.vault.centre,
        skull_fraction=np.round(atlas.skull.fraction * 255).astype(np.uint8),
        skull_origin=atlas.skull.origin,
        skull_spacing=atlas.skull.spacing,
        skull_extent=np.array([atlas.skull.width_mm, atlas.skull.length_mm], dtype=np.float32),
        norm_ages_months=atlas.norm_ages_months[young],
        **{f"norm_{k}": v[:, young] for k, v in atlas.norms.items()},
    )


def _read_packaged(path: Path) -> Atlas:
    data = np.load(path)
    width, length = data["skull_extent"].tolist()
    return Atlas(
        vault=VaultAtlas(
            ages_months=data["ages_months"],
            radius=data["radius_centi_mm"].astype(np.float32) / 100,
            bones=data["bones"],
            centre=data["centre"],
        ),
        skull=SkullTemplate(
            fraction=data["skull_fraction"].astype(np.float32) / 255,
            origin=data["skull_origin"],
            spacing=data["skull_spacing"],
            width_mm=width,
            length_mm=length,
        ),
        norm_ages_months=data["norm_ages_months"],
        norms={k[5:]: data[k] for k in data.files if k.startswith("norm_") and k != "norm_ages_months"},
        source="packaged",
    )


@functools.lru_cache(maxsize=4)
def load_atlas(anatomy_dir: str | None = None) -> Atlas:
    """The atlas from ``anatomy_dir`` at full resolution, or the committed compact one if None (cached)."""
    if anatomy_dir is None:
        if not PACKAGED.is_file():
            raise FileNotFoundError(f"{PACKAGED} is missing; rebuild it with python -m custom.cli.phantoms fit.")
        return _read_packaged(PACKAGED)
    return build_atlas(anatomy_dir, full=True)


__all__ = [
    "FLOOR_SCALE",
    "VAULT_TYPES",
    "Atlas",
    "SkullTemplate",
    "VaultAtlas",
    "build_atlas",
    "direction_grid",
    "fill_map",
    "load_atlas",
    "map_coordinates",
    "sample_map",
    "save_atlas",
    "surface_to_maps",
    "unit_vectors",
]
