"""What a structure map says clinically: each calvarial bone's overlap, and which sutures are open.

For networks that predict :data:`custom.phantom.STRUCTURES` (SPIDER), against a phantom's truth:

- ``dice_<bone>``: Dice of each calvarial bone's class (NaN when neither map has it) and
  ``dice_calvarial_bones``, their mean over the bones present;
- suture patency: a suture is *open* in a structure map when at least :data:`MIN_SUTURE_VOXELS` voxels of
  the suture class lie within :data:`NEAR_VOXELS` of both bones it separates, else *fused*; the same rule
  reads the truth and the prediction, and ``patency_agreement`` is the share of the eight sutures on
  which they agree (``patency_<suture>`` 1 or 0 each).

Which suture is fused is the clinical question of craniosynostosis; no published biplanar method answers it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from custom.phantom.labels import BONES, STRUCTURES, SUTURE_BONES

MIN_SUTURE_VOXELS = 20  # voxels of suture near both bones for the suture to count as open
NEAR_VOXELS = 2  # "near": within a 5 x 5 x 5 neighbourhood (a 1-2 mm gap spans one or two voxels)


def _near(mask: torch.Tensor) -> torch.Tensor:
    """Voxels within :data:`NEAR_VOXELS` (Chebyshev) of ``mask``."""
    return F.max_pool3d(mask.float()[None, None], 2 * NEAR_VOXELS + 1, 1, NEAR_VOXELS)[0, 0] > 0


def suture_patency(structures: torch.Tensor) -> dict[str, bool]:
    """Whether each suture of :data:`SUTURE_BONES` is open in an (X, Y, Z) or (1, X, Y, Z) structure map."""
    structures = torch.as_tensor(structures).reshape(torch.as_tensor(structures).shape[-3:])
    gap = structures == STRUCTURES["suture"]
    near = {bone: _near(structures == STRUCTURES[bone]) for bone in BONES}
    return {
        suture: int((gap & near[first] & near[second]).sum()) >= MIN_SUTURE_VOXELS
        for suture, (first, second) in SUTURE_BONES.items()
    }


def structure_metrics(predicted: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Per-bone Dice and suture patency agreement of a predicted structure map against the truth."""
    predicted = torch.as_tensor(predicted).reshape(torch.as_tensor(predicted).shape[-3:])
    truth = torch.as_tensor(truth).reshape(predicted.shape)
    out = {}
    for bone in BONES:
        p, t = predicted == STRUCTURES[bone], truth == STRUCTURES[bone]
        total = int(p.sum() + t.sum())
        out[f"dice_{bone}"] = 2 * float((p & t).sum()) / total if total else math.nan
    present = [v for k, v in out.items() if not math.isnan(v)]
    out["dice_calvarial_bones"] = sum(present) / len(present) if present else math.nan
    opened, expected = suture_patency(predicted), suture_patency(truth)
    for suture in SUTURE_BONES:
        out[f"patency_{suture}"] = float(opened[suture] == expected[suture])
    out["patency_agreement"] = sum(out[f"patency_{s}"] for s in SUTURE_BONES) / len(SUTURE_BONES)
    return out


STRUCTURE_METRICS = (
    "dice_calvarial_bones",
    "patency_agreement",
    *(f"dice_{bone}" for bone in BONES),
    *(f"patency_{suture}" for suture in SUTURE_BONES),
)

__all__ = ["MIN_SUTURE_VOXELS", "STRUCTURE_METRICS", "structure_metrics", "suture_patency"]
