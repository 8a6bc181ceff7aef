from __future__ import annotations

import time

import pytest
import torch
from custom.benchmark.timing import device_name, median_ms, memory_baseline, peak_memory_mb

DEVICES = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def test_device_name_names_the_cpu_and_its_threads():
    name = device_name(torch.device("cpu"))
    assert name.startswith("cpu: ") and name.endswith(f"({torch.get_num_threads()} threads)")


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_median_ms_times_the_repeats_after_the_warm_up(device):
    calls = []

    def run() -> None:
        calls.append(len(calls))
        time.sleep(0.2 if len(calls) <= 2 else 0.01)  # the two warm-up calls are slow

    elapsed = median_ms(run, device, repeats=3, warmup=2)
    assert len(calls) == 5 and 5 < elapsed < 150


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_peak_memory_counts_what_was_allocated_since_the_baseline(device):
    baseline = memory_baseline(device)
    block = torch.ones(64 * 2**18, device=device)  # 64 MB, touched
    del block
    assert peak_memory_mb(device, baseline) > 60  # on the CPU the process's peak: more after a larger earlier one
