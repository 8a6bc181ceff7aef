"""Soft tissue of the head: scalp, face and neck; inside the skull, the CSF, the brain and its ventricles.

The head's outline is the calvarium's outer surface (closed under the base by the atlas's floor) plus
the scalp, joined to an envelope that follows the skull base and upper face at the scalp's thickness,
to the cheeks and chin, and to a neck; the cranial cavity is everything inside the inner table of that
closed surface. A CSF layer of 2 mm lines it (assumption: the infant subarachnoid space is a few mm
wide), and two lateral ventricles sit in the brain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from custom.phantom import norms
from custom.phantom.canvas import Canvas, ball, ellipsoid_distance

CSF_MM = 2.0


def dilate(fraction: torch.Tensor, radius_mm: float, spacing_mm: float) -> torch.Tensor:
    """Grey dilation of a (X, Y, Z) fraction by a cube of half-size ``radius_mm``."""
    half = max(1, int(round(radius_mm / spacing_mm)))
    return F.max_pool3d(fraction[None, None], 2 * half + 1, 1, half)[0, 0]


def paint_head(canvas: Canvas, vault_distance, skull_fraction, layout: dict, scalp_mm: float, x, y, z) -> None:
    """Scalp over the closed calvarium, tissue around the skull base and face, the lower face and neck."""
    k = layout["scale"]
    (mx, my, mz), (ma, mb, mc) = layout["maxilla"]
    arch_x, arch_y, arch_centre_y = layout["arch"]
    face = ellipsoid_distance(
        x - mx,
        y - (arch_centre_y + 0.6 * arch_y),
        z - (mz + layout["jaw_z"]) / 2,
        (arch_x + 6 * k, arch_y + 8 * k, (mz - layout["jaw_z"]) / 2 + mc + 6 * k),
    )
    sx, sy, sz = layout["spine"]
    neck_radius = torch.sqrt(((x - sx) / (24 * k)) ** 2 + ((y - sy) / (22 * k)) ** 2)
    neck = torch.maximum((neck_radius - 1) * 22 * k, z - (sz + 12 * k))
    envelope = canvas.inside(torch.minimum(torch.minimum(vault_distance - scalp_mm, face), neck))
    envelope = torch.maximum(envelope, dilate(skull_fraction, scalp_mm, canvas.spacing))
    canvas.paint(envelope, norms.SCALP_HU, "soft_tissue")


def paint_cavity(canvas: Canvas, inner_distance: torch.Tensor, p, scale: float, centre_y: float) -> None:
    """CSF inside the inner table, the brain 2 mm within it, and two lateral ventricles.

    ``scale`` is the cranium's size against the newborn's; ``centre_y`` the middle of the vault (mm).
    """
    canvas.paint(canvas.inside(inner_distance), norms.CSF_HU, "brain")
    canvas.paint(canvas.inside(inner_distance + CSF_MM), norms.BRAIN_HU, "brain")
    s = p.ventricle_scale * scale
    for sign in (-1, 1):
        box, fraction = ball(canvas, (sign * 7 * scale, centre_y, 8 * scale), (4 * s, 20 * s, 5 * s))
        if box is not None:
            canvas.paint(fraction, norms.CSF_HU, "brain", box)


__all__ = ["dilate", "paint_cavity", "paint_head"]
