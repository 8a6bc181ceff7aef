"""The X-ray imaging model: the biplanar geometry (mm), the projector, attenuation and detector physics,
and analytic ellipsoids to check them against."""
