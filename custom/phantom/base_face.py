"""Skull base, orbits and face under the calvarium: the real adult skull scaled to the infant, and the jaws.

The adult skull (:class:`~custom.phantom.atlas.SkullTemplate`, ``Skull.nrrd``) is mapped onto the case by
an axis-wise scale that makes its vault's widest section the case's (breadth and length; height by
their mean), with the two sections' centres on each other. Of the scaled skull only what the measured
calvarium does not cover is kept: the cranial base, the orbits and the upper face, and anything deeper
than 4 mm under the inner table (the orbital roofs, sphenoid wings, clinoids and petrous ridges).
Infant orbits are large for the face, so they keep the cranial scale.

``Skull.nrrd`` ends below the orbits and has no mandible (nor has the dry-skull CT in ../shared), so the
lower face is drawn: a maxilla with the nasal cavity, a U-shaped mandible with its rami, tooth buds in
both jaws, and the C1-C3 vertebral bodies, sized in proportion to the cranium so that the face keeps
about 1/8 of the cranial volume (:data:`~custom.phantom.norms.FACE_TO_CRANIUM`; measured by the realism
report). Their sizes are assumptions shaped by that ratio, not measurements.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from custom.phantom import norms
from custom.phantom.atlas import SkullTemplate
from custom.phantom.canvas import Canvas, ball

ORBIT_CENTRE_MM = (30.0, 50.0, -22.0)  # right orbit's centre in the adult template's frame (read off Skull.nrrd)
ORBIT_RADIUS_MM = 18.0  # the adult orbital opening's half height, about (read off Skull.nrrd)
EYE_RADIUS_MM = 8.5  # assumption: the newborn globe is about 17 mm long, near its adult size
TAPER_MM = 12.0  # the adult skull fades out over its lowest 12 mm (template frame)
NEWBORN_HALF_BREADTH_MM = 46.5  # the growth model's newborn vault, half its breadth: the face's unit


class SkullMapping:
    """The axis-wise map between the case's head frame and the adult template's frame.

    Args:
        template: the adult skull.
        breadth_mm, length_mm: the case vault's widest section.
        centre: (3,) head-frame centre of that section (x, y) and its level (z), mm.
    """

    def __init__(self, template: SkullTemplate, breadth_mm: float, length_mm: float, centre) -> None:
        sx, sy = breadth_mm / template.width_mm, length_mm / template.length_mm
        self.scale = torch.tensor([sx, sy, (sx + sy) / 2])  # head mm per template mm
        self.centre = torch.as_tensor(np.asarray(centre), dtype=torch.float32)
        self.template = template

    def to_head(self, point) -> torch.Tensor:
        """Head-frame position (mm) of a template-frame point (mm)."""
        return torch.as_tensor(point, dtype=torch.float32) * self.scale + self.centre

    def fraction(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The template's bone fraction at head-frame points (trilinear, 0 outside the template)."""
        t = self.template
        grid = []
        for axis, q in enumerate((x, y, z)):
            index = ((q - self.centre[axis]) / self.scale[axis] - float(t.origin[axis])) / float(t.spacing[axis])
            grid.append(index / (t.fraction.shape[axis] - 1) * 2 - 1)
        shape = torch.broadcast_shapes(x.shape, y.shape, z.shape)
        coordinates = torch.stack([g.expand(shape) for g in grid[::-1]], -1).reshape(1, 1, 1, -1, 3)
        volume = torch.as_tensor(t.fraction)[None, None]
        out = F.grid_sample(volume, coordinates, mode="bilinear", padding_mode="zeros", align_corners=True)
        # the scan ends below the orbits: fade out over its last TAPER_MM instead of a cut a radiograph shows
        height = (z - self.centre[2]) / self.scale[2] - float(t.origin[2])
        return out.reshape(shape) * (height / TAPER_MM).clamp(0, 1).expand(shape)


def face_layout(mapping: SkullMapping, half_breadth_mm: float) -> dict[str, object]:
    """Head-frame positions (mm) of the drawn face's parts, from the orbits and the cranium's size."""
    k = half_breadth_mm / NEWBORN_HALF_BREADTH_MM  # the face grows with the cranium
    ox, oy, oz = mapping.to_head(ORBIT_CENTRE_MM).tolist()
    centre_x = float(mapping.centre[0])
    return {
        "orbits": [(centre_x + sign * abs(ox - centre_x), oy, oz) for sign in (-1, 1)],
        "orbit_top_z": oz + ORBIT_RADIUS_MM * float(mapping.scale[2]),
        "maxilla": ((centre_x, oy + 1 * k, oz - 17 * k), (16 * k, 14 * k, 7 * k)),
        "nasal_cavity": ((centre_x, oy + 7 * k, oz - 8 * k), (4 * k, 9 * k, 8 * k)),
        "jaw_z": oz - 32 * k,
        "joint_z": oz - 14 * k,
        "arch": (17 * k, 20 * k, oy - 17 * k),  # half breadth, depth, centre y of the mandibular arch
        "spine": (centre_x, float(mapping.centre[1]) - 6 * k, oz - 24 * k),  # top of C1
        "scale": k,
    }


def paint_face(canvas: Canvas, layout: dict, vault_hu: float, age_months: float, tooth_buds: bool) -> None:
    """Eyes, maxilla and nasal cavity, mandible with tooth buds, and the C1-C3 vertebral bodies."""
    k = layout["scale"]
    for centre in layout["orbits"]:
        box, eye = ball(canvas, centre, (EYE_RADIUS_MM * min(1.2, k),) * 3)
        if box is not None:
            canvas.paint(eye, norms.EYE_HU, "soft_tissue", box)
    for (centre, semi), hu, label in (
        (layout["maxilla"], 0.8 * vault_hu, "bone"),
        (layout["nasal_cavity"], -1000.0, "background"),
    ):
        box, fraction = ball(canvas, centre, semi)
        if box is not None:
            canvas.paint(fraction, hu, label, box)
    arch_x, arch_y, arch_centre_y = layout["arch"]
    jaw_z, joint_z = layout["jaw_z"], layout["joint_z"]
    centre_x = layout["maxilla"][0][0]
    box = canvas.box((centre_x, arch_centre_y + arch_y / 2, jaw_z), max(arch_x, arch_y) + 10)
    if box is not None:
        x, y, z = canvas.coordinates(box)
        ring = (
            (torch.sqrt(((x - centre_x) / arch_x) ** 2 + ((y - arch_centre_y) / arch_y) ** 2) - 1)
            * (arch_x + arch_y)
            / 2
        )
        body = torch.sqrt((ring / (3 * k)) ** 2 + ((z - jaw_z) / (6 * k)) ** 2) - 1  # an elliptic tube
        canvas.paint(canvas.inside(body * 3 * k) * (y > arch_centre_y).float(), 0.85 * vault_hu, "bone", box)
    for sign in (-1, 1):
        centre = (centre_x + sign * arch_x, arch_centre_y, (jaw_z + joint_z) / 2)
        box, ramus = ball(canvas, centre, (2.5 * k, 6 * k, (joint_z - jaw_z) / 2))
        if box is not None:
            canvas.paint(ramus, 0.85 * vault_hu, "bone", box)
    if tooth_buds:
        mineral = norms.at_age(norms.TOOTH_BUD_HU, age_months)
        for jaw_centre_z, scale in ((jaw_z + 4 * k, 0.85), (layout["maxilla"][0][2] - 4 * k, 0.8)):
            for angle in np.linspace(15, 165, 8):
                t = math.radians(angle)
                centre = (
                    centre_x + scale * arch_x * math.cos(t),
                    arch_centre_y + scale * arch_y * math.sin(t),
                    jaw_centre_z,
                )
                box, bud = ball(canvas, centre, (2.0 * k, 2.0 * k, 2.5 * k))
                if box is not None:
                    canvas.paint(bud, mineral, "bone", box)
    sx, sy, sz = layout["spine"]
    for level in range(3):  # C1-C3 vertebral bodies
        box, body = ball(canvas, (sx, sy, sz - 11 * k * level), (7 * k, 5.5 * k, 4 * k))
        if box is not None:
            canvas.paint(body, norms.SPINE_HU_FACTOR * vault_hu, "bone", box)


__all__ = ["ORBIT_CENTRE_MM", "SkullMapping", "face_layout", "paint_face"]
