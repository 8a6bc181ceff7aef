"""Pictures a person can check a case with: CT slices and both X-rays side by side in one PNG.

CT slices are shown as radiologists read them (patient's right on the image left; axial with anterior
up; coronal and sagittal with superior up; sagittal with the face on the left), windowed from -200 to
1500 HU so bone, soft tissue and air all show. X-rays are shown as the network sees them.
"""

from __future__ import annotations

import numpy as np
import torch
from custom.imaging.geometry import VIEW_NAMES
from PIL import Image, ImageDraw

DISPLAY_WINDOW_HU = (-200.0, 1500.0)  # display window of CT slices


def ct_slices(hu: torch.Tensor) -> dict[str, np.ndarray]:
    """Central axial, coronal and sagittal slices of a RAS volume (X, Y, Z) in display orientation."""
    volume = hu.detach().float().cpu().numpy()
    x, y, z = (n // 2 for n in volume.shape)
    return {
        "axial": volume[::-1, ::-1, z].T,  # rows anterior -> posterior, columns patient's right -> left
        "coronal": volume[::-1, y, ::-1].T,  # rows superior -> inferior
        "sagittal": volume[x, ::-1, ::-1].T,  # columns anterior -> posterior
    }


def montage(hu: torch.Tensor, views: torch.Tensor, title: str = "", height: int = 256) -> Image.Image:
    """One grey-scale picture: axial, coronal and sagittal CT slices, then the frontal and lateral X-rays.

    Args:
        hu: (X, Y, Z) or (1, X, Y, Z) CT numbers, HU.
        views: (2, H, W) X-rays in [0, 1] (channel 0 frontal, 1 lateral).
        title: a line of text above the tiles.
        height: tile height, pixels. Defaults to 256.
    """
    low, high = DISPLAY_WINDOW_HU
    tiles = {name: (image - low) / (high - low) for name, image in ct_slices(hu.reshape(hu.shape[-3:])).items()}
    tiles.update({name: image.detach().float().cpu().numpy() for name, image in zip(VIEW_NAMES, views)})
    pictures = []
    for name, image in tiles.items():
        grey = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
        grey = grey.resize((round(grey.width * height / grey.height), height), Image.Resampling.BILINEAR)
        ImageDraw.Draw(grey).text((4, 2), name, fill=255)
        pictures.append(grey)
    header = 14 if title else 0
    canvas = Image.new("L", (sum(p.width for p in pictures) + 4 * (len(pictures) - 1), height + header), 0)
    left = 0
    for picture in pictures:
        canvas.paste(picture, (left, header))
        left += picture.width + 4
    if title:
        ImageDraw.Draw(canvas).text((4, 1), title, fill=255)
    return canvas


__all__ = ["DISPLAY_WINDOW_HU", "ct_slices", "montage"]
