"""X-ray physics between CT numbers and detector images, monoenergetic.

CT numbers map linearly to linear attenuation at one effective energy,
``mu = mu_water * (1 + HU / 1000)``, clamped at zero (air is -1000 HU). A detector pixel behind a ray
with line integral ``p = integral of mu ds`` receives ``I = I0 * exp(-p)`` (Beer-Lambert), and the log
image ``-ln(I / I0)`` gives ``p`` back. The projector computes ``p`` from a volume in 1/mm.

``MU_WATER`` is water at 60 keV: NIST XCOM mass attenuation 0.2059 cm^2/g times 1 g/cm^3 = 0.02059
1/mm. 60 keV is a typical effective energy of a filtered diagnostic beam; a single effective energy
cannot reproduce beam hardening or the energy dependence of bone contrast, so pass ``mu_water`` for
other beams.

The detector model (:func:`quantum_counts`, :func:`detector_blur`) turns ideal intensities into what a
flat-panel detector records, and :func:`normalise_radiograph` is the one display mapping shared by
simulated and real X-rays, so the network sees both on the same scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

MU_WATER = 0.02059  # 1/mm, water at 60 keV
AIR_HU = -1024.0  # HU, air as CT scanners store it; the value outside every canonical CT and phantom
AIR_THRESHOLD_HU = -500.0  # HU; below it a voxel is air (background), above it tissue
BONE_HU = 300.0  # HU; above it a voxel is bone (bone masks, Dice, surfaces, labels from HU)


def hu_to_mu(hu: torch.Tensor, mu_water: float = MU_WATER) -> torch.Tensor:
    """Linear attenuation (1/mm) of CT numbers (HU), zero at and below -1000 HU."""
    return (mu_water * (1 + hu / 1000)).clamp(min=0)


def mu_to_hu(mu: torch.Tensor, mu_water: float = MU_WATER) -> torch.Tensor:
    """CT numbers (HU) of linear attenuation (1/mm); the inverse of :func:`hu_to_mu` above -1000 HU."""
    return 1000 * (mu / mu_water - 1)


def transmission(line_integral: torch.Tensor, i0: float = 1.0) -> torch.Tensor:
    """Beer-Lambert: detected intensity behind rays with dimensionless line integrals ``p``, ``I0 exp(-p)``."""
    return i0 * torch.exp(-line_integral)


def log_image(intensity: torch.Tensor, i0: float = 1.0) -> torch.Tensor:
    """Line integrals from detected intensities, ``-ln(I / I0)``.

    Intensities at or below zero (e.g. after noise) are taken as the smallest positive value of their
    dtype, so the result stays finite.
    """
    tiny = torch.finfo(intensity.dtype).tiny
    return -torch.log(intensity.clamp(min=tiny) / i0)


NETWORK_HU_RANGE = (AIR_HU, 2048.0)  # HU mapped to [0, 1] for the networks' CT input and output


def hu_to_network(hu: torch.Tensor, hu_range: tuple[float, float] = NETWORK_HU_RANGE) -> torch.Tensor:
    """CT numbers (HU) -> the networks' CT scale: ``hu_range`` mapped linearly to [0, 1], clipped.

    The default window keeps air (-1024 HU) at 0 and dense bone, petrous ridges and tooth enamel of
    young children (up to about 2000 HU) below 1, with 3.3e-4 per HU: 40 HU of soft tissue contrast is
    0.013 on this scale.
    """
    low, high = hu_range
    return ((hu - low) / (high - low)).clamp(0, 1)


def network_to_hu(values: torch.Tensor, hu_range: tuple[float, float] = NETWORK_HU_RANGE) -> torch.Tensor:
    """The networks' CT scale -> CT numbers (HU); the inverse of :func:`hu_to_network` inside [0, 1]."""
    low, high = hu_range
    return low + values * (high - low)


def quantum_counts(expected: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Poisson-distributed photon counts with the given expected counts (quantum noise).

    A pixel that counts nothing is read as one photon, as detectors floor dark pixels, so a log image
    of the counts stays finite. Not differentiable (a sample).
    """
    return torch.poisson(expected.float().clamp(min=0), generator).clamp(min=1).to(expected.dtype)


def gaussian_blur(values: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian filter over the last ``len(sigmas)`` axes, edges replicated.

    Args:
        values: (..., *S) images or volumes.
        sigmas: standard deviation per filtered axis, in samples; 0 leaves an axis as it is. The
            kernel reaches ``ceil(3 sigma)`` samples either side.

    Raises:
        ValueError: a negative sigma.
    """
    if min(sigmas, default=0) < 0:
        raise ValueError(f"sigmas must be >= 0 samples, got {tuple(sigmas)}.")
    first = values.dim() - len(sigmas)
    for axis, sigma in enumerate(sigmas, start=first):
        if sigma == 0:
            continue
        radius = max(1, math.ceil(3 * sigma))
        taps = torch.arange(-radius, radius + 1, dtype=values.dtype, device=values.device)
        kernel = torch.exp(-(taps**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        n = values.shape[axis]
        padded = values.index_select(axis, torch.arange(-radius, n + radius, device=values.device).clamp(0, n - 1))
        blurred = torch.zeros_like(values)
        for t in range(2 * radius + 1):  # shifted copies, weighted: no full-size kernel tensor
            blurred.add_(padded.narrow(axis, t, n), alpha=float(kernel[t]))
        values = blurred
    return values


def detector_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian detector unsharpness (scintillator light spread, focal spot) of images (..., H, W).

    Args:
        image: (..., H, W) detector images.
        sigma: standard deviation in pixels; 0 returns the input. Edges are replicated.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0 pixels, got {sigma}.")
    return image if sigma == 0 else gaussian_blur(image, (sigma, sigma))


DISPLAY_PERCENTILES = (0.5, 99.5)  # % of pixels mapped to 0 and 1 by normalise_radiograph


def normalise_radiograph(image: torch.Tensor, percentiles: tuple[float, float] = DISPLAY_PERCENTILES) -> torch.Tensor:
    """Map each image (..., H, W) to [0, 1] between two of its percentiles, attenuation bright.

    The network input scale for simulated log images and real radiographs alike: whatever a
    radiograph's processing, gain or bit depth, its low percentile (open field, air) goes to 0 and its
    high percentile (petrous bone, teeth) to 1, clipped outside. Robust percentiles rather than min/max
    keep a hot pixel or a lead marker from compressing the rest of the image.

    Raises:
        ValueError: an image is constant (nothing to normalise) or not finite.
    """
    low, high = percentiles
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
    flat = image.reshape(-1, image.shape[-2] * image.shape[-1]).float()
    if not torch.isfinite(flat).all():
        raise ValueError("the image contains NaN or infinite values.")
    bounds = torch.quantile(flat, torch.tensor([low, high], device=flat.device) / 100, dim=1)  # (2, N)
    span = bounds[1] - bounds[0]
    if (span <= 0).any():
        raise ValueError("the image is constant between its display percentiles; there is nothing to show.")
    normalised = ((flat - bounds[0, :, None]) / span[:, None]).clamp(0, 1)
    return normalised.reshape(image.shape).to(image.dtype if image.is_floating_point() else torch.float32)


__all__ = [
    "AIR_THRESHOLD_HU",
    "BONE_HU",
    "AIR_HU",
    "DISPLAY_PERCENTILES",
    "MU_WATER",
    "NETWORK_HU_RANGE",
    "detector_blur",
    "gaussian_blur",
    "hu_to_mu",
    "hu_to_network",
    "log_image",
    "mu_to_hu",
    "network_to_hu",
    "normalise_radiograph",
    "quantum_counts",
    "transmission",
]
