"""Biplanar X-ray simulation: canonical CT in HU -> frontal and lateral radiographs for the network.

One code path makes the training pairs, the evaluation inputs and the bundle's sample X-rays:

1. attenuation: HU -> linear attenuation at one effective energy (:func:`custom.imaging.physics.hu_to_mu`);
2. line integrals through the geometry's :class:`~custom.imaging.projector.Projector` (both views);
3. detector (:class:`DetectorModel`): Beer-Lambert intensities, Poisson quantum noise at a dose
   level, Gaussian unsharpness, gain and offset, then the log image;
4. display: :func:`custom.imaging.physics.normalise_radiograph`, the mapping real X-rays get too, and an
   optional gamma (contrast) change.

Training augmentation (:class:`XRayAugmentation`) draws the dose, blur, gain, offset and gamma per
case; it is off unless given, so evaluation inputs are the deterministic detector model. Head pose
jitter changes the CT as well as its X-rays, so it lives in :mod:`custom.data.pose`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import torch
from custom.imaging.geometry import BiplanarGeometry
from custom.imaging.physics import (
    MU_WATER,
    detector_blur,
    hu_to_mu,
    log_image,
    normalise_radiograph,
    quantum_counts,
    transmission,
)
from custom.imaging.projector import Projector
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform


@dataclass(frozen=True)
class DetectorModel:
    """How the detector records the transmitted beam. The defaults are an ideal detector.

    Args:
        photons: expected photons per pixel without attenuation (the dose level); None for a
            noiseless detector. A skull radiograph gives roughly 1e4-1e5 per 1.8 mm pixel.
        blur_mm: standard deviation of the Gaussian unsharpness at the detector, mm. Defaults to 0.
        gain: multiplies the detected signal. Defaults to 1.
        offset: signal added, as a fraction of the unattenuated signal (scatter, dark current).
            Defaults to 0.
        gamma: display gamma applied after normalisation (< 1 brightens). Defaults to 1.
    """

    photons: float | None = None
    blur_mm: float = 0.0  # mm
    gain: float = 1.0
    offset: float = 0.0
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if self.photons is not None and self.photons <= 0:
            raise ValueError(f"photons must be positive or None, got {self.photons}.")
        if self.blur_mm < 0 or self.gain <= 0 or self.offset < 0 or self.gamma <= 0:
            raise ValueError(f"need blur_mm >= 0, gain > 0, offset >= 0 and gamma > 0, got {self}.")


@dataclass(frozen=True)
class XRayAugmentation:
    """Ranges from which training draws a :class:`DetectorModel` per case (uniform; photons log-uniform).

    Args:
        photons: (low, high) photons per pixel. Defaults to (2e3, 1e5).
        blur_mm: (low, high) unsharpness, mm. Defaults to (0, 0.8).
        gain: (low, high). Defaults to (0.9, 1.1).
        offset: (low, high) fraction of the unattenuated signal. Defaults to (0, 0.02).
        gamma: (low, high) display gamma. Defaults to (0.8, 1.25).
    """

    photons: tuple[float, float] = (2e3, 1e5)
    blur_mm: tuple[float, float] = (0.0, 0.8)  # mm
    gain: tuple[float, float] = (0.9, 1.1)
    offset: tuple[float, float] = (0.0, 0.02)
    gamma: tuple[float, float] = (0.8, 1.25)

    def __post_init__(self) -> None:
        for name in ("photons", "blur_mm", "gain", "offset", "gamma"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name} range must be (low, high), got {(low, high)}.")
        DetectorModel(self.photons[0], self.blur_mm[0], self.gain[0], self.offset[0], self.gamma[0])  # validates

    def draw(self, random: Callable[[], float]) -> DetectorModel:
        """A detector with every setting drawn from its range by ``random()`` in [0, 1)."""

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * random()

        photons = math.exp(uniform(*map(math.log, self.photons)))
        return DetectorModel(
            photons, uniform(*self.blur_mm), uniform(*self.gain), uniform(*self.offset), uniform(*self.gamma)
        )


class SimulateBiplanarXRay(Randomizable, Transform):
    """Canonical CT (HU) -> the frontal and lateral X-rays the network takes, in [0, 1].

    Args:
        geometry: the acquisition; the CT must be on its grid. Defaults to ``BiplanarGeometry()``.
        detector: the detector used without augmentation. Defaults to an ideal one.
        augmentation: ranges for training; None (default) always uses ``detector``.
        mu_water: attenuation of water, 1/mm. Defaults to 60 keV.
        normalise: map each image to the display range [0, 1]; False returns log images (line
            integrals plus detector effects). Defaults to True.

    Call with ``ct``: (1, X, Y, Z) or (X, Y, Z) CT numbers, HU. Returns (2, H, W) float32, channel 0
    frontal, 1 lateral, on the CT's device.
    """

    def __init__(
        self,
        geometry: BiplanarGeometry | None = None,
        detector: DetectorModel | None = None,
        augmentation: XRayAugmentation | None = None,
        mu_water: float = MU_WATER,
        normalise: bool = True,
    ) -> None:
        self.projector = Projector(geometry)
        self.detector = detector or DetectorModel()
        self.augmentation = augmentation
        self.mu_water = mu_water
        self.normalise = normalise
        self._drawn = self.detector

    @property
    def geometry(self) -> BiplanarGeometry:
        return self.projector.geometry

    def randomize(self, data=None) -> None:
        """Draw this call's detector from the augmentation ranges (keeps the fixed one without them)."""
        if self.augmentation is not None:
            self._drawn = self.augmentation.draw(self.R.random_sample)

    def __call__(self, ct: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        volume = torch.as_tensor(ct, dtype=torch.float32)
        if volume.dim() == 4 and volume.shape[0] == 1:
            volume = volume[0]
        if tuple(volume.shape) != self.geometry.vol_shape:
            raise ValueError(
                f"the CT must be (1, X, Y, Z) or (X, Y, Z) on the grid {self.geometry.vol_shape}; got "
                f"{tuple(ct.shape)}. Canonicalise it first (custom.data.canonicalise.CanonicaliseCT)."
            )
        if randomize:
            self.randomize()
        detector = self._drawn
        with torch.no_grad():
            # 1. attenuation and line integrals
            line_integrals = self.projector(hu_to_mu(volume.as_subclass(torch.Tensor), self.mu_water)[None, None])[0, 0]
            # 2. detector: intensities, quantum noise, unsharpness, gain and offset, log image
            images = self._detect(line_integrals, detector)
            # 3. display mapping shared with real X-rays
            if self.normalise:
                images = normalise_radiograph(images) ** detector.gamma
        return images.float()  # (2, H, W)

    def _detect(self, line_integrals: torch.Tensor, detector: DetectorModel) -> torch.Tensor:
        """Log images (2, H, W) recorded by ``detector`` behind rays with these line integrals."""
        if detector == DetectorModel(gamma=detector.gamma):
            return line_integrals  # an ideal detector records the line integrals themselves
        i0 = detector.photons or 1.0
        intensity = transmission(line_integrals, i0)
        if detector.photons is not None:
            generator = torch.Generator().manual_seed(int(self.R.randint(2**31)))
            intensity = quantum_counts(intensity.cpu(), generator).to(line_integrals.device)
        intensity = detector_blur(intensity, detector.blur_mm / self.geometry.det_spacing)
        intensity = detector.gain * intensity + detector.offset * i0
        return log_image(intensity, i0)


class SimulateBiplanarXRayd(MapTransform, Randomizable):
    """Dictionary wrapper of :class:`SimulateBiplanarXRay`: reads the CT at ``keys``, writes ``output_key``.

    Args:
        keys: the canonical CT's key (one). Defaults to ``"ct"``.
        output_key: where the (2, H, W) views go. Defaults to ``"image"`` (the bundle's input key).
        allow_missing_keys: skip a missing CT. Defaults to False.
        **kwargs: :class:`SimulateBiplanarXRay` arguments.
    """

    def __init__(
        self, keys: KeysCollection = "ct", output_key: Hashable = "image", allow_missing_keys: bool = False, **kwargs
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"SimulateBiplanarXRayd reads one CT key, got {self.keys}.")
        self.output_key = output_key
        self.simulator = SimulateBiplanarXRay(**kwargs)
        self.simulator.R = self.R

    def randomize(self, data=None) -> None:
        self.simulator.randomize()

    def set_random_state(self, seed=None, state=None) -> SimulateBiplanarXRayd:
        super().set_random_state(seed, state)
        self.simulator.R = self.R  # one generator: seeding, saving and restoring this transform covers both
        return self

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.simulator(d[key])
        return d


__all__: Sequence[str] = ["DetectorModel", "SimulateBiplanarXRay", "SimulateBiplanarXRayd", "XRayAugmentation"]
