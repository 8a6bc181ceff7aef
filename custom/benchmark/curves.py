"""Learning curves: train methods for the same wall-clock budget and log validation quality against seconds.

``python -m custom.cli.benchmark curves --methods psctnet,x2ct,spider --seconds 3600 --every 300 --out DIR``

For each method, built exactly as the side-by-side benchmark builds it (:mod:`custom.benchmark.run`:
the bundle's ``train.json`` with the profile's and the method's overrides, the same seed, the same
cached training cases), the floor is fitted on the unaugmented training cases (when the network has
one) and the bundle's trainer runs
until ``seconds`` of training have passed. Every ``every`` seconds of training, and once before the
first update, the model is measured on the validation split: PSNR3D (dB over the fixed 2500 HU
window), MAE (HU) and bone Dice (300 HU), the Track B metrics of :mod:`custom.metrics.physical`. Validation
time is not counted as training time. The learning rate stays constant (a decay needs a known length;
the shipped recipe's is in ``train.json``); the adversarial warm-up is the config's.

``python -m custom.cli.benchmark training_curve --log_dir eval --out DIR`` reads the same points from a
bundle training run instead (its TensorBoard events: the validation metrics after each epoch, against
the wall-clock seconds since the first update, validation included) and writes the same two files.

Writes ``curves.json`` (the settings and, per method, ``[{"seconds", "iteration", "psnr_3d",
"mae_hu", "bone_dice"}]``) and ``curves.png`` (one panel per metric against seconds, one line per
method), both refused if present unless ``overwrite``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from custom.benchmark.methods import METHODS, Method
from custom.benchmark.profiles import PROFILES
from custom.benchmark.run import (
    build_model,
    default_bundle_root,
    method_config,
    run_overrides,
    shared_training_data,
    split_cases,
)
from custom.benchmark.timing import device_name
from custom.files import atomic_write, refuse_existing, write_json
from custom.imaging.physics import network_to_hu
from custom.metrics.physical import bone_dice, mae_hu, psnr_3d
from custom.networks.floor import fit_floor
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.utils import set_determinism
from PIL import Image, ImageDraw

METRICS = {"psnr_3d": ("PSNR3D (dB)", psnr_3d), "mae_hu": ("MAE (HU)", mae_hu), "bone_dice": ("bone Dice", bone_dice)}
OUTPUTS = ("curves.json", "curves.png")
COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207))


@torch.no_grad()
def validation_point(model: torch.nn.Module, cases: Sequence[dict], device: torch.device) -> dict[str, float]:
    """Mean PSNR3D, MAE and bone Dice of ``model`` over prepared cases (first output channel, in HU)."""
    was_training = model.training
    model.eval()
    sums = dict.fromkeys(METRICS, 0.0)
    for case in cases:
        views = torch.as_tensor(case["image"]).float()[None].to(device)
        pred = network_to_hu(model(views).float().cpu()[:, :1])
        target = network_to_hu(torch.as_tensor(case["label"]).float()[None])
        for name, (_, function) in METRICS.items():
            sums[name] += function(pred, target).mean().item()
    model.train(was_training)
    return {name: total / len(cases) for name, total in sums.items()}


def learning_curve(
    parser: ConfigParser, method: Method, seconds: float, every: float, cases: Sequence[dict]
) -> list[dict[str, float]]:
    """Train one method for ``seconds`` of training time; its validation points (see the module docstring)."""
    device = parser.get_parsed_content("device")
    model = build_model(parser, method)
    fit_floor(model, parser.get_parsed_content("train#floor_loader"))
    trainer = parser.get_parsed_content("train#trainer")
    clock = {"trained": 0.0, "since": time.perf_counter(), "next": 0.0}
    points: list[dict[str, float]] = []

    def measure(iteration: int) -> None:
        clock["trained"] += time.perf_counter() - clock["since"]
        if clock["trained"] >= clock["next"] or clock["trained"] >= seconds:
            point = validation_point(model, cases, device)
            points.append({"seconds": round(clock["trained"], 1), "iteration": iteration, **point})
            print(f"{method.name:>10} {clock['trained']:7.0f} s, {iteration:5d} updates: {point}")
            clock["next"] = clock["trained"] + every
        clock["since"] = time.perf_counter()

    def step(engine) -> None:
        measure(engine.state.iteration)
        if clock["trained"] >= seconds:
            engine.terminate()

    measure(0)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, step)
    trainer.run()
    return points


def plot(curves: dict[str, list[dict[str, float]]], width: int = 360, height: int = 260) -> Image.Image:
    """One panel per metric: value (y) against training seconds (x), one coloured line per method."""
    margin, legend = 44, 18 * len(curves) + 8
    image = Image.new("RGB", (width * len(METRICS), height + legend), "white")
    draw = ImageDraw.Draw(image)
    t_max = max((p["seconds"] for points in curves.values() for p in points), default=1.0) or 1.0
    for panel, (name, (title, _)) in enumerate(METRICS.items()):
        values = [p[name] for points in curves.values() for p in points]
        low, high = min(values, default=0.0), max(values, default=1.0)
        high = high if high > low else low + 1.0
        x0, y0, x1, y1 = panel * width + margin, 20, (panel + 1) * width - 10, height - 30
        draw.rectangle((x0, y0, x1, y1), outline="black")
        draw.text((x0, 4), title, fill="black")
        draw.text((x0, y1 + 4), "0 s", fill="black")
        draw.text((x1 - 50, y1 + 4), f"{t_max:.0f} s", fill="black")
        draw.text((x0 - margin + 2, y0), f"{high:.3g}", fill="black")
        draw.text((x0 - margin + 2, y1 - 10), f"{low:.3g}", fill="black")
        for colour, points in zip(COLOURS, curves.values()):
            xy = [
                (x0 + (x1 - x0) * p["seconds"] / t_max, y1 - (y1 - y0) * (p[name] - low) / (high - low)) for p in points
            ]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=2)
            for x, y in xy:
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
    for row, (colour, name) in enumerate(zip(COLOURS, curves)):
        y = height + 4 + 18 * row
        draw.line((margin, y + 6, margin + 30, y + 6), fill=colour, width=3)
        draw.text((margin + 38, y), name, fill="black")
    return image


def curves(
    out: str = "curves",
    methods: Sequence[str] | str = ("psctnet", "x2ct", "spider"),
    seconds: float = 3600.0,
    every: float = 300.0,
    data: str = "phantom",
    profile: str = "cpu128",
    num_phantoms: int | None = None,
    seed: int = 0,
    device: str | None = None,
    bundle_root: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Learning curves of ``methods`` for ``seconds`` of training each; see the module docstring.

    Args:
        out: the results folder. Defaults to ``curves``.
        methods: names from :data:`~custom.benchmark.methods.METHODS` (trained ones). Defaults to
            PSCT-Net, the X2CT-GAN-style baseline and SPIDER.
        seconds: training seconds per method. Defaults to 3600.
        every: training seconds between validation points. Defaults to 300.
        data: ``phantom``, a CT folder or a JSON datalist, split as the bundle splits it.
        profile: a :data:`~custom.benchmark.profiles.PROFILES` entry with a validation split. Defaults
            to ``cpu128``.
        num_phantoms: phantom cases. Defaults to the profile's.
        seed: the seed of the split and of each method's training. Defaults to 0.
        device: ``cpu`` or ``cuda[:i]``. Defaults to CUDA when available.
        bundle_root: the bundle folder with ``configs/``. Defaults to this package's bundle.
        overwrite: replace earlier curves in ``out``. Defaults to False (refused before any work).

    Raises:
        ValueError: unknown or fitted methods, an unknown profile, or non-positive times.
    """
    names = methods.split(",") if isinstance(methods, str) else list(methods)
    bad = [n for n in names if n not in METHODS or METHODS[n].fitted is not None]
    if bad or profile not in PROFILES or seconds <= 0 or every <= 0:
        raise ValueError(
            f"methods must be trained ones of {list(METHODS)} (got {bad}), profile one of {list(PROFILES)} "
            f"(got {profile!r}), seconds and every positive (got {seconds}, {every})."
        )
    out_dir, root = Path(out), Path(bundle_root) if bundle_root else default_bundle_root()
    refuse_existing([out_dir / name for name in OUTPUTS], overwrite)
    settings = PROFILES[profile]
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    overrides = {
        **run_overrides(settings, root, out_dir, data, num_phantoms, seed, device),
        "lr_constant_epochs": 10**6,  # constant learning rate: the run ends on time, not on an epoch count
        "lr_decay_epochs": 0,
    }
    structured = [METHODS[n] for n in names if METHODS[n].family == "spider"]  # they need structure labels
    base = method_config(
        root, Method("data", "", config_files=structured[0].config_files if structured else ()), overrides
    )
    set_determinism(seed)
    shared = shared_training_data(base)
    val_cases = split_cases(base, data, "val")
    if not val_cases:
        raise ValueError(f"the profile {profile!r} leaves no validation cases; use one with a validation split.")
    results: dict[str, list[dict[str, float]]] = {}
    for name in names:
        method = METHODS[name]
        parser = method_config(root, method, {**overrides, **settings.networks.get(method.family, {})})
        parser.update(shared)
        set_determinism(seed)
        results[name] = learning_curve(parser, method, seconds, every, val_cases)
    record = {
        "profile": profile,
        "data": data,
        "seconds": seconds,
        "every": every,
        "seed": seed,
        "train_cases": len(shared["train#dataset"]),
        "val_cases": len(val_cases),
        "grid": list(base.get_parsed_content("geometry").vol_shape),
        "device": device_name(device),
        "torch": torch.__version__,
        "curves": results,
    }
    write_json(out_dir / "curves.json", record, overwrite)
    atomic_write(out_dir / "curves.png", plot(results).save, overwrite)
    return record


def run_curve(log_dir: str | Path) -> list[dict[str, float]]:
    """Validation points of a bundle training run from its TensorBoard events in ``log_dir``.

    Each point: seconds since the first update's ``loss`` event (wall clock, validation included), the
    iteration last logged before the validation, and the ``val_<metric>`` values of :data:`METRICS`.

    Raises:
        ValueError: no training losses or no validation metrics in the events.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list] = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(events.Scalars(tag))
    losses = sorted(scalars.get("loss", []), key=lambda e: e.wall_time)
    validations = [sorted(scalars.get(f"val_{name}", []), key=lambda e: e.wall_time) for name in METRICS]
    if not losses or not all(validations):
        raise ValueError(f"{log_dir} holds no training losses or no validation metrics {list(METRICS)}.")
    start = losses[0].wall_time
    points = []
    for values in zip(*validations):
        iteration = max((e.step for e in losses if e.wall_time <= values[0].wall_time), default=0)
        seconds = round(values[0].wall_time - start, 1)
        points.append({"seconds": seconds, "iteration": iteration, **{n: v.value for n, v in zip(METRICS, values)}})
    return points


def training_curve(log_dir: str, out: str = "curves", name: str = "psctnet", overwrite: bool = False) -> dict:
    """Write ``curves.json`` and ``curves.png`` of one bundle training run (see :func:`run_curve`)."""
    out_dir = Path(out)
    refuse_existing([out_dir / n for n in OUTPUTS], overwrite)
    points = run_curve(log_dir)
    record = {"source": "bundle training run (TensorBoard events)", "seconds": "wall clock", "curves": {name: points}}
    write_json(out_dir / "curves.json", record, overwrite)
    atomic_write(out_dir / "curves.png", plot(record["curves"]).save, overwrite)
    return record


__all__ = ["METRICS", "OUTPUTS", "curves", "learning_curve", "plot", "run_curve", "training_curve", "validation_point"]
