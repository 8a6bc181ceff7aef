"""Timing and memory of one operation, measured the same way by every benchmark.

- Time: :func:`median_ms` calls the operation ``warmup`` times untimed (lazy initialisation, caches,
  the CUDA kernels' first launches), then ``repeats`` times timed, and returns the median in
  milliseconds. On CUDA each call is timed by CUDA events around it and the device is synchronised
  before the time is read, so asynchronous kernels are counted whole; on the CPU by
  :func:`time.perf_counter`.
- Memory: :func:`memory_baseline` starts a measurement and :func:`peak_memory_mb` ends it, in MB. On
  CUDA it is the caching allocator's peak since the baseline (tensors only, per device); on the CPU
  the growth of the process's peak resident memory over its resident memory at the baseline (all
  allocations of the process, so measure in a fresh process for the operation's own peak).
- :func:`device_name` names the device that ran a measurement (the GPU's model, or the CPU's model and
  torch's thread count), so records are comparable across machines.
"""

from __future__ import annotations

import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def device_name(device: torch.device) -> str:
    """A readable name of the device that ran a measurement, with CPU thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        model = names[0] if names else model
    return f"cpu: {model} ({torch.get_num_threads()} threads)"


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _current_rss_mb() -> float:
    """Resident memory of this process now, MB (its peak so far where /proc is missing)."""
    statm = Path("/proc/self/statm")
    if not statm.exists():
        return _peak_rss_mb()
    return int(statm.read_text().split()[1]) * resource.getpagesize() / 2**20


def memory_baseline(device: torch.device) -> float:
    """Start a peak-memory measurement: reset CUDA's peak, or note the process's resident memory (MB)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return 0.0
    return _current_rss_mb()


def peak_memory_mb(device: torch.device, baseline: float) -> float:
    """Peak memory since :func:`memory_baseline`, MB: CUDA's allocator peak, or resident-memory growth."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mb() - baseline


def median_ms(run: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls after ``warmup`` calls, ms (CUDA events on GPU)."""
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            torch.cuda.synchronize(device)
            elapsed = start.elapsed_time(end)
        else:
            tick = time.perf_counter()
            run()
            elapsed = (time.perf_counter() - tick) * 1e3
        if i >= warmup:
            times.append(elapsed)
    return statistics.median(times)


__all__ = ["device_name", "median_ms", "memory_baseline", "peak_memory_mb"]
