from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from custom.cli.samples import sample_paths, write_sample_pair
from custom.data.xray import LoadXRay
from PIL import Image

SHIPPED = Path(__file__).resolve().parents[1] / "bundle" / "docs" / "samples"
# The generator's floating point differs across CPUs (seen: 8-11 of 16384 pixels off by at most 17 of
# 65535), so the written PNGs may differ in bytes; their decoded pixels must agree within this.
PIXEL_TOLERANCE = 64  # of 65535, under 0.1 % of the range
DIFFERING_PIXELS_TOLERANCE = 0.005  # fraction of pixels allowed to differ at all


def test_the_shipped_sample_pair_is_what_the_generator_writes(tmp_path):
    written = write_sample_pair(out=str(tmp_path))
    for view, path in sample_paths(SHIPPED).items():
        shipped, fresh = Image.open(path), Image.open(written[view])
        assert (shipped.mode, shipped.size) == (fresh.mode, fresh.size), view
        shipped, fresh = np.asarray(shipped, dtype=np.int64), np.asarray(fresh, dtype=np.int64)
        difference = np.abs(shipped - fresh)
        assert difference.max() <= PIXEL_TOLERANCE, view
        assert (difference > 0).mean() <= DIFFERING_PIXELS_TOLERANCE, view
        assert path.stat().st_size < 64_000  # a few tens of KB


def test_the_sample_pair_loads_as_network_input_and_is_not_overwritten(tmp_path):
    frontal = LoadXRay()(sample_paths(SHIPPED)["frontal"])
    assert tuple(frontal.shape) == (1, 128, 128) and frontal.min() == 0 and frontal.max() == 1
    write_sample_pair(out=str(tmp_path))
    with pytest.raises(FileExistsError):
        write_sample_pair(out=str(tmp_path))
