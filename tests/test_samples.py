from __future__ import annotations

from pathlib import Path

import pytest

from custom.data.xray import LoadXRay
from custom.samples import sample_paths, write_sample_pair

SHIPPED = Path(__file__).resolve().parents[1] / "bundle" / "docs" / "samples"


def test_the_shipped_sample_pair_is_what_the_generator_writes(tmp_path):
    written = write_sample_pair(out=str(tmp_path))
    for view, path in sample_paths(SHIPPED).items():
        assert path.read_bytes() == written[view].read_bytes(), view
        assert path.stat().st_size < 64_000  # a few tens of KB


def test_the_sample_pair_loads_as_network_input_and_is_not_overwritten(tmp_path):
    frontal = LoadXRay()(sample_paths(SHIPPED)["frontal"])
    assert tuple(frontal.shape) == (1, 128, 128) and frontal.min() == 0 and frontal.max() == 1
    write_sample_pair(out=str(tmp_path))
    with pytest.raises(FileExistsError):
        write_sample_pair(out=str(tmp_path))
