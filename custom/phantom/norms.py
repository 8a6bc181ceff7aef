"""Published figures of infant skull growth the generator draws from, and the assumptions it adds.

Every number here names its source; where none was found the value is marked as an assumption. The
normative tables of calvarial thickness, cephalic index and intracranial volume by age and sex come
with the atlas (:meth:`custom.phantom.atlas.Atlas.norm`).
"""

from __future__ import annotations

import numpy as np

# WHO Child Growth Standards (2007), head circumference-for-age medians, cm, at (months)
HC_MONTHS = (0, 3, 6, 12, 18, 24)
HC_MEDIAN_CM = {"male": (34.5, 40.5, 43.3, 46.1, 47.4, 48.3), "female": (33.9, 39.5, 42.2, 44.9, 46.2, 47.2)}
HC_SD_CM = 1.25  # WHO: one standard deviation is about 1.2-1.3 cm at these ages, both sexes

# Anterior fontanelle on CT (Pindrik et al., J Neurosurg Pediatr 2014, n = 464): median area at birth
# and at its peak (2 months), and the share of children in whom it has closed by an age.
ANTERIOR_FONTANELLE_MM2 = ((0.0, 770.0), (2.0, 1020.0))  # (months, mm^2)
ANTERIOR_CLOSED_SHARE = ((4.5, 0.0), (5.5, 0.04), (10.0, 0.16), (16.0, 0.53), (20.0, 0.88), (26.0, 1.0))
# the last point (all closed by 26 months) is an assumption beyond the study's 20-month figure
ANTERIOR_ASPECT = 1.3  # assumption: the diamond is 1.3 times longer (front to back) than wide
POSTERIOR_CLOSES_MONTHS = (2.0, 3.0)  # closed by 2-3 months (textbook figure, cited in Pindrik et al.)
POSTERIOR_DIAGONAL_MM = 8.0  # assumption: fingertip-sized at birth; no measured area was found
METOPIC_FUSES_MONTHS = (3.0, 9.0)  # Vu et al., AJNR 2001 (3D CT): the metopic suture fuses at 3-9 months
SUTURE_WIDTH_MM = ((0.0, 2.0), (24.0, 1.0))  # assumption: open sutures narrow from 2 to 1 mm by 2 years

# Bone and soft tissue, HU. Infant vault bone is one layer without diploe and less mineralised than
# adult cortical bone (1160 +- 140 HU, Yamada 1982); no measured infant value was found, so it rises
# by assumption from 750 HU at birth to 1050 HU at 24 months, below the adult figure throughout.
VAULT_HU = ((0.0, 750.0), (24.0, 1050.0))
BASE_HU_FACTOR = 1.1  # assumption: the endochondral skull base is denser than the vault
TOOTH_BUD_HU = ((0.0, 1200.0), (24.0, 2160.0))  # assumption: enamel caps mineralise with age
SPINE_HU_FACTOR = 0.6  # assumption: vertebral bodies are mostly cartilage and trabecular bone
SCALP_HU, CSF_HU, BRAIN_HU, EYE_HU, ORBITAL_FAT_HU = 40.0, 8.0, 30.0, 15.0, -80.0  # soft tissue, water-like
SCALP_MM = ((0.0, 2.5), (24.0, 4.0))  # assumption: scalp and subcutaneous tissue thicken with age
THICKNESS_SPREAD = 0.1  # assumption: one case's vault is N(1, 0.1) times the normative thickness
CEPHALIC_INDEX_SD = 2.5  # assumption: index points, no spread is published with the normative table
FACE_TO_CRANIUM = 1 / 8  # textbook: facial to cranial volume about 1:8 at birth (1:2-1:2.5 in adults)


def at_age(table: tuple[tuple[float, float], ...], age_months: float) -> float:
    """A (months, value) table linearly interpolated (and held constant beyond its ends)."""
    months, values = zip(*table)
    return float(np.interp(age_months, months, values))


def head_circumference(age_months: float, sex: str = "male") -> float:
    """WHO median head circumference (cm) at an age in months (0-24)."""
    return float(np.interp(age_months, HC_MONTHS, HC_MEDIAN_CM[sex]))


def anterior_fontanelle_area(age_months: float, closes_months: float) -> float:
    """Anterior fontanelle area (mm^2): the median growth to its 2-month peak, then a linear closure."""
    (_, birth), (peak_month, peak) = ANTERIOR_FONTANELLE_MM2
    if age_months >= closes_months:
        return 0.0
    if age_months <= peak_month:
        return birth + (peak - birth) * age_months / peak_month
    return peak * (closes_months - age_months) / max(closes_months - peak_month, 1e-6)


def anterior_closure_age(uniform: float) -> float:
    """The closure age (months) at quantile ``uniform`` of :data:`ANTERIOR_CLOSED_SHARE`."""
    months, share = zip(*ANTERIOR_CLOSED_SHARE)
    return float(np.interp(uniform, share, months))


__all__ = [
    "CEPHALIC_INDEX_SD",
    "HC_SD_CM",
    "METOPIC_FUSES_MONTHS",
    "VAULT_HU",
    "anterior_closure_age",
    "anterior_fontanelle_area",
    "at_age",
    "head_circumference",
]
