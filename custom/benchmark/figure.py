"""The benchmark's comparison figure: one test case as each method reconstructs it, under the reference.

One row per method, the reference CT first: the central axial, coronal and sagittal slices (windowed
as :mod:`custom.outputs.montage` windows them) and the bone surface seen from the front and from the left
(:func:`custom.outputs.bone_render.bone_surface`), so blur, missing bone and shape errors compare at a glance.
"""

from __future__ import annotations

import numpy as np
import torch
from custom.outputs.bone_render import RENDER_VIEWS, bone_surface
from custom.outputs.montage import DISPLAY_WINDOW_HU, ct_slices
from PIL import Image, ImageDraw

LABEL_WIDTH = 96  # pixels for the method's name left of its row


def _tiles(hu: torch.Tensor) -> list[np.ndarray]:
    """Slices (windowed to [0, 1]) and bone renders of a CT (X, Y, Z) in HU."""
    low, high = DISPLAY_WINDOW_HU
    slices = [np.clip((image - low) / (high - low), 0, 1) for image in ct_slices(hu).values()]
    return slices + [bone_surface(hu, view) for view in RENDER_VIEWS]


def comparison_figure(
    reference: torch.Tensor, reconstructions: dict[str, torch.Tensor], title: str = "", tile: int = 128
) -> Image.Image:
    """A grey-scale PNG-ready picture: the reference's row, then one row per method.

    Args:
        reference: (X, Y, Z) or (1, X, Y, Z) reference CT, HU.
        reconstructions: method name -> its CT of the same case and shape, HU.
        title: a line above the rows.
        tile: tile side, pixels. Defaults to 128.
    """
    rows = {"reference": reference, **reconstructions}
    header, gap = 28, 2
    columns = ["axial", "coronal", "sagittal", *(f"bone, {view}" for view in RENDER_VIEWS)]
    width = LABEL_WIDTH + len(columns) * (tile + gap)
    canvas = Image.new("L", (width, header + len(rows) * (tile + gap)), 0)
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 1), title, fill=255)
    for j, name in enumerate(columns):
        draw.text((LABEL_WIDTH + j * (tile + gap) + 2, 14), name, fill=255)
    for i, (name, hu) in enumerate(rows.items()):
        top = header + i * (tile + gap)
        draw.text((4, top + tile // 2 - 6), name, fill=255)
        for j, image in enumerate(_tiles(torch.as_tensor(hu).reshape(hu.shape[-3:]))):
            picture = Image.fromarray((image * 255).round().astype(np.uint8)).resize(
                (tile, tile), Image.Resampling.BILINEAR
            )
            canvas.paste(picture, (LABEL_WIDTH + j * (tile + gap), top))
    return canvas


__all__ = ["comparison_figure"]
