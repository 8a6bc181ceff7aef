"""Fixtures shared by several test files: a synthetic head CT (see ct_cases)."""

from __future__ import annotations

import numpy as np
import pytest
from ct_cases import grid, head_hu


@pytest.fixture(scope="module")
def synthetic_head():
    world, affine = grid((64, 64, 80), 3.0)
    return head_hu(world).astype(np.float32), affine
