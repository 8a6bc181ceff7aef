"""Projector benchmark and demo, from the command line.

    python -m custom.cli.speed projector --json bench/projector.json     # timings and peak memory
    python -m custom.cli.speed demo --out demo                           # two DRRs of a built-in head
    python -m custom.cli.speed networks --json bench/networks.json       # generator and discriminator
    python -m custom.cli.speed phantoms --json bench/phantoms.json       # phantom generation time per case

``projector`` times forward projection (N^3 -> 2 x N^2), back-projection (2 x N^2 -> N^3, mean of the
views) and the adjoint (2 x N^2 -> N^3) at each size N: batch 1, one channel, no autograd graph,
random inputs, the median of ``repeats`` calls after ``warmup`` calls (measured as
:mod:`custom.benchmark.timing` measures). Each record runs in a fresh process, so ``peak_mem_mb`` is
that process's peak memory for the operation with its inputs, cached operators, outputs and
temporaries: on CUDA the allocator's peak, on CPU the growth of peak resident memory over the process
after importing torch. The JSON is a list of records ``{"op", "size", "device", "dtype", "median_ms",
"peak_mem_mb", ...}`` comparable across machines.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from json import dumps
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from custom.benchmark.timing import device_name, median_ms, memory_baseline, peak_memory_mb
from custom.cli import run_commands
from custom.files import atomic_write, refuse_existing, write_json
from custom.imaging.ellipsoids import analytic_head, rasterise
from custom.imaging.geometry import VIEW_NAMES, BiplanarGeometry
from custom.imaging.physics import hu_to_mu
from custom.imaging.projector import Projector
from PIL import Image

OPS = ("forward", "backproject", "adjoint")


def measure(
    op: str, size: int, device: str, dtype: str, repeats: int, warmup: int, backprojection: str = "auto"
) -> dict:
    """Time one operator at one size in this process (see the module docstring)."""
    dev, dt = torch.device(device), getattr(torch, dtype)
    baseline = memory_baseline(dev)
    projector = Projector(BiplanarGeometry().resampled((size,) * 3, (size, size)), backprojection)
    generator = torch.Generator(dev).manual_seed(0)
    if op == "forward":
        data = torch.rand(1, 1, size, size, size, generator=generator, device=dev, dtype=dt) * 0.04  # 1/mm
    else:
        data = torch.rand(1, len(VIEW_NAMES), size, size, generator=generator, device=dev, dtype=dt)
    run = partial({"forward": projector, "backproject": projector.backproject, "adjoint": projector.adjoint}[op], data)
    with torch.no_grad():
        median = median_ms(run, dev, repeats, warmup)
    peak = peak_memory_mb(dev, baseline)
    return {
        "op": op,
        "size": size,
        "device": device_name(dev),
        "dtype": dtype,
        "median_ms": round(median, 4),
        "peak_mem_mb": round(peak, 1),
        "beam": projector.geometry.beam,
        "backprojection": projector.backprojection_for(dev),
        "repeats": repeats,
        "torch": torch.__version__,
    }


def projector(
    json: str | None = None,
    sizes: Sequence[int] = (64, 128, 256),
    ops: Sequence[str] = OPS,
    device: str | None = None,
    dtype: str = "float32",
    repeats: int = 20,
    warmup: int = 3,
    backprojection: str = "auto",
    overwrite: bool = False,
) -> None:
    """Benchmark the projector; print one line per record and optionally write them as JSON.

    Args:
        json: where to write the records as JSON. Defaults to printing only.
        sizes: grid and detector sizes N (N^3 voxels, N x N pixels). Defaults to (64, 128, 256).
        ops: any of ``forward``, ``backproject``, ``adjoint``. Defaults to all three.
        device: ``cpu`` or ``cuda[:i]``. Defaults to CUDA when available.
        dtype: ``float32``, ``bfloat16``, ... Defaults to ``float32``.
        repeats: timed calls per record. Defaults to 20.
        warmup: untimed calls first. Defaults to 3.
        backprojection: the projector's back-projection method (see ``Projector``). Defaults to ``auto``.
        overwrite: replace an existing JSON file. Defaults to False.
    """
    sizes, ops, device = _arguments(sizes, ops, OPS, device)
    if json is not None:
        refuse_existing([json], overwrite)
    jobs = [(measure, op, int(size), device, dtype, repeats, warmup, backprojection) for size in sizes for op in ops]
    _run_records(jobs, json, overwrite)


def _arguments(
    sizes: int | Sequence[int], ops: str | Sequence[str], known: Sequence[str], device: str | None
) -> tuple[list[int], list[str], str]:
    """Command-line values as lists (fire passes one value bare), unknown ops refused, CUDA when available."""
    sizes = [sizes] if isinstance(sizes, int) else list(sizes)
    ops = [ops] if isinstance(ops, str) else list(ops)
    unknown = sorted(set(ops) - set(known))
    if unknown:
        raise ValueError(f"unknown ops {unknown}; choose from {tuple(known)}.")
    return sizes, ops, device or ("cuda" if torch.cuda.is_available() else "cpu")


def _run_records(jobs: list[tuple], json: str | None, overwrite: bool) -> None:
    """Run each ``(function, *args)`` in a fresh process (for its own peak memory), print and save the records."""
    records = []
    context = get_context("spawn")
    for function, *args in jobs:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            record = pool.submit(function, *args).result()
        name = f"{record['op']} {record.get('preset', '')}".strip()
        timing = f"{record['median_ms']:10.3f} ms  {record['peak_mem_mb']:8.1f} MB"
        print(f"{name:>28} {record['size']:>4}^3  {timing}  {record['device']}")
        records.append(record)
    if json is not None:
        write_json(json, records, overwrite)
        print(f"wrote {json}")


NETWORK_OPS = ("generator_fwd", "generator_fwd_bwd", "discriminator_fwd", "discriminator_fwd_bwd", "train_iteration")


def measure_network(op: str, size: int, preset: str, device: str, dtype: str, repeats: int, warmup: int) -> dict:
    """Time one network pass at batch 1 on an N^3 grid and N^2 views in this process.

    ``*_fwd`` runs in eval mode without autograd; ``*_fwd_bwd`` in train mode, forward then backward
    of the mean output (gradients cleared between calls). The discriminator is the default
    :class:`MultiScalePatchDiscriminator3d`, conditioned on a prior volume. ``train_iteration`` is one
    update of :class:`~custom.training.gan_trainer.PairedGanTrainer` after the warm-up (discriminator step, then the
    generator step on LSGAN + volume L1 + projection L1; Adam), what a training iteration costs.
    """
    from custom.networks.discriminator import MultiScalePatchDiscriminator3d
    from custom.networks.psctnet import parameter_counts, psctnet
    from custom.networks.selective_scan import selective_scan_backend
    from custom.training.gan_trainer import PairedGanTrainer
    from custom.training.losses import GeneratorLoss

    dev, dt = torch.device(device), getattr(torch, dtype)
    baseline = memory_baseline(dev)
    geometry = BiplanarGeometry().resampled((size,) * 3, (size, size))
    generator = torch.Generator(dev).manual_seed(0)
    views = torch.rand(1, len(VIEW_NAMES), size, size, generator=generator, device=dev, dtype=dt)
    if op.startswith("generator") or op == "train_iteration":
        model = psctnet(preset, geometry).to(dev, dt)
        inputs = (views,)
    else:
        model = MultiScalePatchDiscriminator3d().to(dev, dt)
        inputs = tuple(torch.rand(1, 1, size, size, size, generator=generator, device=dev, dtype=dt) for _ in "vp")
    backward = op.endswith("_bwd")
    model.train(backward)
    if op == "train_iteration":
        discriminator = MultiScalePatchDiscriminator3d().to(dev, dt)
        optimizers = [torch.optim.Adam(m.parameters()) for m in (model, discriminator)]
        trainer = PairedGanTrainer(
            dev, 1, [], model, discriminator, *optimizers, GeneratorLoss(model.projector), model.projector.backproject
        )
        target = torch.rand(1, 1, size, size, size, generator=generator, device=dev, dtype=dt)

    def run() -> None:
        if op == "train_iteration":
            trainer.train_step(views, target, adversarial=True)
        elif backward:
            model.zero_grad(set_to_none=True)
            output = model(*inputs)
            sum(o.float().mean() for o in (output if isinstance(output, list) else [output])).backward()
        else:
            with torch.no_grad():
                model(*inputs)

    median = median_ms(run, dev, repeats, warmup)
    peak = peak_memory_mb(dev, baseline)
    return {
        "op": op,
        "size": size,
        "preset": preset if not op.startswith("discriminator") else "default",
        "params": parameter_counts(model)["total"],
        "device": device_name(dev),
        "dtype": dtype,
        "median_ms": round(median, 3),
        "peak_mem_mb": round(peak, 1),
        "selective_scan": selective_scan_backend(dev, dt),
        "repeats": repeats,
        "torch": torch.__version__,
    }


def networks(
    json: str | None = None,
    sizes: Sequence[int] = (64, 128),
    presets: Sequence[str] = ("tiny", "default"),
    ops: Sequence[str] = NETWORK_OPS,
    device: str | None = None,
    dtype: str = "float32",
    repeats: int = 3,
    warmup: int = 1,
    overwrite: bool = False,
) -> None:
    """Benchmark the generator (per preset) and the discriminator; print and optionally save JSON records.

    Records have the projector benchmark's form plus ``preset`` and ``params`` (the generator's, for
    ``train_iteration``). Discriminator records are made once per size (they do not depend on the
    generator preset).

    Args:
        json: where to write the records. Defaults to printing only.
        sizes: grid and detector sizes N. Defaults to (64, 128).
        presets: generator presets. Defaults to ("tiny", "default").
        ops: any of :data:`NETWORK_OPS`. Defaults to all.
        device: ``cpu`` or ``cuda[:i]``. Defaults to CUDA when available.
        dtype: parameter and input dtype. Defaults to ``float32``.
        repeats: timed calls per record. Defaults to 3.
        warmup: untimed calls first. Defaults to 1.
        overwrite: replace an existing JSON file. Defaults to False.
    """
    sizes, ops, device = _arguments(sizes, ops, NETWORK_OPS, device)
    presets = [presets] if isinstance(presets, str) else presets
    if json is not None:
        refuse_existing([json], overwrite)
    jobs = [
        (measure_network, op, int(size), preset, device, dtype, repeats, warmup)
        for size in sizes
        for op in ops
        for preset in (presets[:1] if op.startswith("discriminator") else presets)
    ]
    _run_records(jobs, json, overwrite)


def phantoms(json: str | None = None, n: int = 20, size: int = 128, threads: int = 1, overwrite: bool = False) -> None:
    """Time procedural phantom generation (seconds per case) on ``threads`` CPU threads.

    One record ``{"op": "phantom", "size", "device", "n", "median_s", "max_s", "torch"}``: the
    median and the slowest of ``n`` cases of the default set (seed 0) after one untimed case.

    Args:
        json: where to write the record as JSON. Defaults to printing only.
        n: timed cases. Defaults to 20.
        size: grid voxels per axis (1.5 mm voxels scaled to the default field of view). Defaults to 128.
        threads: CPU threads for torch. Defaults to 1 (the 1 s per case target is for one core).
        overwrite: replace an existing JSON file. Defaults to False.
    """
    from custom.phantom import case_seed, make_phantom

    if json is not None:
        refuse_existing([json], overwrite)
    geometry = BiplanarGeometry().resampled((size,) * 3, (size, size))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        make_phantom(case_seed(0, n), geometry)  # warm-up
        times = []
        for i in range(n):
            tick = time.perf_counter()
            make_phantom(case_seed(0, i), geometry)
            times.append(time.perf_counter() - tick)
        device = device_name(torch.device("cpu"))
    finally:
        torch.set_num_threads(previous)
    record = {
        "op": "phantom",
        "size": size,
        "device": device,
        "n": n,
        "median_s": round(statistics.median(times), 4),
        "max_s": round(max(times), 4),
        "torch": torch.__version__,
    }
    print(dumps(record))
    if json is not None:
        write_json(json, [record], overwrite)


def demo(out: str = "demo", overwrite: bool = False) -> None:
    """Project the built-in analytic head with the default geometry and write what a person can look at.

    Writes ``frontal.png`` and ``lateral.png`` (line integrals, bright = more attenuation, both on one
    scale), ``phantom.nii.gz`` (the head in HU on the CT grid, RAS affine) and ``geometry.json``.

    Args:
        out: output folder. Defaults to ``demo``.
        overwrite: replace existing files. Defaults to False (nothing is written if any exists).
    """
    folder = Path(out)
    paths = {name: folder / name for name in ("frontal.png", "lateral.png", "phantom.nii.gz", "geometry.json")}
    refuse_existing(paths.values(), overwrite)

    geometry = BiplanarGeometry()
    layers, air = analytic_head()
    hu = rasterise(layers, geometry, background=air, supersampling=2)  # (X, Y, Z) HU
    line_integrals = Projector(geometry)(hu_to_mu(hu)[None, None])[0, 0]  # (2, H, W)
    grey = (line_integrals / line_integrals.max() * 255).round().to(torch.uint8).numpy()

    for image, name in zip(grey, VIEW_NAMES):
        png = Image.fromarray(image)
        atomic_write(paths[f"{name}.png"], lambda tmp, png=png: png.save(tmp, format="PNG"), overwrite)
    volume = nib.Nifti1Image(hu.numpy().astype(np.int16), geometry.affine)
    atomic_write(paths["phantom.nii.gz"], lambda tmp: nib.save(volume, tmp), overwrite)
    write_json(paths["geometry.json"], geometry.to_dict(), overwrite)
    print("\n".join(map(str, paths.values())))


def main() -> None:
    run_commands({"projector": projector, "networks": networks, "phantoms": phantoms, "demo": demo})


__all__ = ["NETWORK_OPS", "OPS", "demo", "measure", "measure_network", "networks", "phantoms", "projector"]


if __name__ == "__main__":
    main()
