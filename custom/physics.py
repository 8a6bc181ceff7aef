"""X-ray physics between CT numbers and detector images, monoenergetic.

CT numbers map linearly to linear attenuation at one effective energy,
``mu = mu_water * (1 + HU / 1000)``, clamped at zero (air is -1000 HU). A detector pixel behind a ray
with line integral ``p = integral of mu ds`` receives ``I = I0 * exp(-p)`` (Beer-Lambert), and the log
image ``-ln(I / I0)`` gives ``p`` back. The projector computes ``p`` from a volume in 1/mm.

``MU_WATER`` is water at 60 keV: NIST XCOM mass attenuation 0.2059 cm^2/g times 1 g/cm^3 = 0.02059
1/mm. 60 keV is a typical effective energy of a filtered diagnostic beam; a single effective energy
cannot reproduce beam hardening or the energy dependence of bone contrast, so pass ``mu_water`` for
other beams.
"""

from __future__ import annotations

import torch

MU_WATER = 0.02059  # 1/mm, water at 60 keV


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


__all__ = ["MU_WATER", "hu_to_mu", "log_image", "mu_to_hu", "transmission"]
