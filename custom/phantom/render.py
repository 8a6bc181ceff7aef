"""Render one phantom: pose the head on the CT grid and paint soft tissue, brain, skull base, face and vault."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from custom.imaging.geometry import BiplanarGeometry, rotation_matrix
from custom.phantom import norms
from custom.phantom.atlas import Atlas, load_atlas
from custom.phantom.base_face import SkullMapping, face_layout, paint_face
from custom.phantom.calvarium import make_vault, outline, paint_vault
from custom.phantom.canvas import Canvas, pose_matrix
from custom.phantom.parameters import PhantomParameters, sample_parameters
from custom.phantom.soft_tissue import dilate, paint_cavity, paint_head

SKULL_BASE_DEPTH_MM = 4.0  # template bone this far under the inner table is kept (orbital roofs, clinoids)
FLOOR_MM = 2.5  # assumption: thickness of the drawn posterior fossa floor where the template ends


@dataclass
class Phantom:
    """One rendered case.

    Attributes:
        hu: (X, Y, Z) float32 CT numbers, HU, RAS on the geometry's grid.
        labels: (X, Y, Z) uint8 tissue labels, values of :data:`~custom.phantom.labels.LABELS`.
        bones: (X, Y, Z) uint8 bone labels, values of :data:`~custom.phantom.labels.BONE_LABELS`.
        openings: (X, Y, Z) uint8 open sutures and fontanelles: vault voxels that an opening empties by
            at least a quarter (a 1 mm suture on a 1.5 mm grid is partial volume) are ``i + 1`` for
            ``OPENINGS[i]``, all others 0.
        parameters: the :class:`PhantomParameters` it was rendered from.
        head_to_world: (4, 4) pose of the head frame (x right, y anterior, z superior, mm) in the world
            (RAS, mm).
    """

    hu: torch.Tensor
    labels: torch.Tensor
    bones: torch.Tensor
    openings: torch.Tensor
    parameters: PhantomParameters
    head_to_world: np.ndarray


def render(
    parameters: PhantomParameters, geometry: BiplanarGeometry | None = None, atlas: Atlas | None = None
) -> Phantom:
    """Paint the phantom of ``parameters`` on the CT grid of ``geometry`` (default grid if None)."""
    geometry, atlas, p = geometry or BiplanarGeometry(), atlas or load_atlas(), parameters
    vault = make_vault(atlas, p)
    breadth, length, _, section = outline(vault)
    mapping = SkullMapping(atlas.skull, breadth, length, section)
    layout = face_layout(mapping, breadth / 2)
    # pose: centre the head from vertex to chin on the grid, then rotate and shift it
    top = float(vault.top()) + p.scalp_mm
    rotation = rotation_matrix(p.rotation_deg)
    centre = np.array([section[0], section[1], (top + layout["jaw_z"] - 8 * layout["scale"]) / 2])
    translation = np.array(p.shift_mm) - rotation @ centre
    canvas = Canvas(geometry, rotation, translation)
    x, y, z = canvas.full

    place = vault.locate(x, y, z)
    distance, weight, bone = place.distance, place.weight, place.bone
    thickness = vault.thickness[bone]
    # the adult skull only where the calvarium does not cover it, or deep under its inner table; and
    # above the orbits' centres only inside the inner table of the vault carried on below its rim (no
    # adult forehead or squama below the infant's rim)
    keep = (1 - weight) + weight * canvas.inside(distance + thickness + SKULL_BASE_DEPTH_MM)
    above_orbits = torch.sigmoid((z - layout["orbits"][0][2]) / canvas.spacing)
    keep = keep * (1 - (1 - canvas.inside(place.extended_distance + thickness + 1)) * above_orbits)
    skull = mapping.fraction(x, y, z) * keep
    paint_head(canvas, distance, skull, layout, p.scalp_mm, x, y, z)
    inner = distance + thickness * weight + FLOOR_MM * (1 - weight)
    paint_cavity(canvas, inner, p, layout["scale"], float(section[1]))
    floor = (canvas.inside(distance) - canvas.inside(inner)) * (1 - weight)
    floor = floor * (1 - dilate(skull, 3.0, canvas.spacing).clamp(0, 1))
    sx, sy, _ = layout["spine"]
    foramen = canvas.inside(torch.sqrt((x - sx) ** 2 + (y - sy) ** 2) - 7 * layout["scale"])
    base_hu = norms.BASE_HU_FACTOR * p.vault_hu
    canvas.paint(floor * (1 - foramen), base_hu, "bone")
    canvas.paint(skull, base_hu, "bone")
    paint_face(canvas, layout, p.vault_hu, p.age_months, p.tooth_buds)
    openings = paint_vault(canvas, vault, p, place)
    return Phantom(canvas.hu, canvas.labels, canvas.bones, openings, p, pose_matrix(rotation, translation))


def make_phantom(
    seed: int, geometry: BiplanarGeometry | None = None, anatomy_dir: str | None = None, **parameters
) -> Phantom:
    """Draw and render one phantom from the committed atlas, or from the source data in ``anatomy_dir``."""
    atlas = load_atlas(anatomy_dir)
    return render(sample_parameters(seed, atlas=atlas, **parameters), geometry, atlas)


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` in a set drawn with ``seed``: independent streams for every pair."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


__all__ = ["Phantom", "case_seed", "make_phantom", "render"]
