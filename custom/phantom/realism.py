"""How real the phantoms are: cohort statistics against published norms, and a picture beside real scans.

Every statistic is measured on the rendered volumes (upright, unposed), not read from the generator:

- head circumference: the largest perimeter of the head's axial outline (the convex hull of the head
  voxels of a slice, grown by half a voxel) from the forehead's most anterior point up (a tape goes
  round above the brows); against the WHO median (one standard deviation:
  :data:`~custom.phantom.norms.HC_SD_CM`);
- cephalic index: 100 x the largest left-right extent over the largest front-back extent of the
  calvarial bones (``bones`` 1-7); against the normative table (10 %, no spread is published);
- intracranial volume: the brain and CSF voxels (mL); against the normative table (10 %);
- thickness per bone: rays from the centre of the cranial cavity through the middle of each bone, the
  bone fraction (HU scaled between brain and the case's vault HU) integrated along each ray, median over
  rays; against the normative table (10 %);
- face to cranium: soft tissue and bone between the orbital roofs and the chin, in front of the brain's
  centre, over the intracranial volume; reported beside the textbook 1:8 (which it overstates, see
  :func:`face_to_cranium`).

:func:`report` runs a cohort per age and writes ``realism.json``, ``realism.md`` and ``montage.png``
(phantom CT slices and DRRs, and DRRs of the real scans in ../shared/data when present).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from custom.imaging.geometry import BiplanarGeometry
from custom.phantom import norms
from custom.phantom.atlas import Atlas
from custom.phantom.calvarium import convex_perimeter
from custom.phantom.labels import BONE_LABELS, BONES, LABELS
from custom.phantom.render import Phantom, case_seed, make_phantom

AGES_MONTHS = (0.0, 6.0, 12.0, 24.0)
TOLERANCE = 0.10  # relative, where no spread is published
THICKNESS_BONES = ("frontal", "parietal", "occipital")


def _orbital_roof(labels: torch.Tensor) -> int:
    """Axial index of the orbital roofs: the lowest brain voxel in the front third of the brain."""
    brain = torch.nonzero(labels == LABELS["brain"])
    front = brain[:, 1].max() - (brain[:, 1].max() - brain[:, 1].min()) / 3
    return int(brain[brain[:, 1] > front][:, 2].min())


def _glabella_level(bones: torch.Tensor) -> int:
    """Axial index of the forehead's most anterior point: the lowest frontal-bone voxel within one voxel
    of the frontal bones' front."""
    frontal = torch.nonzero((bones == BONE_LABELS["frontal_right"]) | (bones == BONE_LABELS["frontal_left"]))
    return int(frontal[frontal[:, 1] >= frontal[:, 1].max() - 1][:, 2].min())


def head_circumference_cm(phantom: Phantom, spacing: float) -> float:
    """Largest axial perimeter of the head from the forehead's most anterior point up, cm: the maximal
    occipitofrontal circumference, which a tape takes above the brows."""
    head = phantom.labels > 0
    best = 0.0
    for k in range(_glabella_level(phantom.bones), head.shape[2]):
        rows = torch.nonzero(head[:, :, k].any(1)).flatten()
        if len(rows) < 2:
            continue
        ys = [torch.nonzero(head[i, :, k]).flatten() for i in rows.tolist()]
        edge = [(i, y[0].item()) for i, y in zip(rows.tolist(), ys)] + [
            (i, y[-1].item()) for i, y in zip(rows.tolist(), ys)
        ]
        best = max(best, convex_perimeter(np.array(edge, dtype=float) * spacing) + math.pi * spacing)
    return best / 10


def cephalic_index(phantom: Phantom, spacing: float) -> float:
    """100 x largest breadth / largest length of the calvarial bones (voxel extents)."""
    vault = (phantom.bones >= 1) & (phantom.bones <= len(BONES))
    index = torch.nonzero(vault).float()
    breadth, length = (index[:, :2].amax(0) - index[:, :2].amin(0) + 1) * spacing
    return float(100 * breadth / length)


def intracranial_volume_ml(phantom: Phantom, spacing: float) -> float:
    """Brain and CSF voxels, mL."""
    return float((phantom.labels == LABELS["brain"]).sum()) * spacing**3 / 1000


def bone_thickness_mm(phantom: Phantom, spacing: float, step_mm: float = 0.25) -> dict[str, float]:
    """Median ray-integrated thickness (mm) of the frontal, parietal and occipital bones."""
    labels, hu = phantom.labels, phantom.hu
    centre = torch.nonzero(labels == LABELS["brain"]).float().mean(0)
    calvarium = ((phantom.bones >= 1) & (phantom.bones <= len(BONES))).float()
    near = F.max_pool3d(calvarium[None, None], 3, 1, 1)[0, 0]  # with the partial-volume voxels at its edges
    fraction = ((hu - 30.0) / (phantom.parameters.vault_hu - 30.0)).clamp(0, 1) * near
    # normals: the gradient of the smoothed cranial cavity (the brain and CSF under the inner table)
    cavity = F.avg_pool3d((labels == LABELS["brain"]).float()[None, None], 5, 1, 2)[0, 0]
    gradient = torch.stack(torch.gradient(cavity))
    out = {}
    for name in THICKNESS_BONES:
        values = [BONE_LABELS[b] for b in BONES if b.startswith(name)]
        voxels = torch.nonzero(torch.isin(phantom.bones, torch.tensor(values))).float()
        if len(voxels) < 10:
            continue
        directions = voxels - centre
        directions = directions / directions.norm(dim=1, keepdim=True)
        mean = directions.mean(0)
        mean = mean / mean.norm()
        chosen = (directions @ mean) > math.cos(math.radians(15))
        rays, hits = directions[chosen][:200], voxels[chosen][:200]
        radius = (voxels - centre).norm(dim=1).max().item() + 6
        t = torch.arange(0, radius, step_mm / spacing)
        points = centre + rays[:, None, :] * t[None, :, None]  # voxel index units
        samples = _sample(fraction, points)
        normals = _sample(gradient, hits[:, None, :])[..., 0].T  # (rays, 3) outward normals
        cosine = (rays * normals / normals.norm(dim=1, keepdim=True).clamp(min=1e-6)).sum(1).abs()
        out[name] = float((samples.sum(1) * cosine).median() * step_mm)
    return out


def _sample(volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of a (..., X, Y, Z) volume at (R, S, 3) voxel-index points -> (..., R, S)."""
    shape = torch.tensor(volume.shape[-3:], dtype=torch.float32)
    grid = (points / (shape - 1) * 2 - 1).flip(-1)[None, None]
    channels = volume.reshape(1, -1, *volume.shape[-3:])
    return F.grid_sample(channels, grid, align_corners=True)[0, :, 0].reshape(*volume.shape[:-3], *points.shape[:2])


def face_to_cranium(phantom: Phantom, spacing: float) -> float:
    """Face over cranium: soft tissue and bone between the orbital roofs and the chin (the lowest bone in
    front of the brain's centre) and in front of the brain's centre, over the intracranial volume.

    It counts the soft tissue and what lies behind the facial skeleton (pharynx, temporal fossae), so
    it overstates the skeletal ratio the textbook's 1:8 describes.
    """
    labels = phantom.labels
    centre_y = torch.nonzero(labels == LABELS["brain"])[:, 1].float().mean()
    y = torch.arange(labels.shape[1])[None, :, None]
    z = torch.arange(labels.shape[2])[None, None, :]
    chin = int(torch.nonzero((labels == LABELS["bone"]) & (y > centre_y))[:, 2].min())
    tissue = (labels == LABELS["soft_tissue"]) | (labels == LABELS["bone"])
    face = tissue & (z < _orbital_roof(labels)) & (z >= chin) & (y > centre_y)
    return float(face.sum()) / float((labels == LABELS["brain"]).sum())


def measure(phantom: Phantom, spacing: float) -> dict[str, float]:
    """All statistics of one unposed phantom."""
    return {
        "head_circumference_cm": head_circumference_cm(phantom, spacing),
        "cephalic_index": cephalic_index(phantom, spacing),
        "icv_ml": intracranial_volume_ml(phantom, spacing),
        **{f"thickness_{k}": v for k, v in bone_thickness_mm(phantom, spacing).items()},
        "face_to_cranium": face_to_cranium(phantom, spacing),
    }


def expected(atlas: Atlas, age: float, sex: str) -> dict[str, tuple[float, float]]:
    """(reference value, allowed deviation) of each statistic for one case."""
    out = {"head_circumference_cm": (norms.head_circumference(age, sex), norms.HC_SD_CM)}
    for key in ("cephalic_index", "icv_ml", *[f"thickness_{b}" for b in THICKNESS_BONES]):
        value = atlas.norm(key, age, sex)
        out[key] = (value, TOLERANCE * value)
    return out


def cohort(
    ages=AGES_MONTHS, per_age: int = 6, seed: int = 0, variant: str = "normal", geometry=None, anatomy_dir=None
) -> list[dict]:
    """Measure ``per_age`` unposed phantoms of ``variant`` at each age (alternating sex)."""
    geometry = geometry or BiplanarGeometry()
    rows = []
    for age in ages:
        for i in range(per_age):
            sex = ("male", "female")[i % 2]
            phantom = make_phantom(
                case_seed(seed, int(age * 100) + i),
                geometry,
                anatomy_dir,
                age_months=age,
                variant=variant,
                sex=sex,
                pose=False,
            )
            rows.append({"age_months": age, "sex": sex, "variant": variant, **measure(phantom, geometry.vol_spacing)})
    return rows


def summarise(rows: list[dict], atlas: Atlas) -> list[dict]:
    """Per age and statistic: cohort mean and SD, reference, tolerance and whether the mean is within it."""
    out = []
    for age in sorted({r["age_months"] for r in rows}):
        group = [r for r in rows if r["age_months"] == age]
        references = [expected(atlas, age, r["sex"]) for r in group]
        for key in references[0]:
            values = np.array([r[key] for r in group if key in r])
            reference = float(np.mean([ref[key][0] for ref in references]))
            tolerance = float(np.mean([ref[key][1] for ref in references]))
            mean = float(values.mean())
            out.append(
                {
                    "age_months": age,
                    "statistic": key,
                    "mean": round(mean, 3),
                    "sd": round(float(values.std()), 3),
                    "reference": round(reference, 3),
                    "tolerance": round(tolerance, 3),
                    "within": bool(abs(mean - reference) <= tolerance),
                }
            )
    return out


__all__ = ["AGES_MONTHS", "cohort", "expected", "measure", "summarise"]
