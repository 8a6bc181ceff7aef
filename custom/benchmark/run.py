"""The side-by-side benchmark: train every method on the same data and budget, measure it the same way.

For each selected :data:`~custom.benchmark.methods.METHODS` entry:

1. build the bundle's training config (``train.json`` + the profile's and the method's overrides) and
   seed everything with the same seed, so every method sees the same cases in the same order with
   the same augmentations; the training cases are rendered (or loaded) once and shared (with
   structure labels, posed with the CT, when a selected network predicts them);
2. train it with the bundle's own trainer for exactly ``budget`` generator updates (learning rate
   constant for the first half of the epochs, then falling linearly: the paper's 50 + 50 schedule
   scaled to the budget; the generator's floor fitted first), or fit a baseline in one pass over the
   same training cases (unaugmented, as the floors are fitted); no validation,
   no model selection: the final weights are measured;
3. evaluate it on the held-out test cases (and, when given, an out-of-distribution folder, reported
   apart) with the evaluation protocol (:class:`custom.metrics.protocol.CaseEvaluator`);
4. measure its efficiency in a fresh process (:func:`measure_inference`): inference ms at batch 1
   and that process's peak memory; parameters, weight file size and training seconds per iteration.

Results go to ``out/``: see :mod:`custom.benchmark.results` and :mod:`custom.benchmark.figure`.
"""

from __future__ import annotations

import copy
import math
import platform
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from custom.benchmark.figure import comparison_figure
from custom.benchmark.methods import BENCHMARK_OVERRIDES, METHODS, Method
from custom.benchmark.profiles import PROFILES, Profile
from custom.benchmark.results import OUTPUTS, write_results
from custom.benchmark.timing import device_name, median_ms, memory_baseline, peak_memory_mb
from custom.files import atomic_write, refuse_existing
from custom.imaging.physics import BONE_HU, network_to_hu
from custom.metrics.physical import mask_dice
from custom.metrics.protocol import TRACKS, CaseEvaluator, summarise
from custom.metrics.structures import structure_metrics
from custom.networks.floor import fit_floor
from custom.phantom import LABELS, STRUCTURES
from custom.phantom.labels import tissues_from_structures
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.data import CacheDataset
from monai.utils import set_determinism
from torch import nn

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def default_bundle_root() -> Path:
    """The bundle folder: ``bundle/`` in the repository, or the unzipped model-zoo bundle itself."""
    for root in (PACKAGE_ROOT / "bundle", PACKAGE_ROOT):
        if (root / "configs" / "train.json").is_file():
            return root
    raise FileNotFoundError(f"no configs/train.json under {PACKAGE_ROOT}; pass --bundle_root.")


def method_config(bundle_root: Path, method: Method, overrides: dict[str, Any]) -> ConfigParser:
    """The bundle's training config for one method: ``train.json`` and its config files, then the run's
    ``overrides``, :data:`~custom.benchmark.methods.BENCHMARK_OVERRIDES` and the method's own, by config id."""
    parser = ConfigParser()
    parser.read_config(
        [str(bundle_root / "configs" / "train.json"), *(str(bundle_root / f) for f in method.config_files)]
    )
    parser.update(copy.deepcopy({**overrides, **BENCHMARK_OVERRIDES, **method.overrides}))
    return parser


def run_overrides(
    settings: Profile,
    bundle_root: Path,
    out_dir: Path,
    data: str,
    num_phantoms: int | None,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """``train.json`` overrides shared by every method of a run: the profile's, the data, seed and device.

    Logs go to ``out_dir/logs``; data loading stays in this process (``num_workers`` 0).
    """
    return {
        **settings.overrides,
        "bundle_root": str(bundle_root),
        "output_dir": str(out_dir / "logs"),
        "dataset_dir": data,
        "num_phantoms": int(num_phantoms or settings.num_phantoms),
        "seed": seed,
        "device": f"$torch.device('{device}')",
        "num_workers": 0,
    }


def shared_training_data(parser: ConfigParser) -> dict[str, CacheDataset]:
    """The training cases, rendered once for every method: as trained on (augmented on the fly) and as
    the floors and fitted baselines are fitted on (unaugmented), by their ``train.json`` ids."""
    return {key: parser.get_parsed_content(key) for key in ("train#dataset", "train#floor_dataset")}


def build_model(parser: ConfigParser, method: Method) -> nn.Module:
    """The method's model on the config's device: a baseline (unfitted) or the generator of ``network``."""
    if method.fitted is not None:
        return method.fitted(geometry=parser.get_parsed_content("geometry")).to(parser.get_parsed_content("device"))
    return parser.get_parsed_content("network")


def parameter_count(model: nn.Module, method: Method) -> int:
    """Values learned from data: trainable parameters, or a fitted baseline's buffers."""
    if method.fitted is not None:
        return sum(b.numel() for b in model.buffers())
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train(parser: ConfigParser, method: Method, budget: int) -> tuple[nn.Module, int, float | None]:
    """Train (or fit) the method: (model, generator updates made, training seconds per update or None)."""
    model = build_model(parser, method)
    floor_cases = parser.get_parsed_content("train#floor_loader")  # the training cases, unaugmented
    if method.fitted is not None:
        model.fit(floor_cases)
        return model, 0, None
    fit_floor(model, floor_cases)  # as the bundle's training does first
    trainer = parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=budget), lambda engine: engine.terminate())
    start = time.perf_counter()
    trainer.run()
    elapsed = time.perf_counter() - start
    return model, trainer.state.iteration, elapsed / max(trainer.state.iteration, 1)


@torch.no_grad()
def evaluate(model: nn.Module, cases: Sequence[dict], evaluator: CaseEvaluator, device: torch.device) -> list[dict]:
    """Each case's reconstruction (HU, on the CPU) and its Track A and B metrics.

    A model with more than one output channel (SPIDER: intensity + class logits) is measured on its
    first channel, and its predicted bone class gets its own Dice (``structure``: against the
    reference's bone label, or the reference CT above 300 HU where a case has no labels); structure
    classes (:data:`custom.phantom.STRUCTURES`) add per-bone Dice and suture patency agreement.
    """
    model.eval()
    results = []
    for case in cases:
        views = torch.as_tensor(case["image"]).float()
        output = model(views[None].to(device)).float().cpu()[0]  # (1 [+ C], X, Y, Z)
        pred, target = network_to_hu(output[:1]), network_to_hu(torch.as_tensor(case["label"]).float())
        result = {"case": str(case["case"]), "pred": pred, **evaluator(pred, target, views)}
        if output.shape[0] > 1:  # a network that predicts structure: the Dice of its own bone class
            predicted, labels = output[1:].argmax(0, keepdim=True), case.get("labels")
            structures = output.shape[0] - 1 == len(STRUCTURES)  # SPIDER's bones and sutures
            if structures:
                result["structure"] = structure_metrics(predicted, labels) if labels is not None else {}
                predicted = tissues_from_structures(predicted)
                labels = None if labels is None else tissues_from_structures(torch.as_tensor(labels))
            reference = torch.as_tensor(labels) == LABELS["bone"] if labels is not None else target > BONE_HU
            result.setdefault("structure", {})["bone_dice_labels"] = mask_dice(
                predicted == LABELS["bone"], reference
            ).item()
        results.append(result)
    return results


def measure_inference(
    bundle_root: str, method: Method, overrides: dict[str, Any], weights: str, repeats: int = 5
) -> dict[str, float]:
    """Inference ms (median of ``repeats`` after one warm-up) and peak memory (MB) at batch 1, in this process.

    Run it in a fresh process: the memory is the process's peak while the model is built, loaded and
    run (CUDA: the allocator's peak; CPU: resident memory growth after the imports).
    """
    parser = method_config(Path(bundle_root), method, overrides)
    device = parser.get_parsed_content("device")
    baseline = memory_baseline(device)
    model = build_model(parser, method)
    model.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    model.eval()
    det_shape = parser.get_parsed_content("geometry").det_shape
    views = torch.rand(1, 2, *det_shape, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        infer_ms = median_ms(partial(model, views), device, repeats, warmup=1)
    return {"infer_ms": round(infer_ms, 3), "peak_mem_mb": round(peak_memory_mb(device, baseline), 1)}


def split_cases(parser: ConfigParser, source: str, split: str, num_phantoms: int | None = None) -> list[dict]:
    """The evaluation inputs and references of one split, prepared as the bundle's validation prepares them.

    ``num_phantoms`` replaces the config's phantom count: the split is hashed per case, so a larger
    set keeps every case's split and adds new cases (more held-out cases, none ever trained on).
    """
    parser = ConfigParser(copy.deepcopy(parser.get()))
    parser.update({"dataset_dir": source, "validate#datalist": f"$@split_datalist(split={split!r})"})
    if num_phantoms is not None:
        parser["num_phantoms"] = int(num_phantoms)
    parser["keep_keys"] = {
        "_target_": "SelectItemsd",
        "keys": ["case", "image", "label", "labels"],
        "allow_missing_keys": True,
    }
    return list(parser.get_parsed_content("validate#dataset"))


def summary(results: list[dict]) -> dict[str, Any]:
    """Mean of each metric over the cases, per track, and every case's values."""
    tracks = {**TRACKS, "structure": ("bone_dice_labels",)} if "structure" in results[0] else TRACKS
    means = {
        track: {name: summarise([r[track][name] for r in results])["mean"] for name in names}
        for track, names in tracks.items()
    }
    cases = [{"case": r["case"], **{k: v for track in tracks for k, v in r[track].items()}} for r in results]
    return {**means, "cases": cases}


def resolve(name: str) -> Method:
    """The method a name runs: ``<method>@<label>`` is that method under its own label, so one run can
    measure two sets of weights of it side by side (``--weights "{'psctnet@v1': 'old.pt'}"``)."""
    return METHODS[name.split("@", 1)[0]]


def run(
    out: str = "benchmark",
    data: str = "phantom",
    profile: str = "full",
    quick: bool = False,
    methods: Sequence[str] | str | None = None,
    budget: int | None = None,
    num_phantoms: int | None = None,
    ood: str | None = None,
    seed: int = 0,
    device: str | None = None,
    bundle_root: str | None = None,
    overwrite: bool = False,
    test_phantoms: int | None = None,
    weights: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Train and measure each method on the same data and budget; write the results to ``out``.

    Args:
        out: the results folder. Defaults to ``benchmark``.
        data: ``phantom`` (generated), a CT folder or a JSON datalist, split as the bundle splits it.
        profile: ``full`` (the paper's 128^3 protocol, GPU) or ``quick`` (CPU, minutes). Defaults to ``full``.
        quick: the ``quick`` profile, whatever ``profile`` says.
        methods: names from :data:`~custom.benchmark.methods.METHODS`, each optionally ``@<label>`` (see
            :func:`resolve`). Defaults to all.
        budget: generator updates per trained method. Defaults to the profile's.
        num_phantoms: phantom cases when ``data`` is ``phantom``. Defaults to the profile's.
        ood: a CT folder or JSON datalist evaluated as an out-of-distribution report (all its cases),
            kept apart from the main results. Defaults to none.
        seed: the seed of the data split and of every method's training. Defaults to 0.
        device: ``cpu`` or ``cuda[:i]``. Defaults to CUDA when available.
        bundle_root: the bundle folder with ``configs/``. Defaults to this package's bundle.
        overwrite: replace earlier results in ``out``. Defaults to False (refused before any work).
        test_phantoms: take the test cases from the test split of this many phantoms (a superset of
            the training set's, see :func:`split_cases`). Defaults to ``num_phantoms``.
        weights: ``{method: path}`` of trained weights to measure instead of training that method
            (e.g. the shipped ``models/model.pt`` as ``psctnet``); its ``iterations`` is then None.
            Defaults to none.

    Returns:
        The records written to ``results.json``.
    """
    profile = "quick" if quick else profile
    names = list(METHODS) if methods is None else [methods] if isinstance(methods, str) else list(methods)
    weights = dict(weights or {})
    unknown = sorted(n for n in set(names) | set(weights) if n.split("@", 1)[0] not in METHODS)
    if unknown or profile not in PROFILES:
        raise ValueError(
            f"unknown methods {unknown} or profile {profile!r}; choose from {list(METHODS)}, {list(PROFILES)}."
        )
    out_dir, root = Path(out), Path(bundle_root) if bundle_root else default_bundle_root()
    saved = {name: out_dir / "models" / f"{name}.pt" for name in names}
    refuse_existing([*(out_dir / name for name in OUTPUTS), *saved.values()], overwrite)
    settings = PROFILES[profile]
    budget = int(budget or settings.budget)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    overrides = run_overrides(settings, root, out_dir, data, num_phantoms, seed, device)
    started = time.perf_counter()

    # 1. the data, once: training cases cached, test (and out-of-distribution) cases prepared
    structured = [resolve(n) for n in names if resolve(n).family == "spider"]  # they need structure labels
    base = method_config(
        root, Method("data", "", config_files=structured[0].config_files if structured else ()), overrides
    )
    set_determinism(seed)
    shared = shared_training_data(base)
    train_cases: CacheDataset = shared["train#dataset"]
    epochs = math.ceil(budget / math.ceil(len(train_cases) / base.get_parsed_content("batch_size")))
    overrides.update(lr_constant_epochs=math.ceil(epochs / 2), lr_decay_epochs=epochs - math.ceil(epochs / 2))
    test_cases = split_cases(base, data, "test", test_phantoms)
    ood_cases = split_cases(base, ood, "all") if ood else []
    evaluator = CaseEvaluator(base.get_parsed_content("geometry"))
    print(f"benchmark: {len(train_cases)} training and {len(test_cases)} test cases, {budget} updates, {device}")

    # 2. every method: train or fit, evaluate, measure
    records, ood_records, reconstructions = [], [], {}
    context = get_context("spawn")
    for name in names:
        method = resolve(name)
        method_overrides = {**overrides, **settings.networks.get(method.family, {})}
        parser = method_config(root, method, method_overrides)
        parser.update(shared)
        set_determinism(seed)
        if name in weights:  # trained elsewhere: measured as given
            model, iterations, seconds_per_iteration = build_model(parser, method), None, None
            model.load_state_dict(torch.load(weights[name], map_location=device, weights_only=True))
        else:
            model, iterations, seconds_per_iteration = train(parser, method, budget)
        atomic_write(saved[name], lambda tmp, m=model: torch.save(m.state_dict(), tmp), overwrite)
        results = evaluate(model, test_cases, evaluator, device)
        reconstructions[name] = results[0]["pred"]
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            efficiency = pool.submit(measure_inference, str(root), method, method_overrides, str(saved[name])).result()
        cases = summary(results)
        record = {
            "variant": name,
            "description": method.description,
            "track_a": cases.pop("track_a"),
            "track_b": cases.pop("track_b"),
            "params": parameter_count(model, method),
            "model_mb": round(saved[name].stat().st_size / 2**20, 2),
            **efficiency,
            "train_s_per_iter": None if seconds_per_iteration is None else round(seconds_per_iteration, 3),
            "iterations": iterations,
            "device": device_name(device),
            "profile": profile,
            **cases,
        }
        records.append(record)
        if ood_cases:
            ood_results = evaluate(model, ood_cases, evaluator, device)
            ood_records.append({"variant": name, "description": method.description, **summary(ood_results)})
        track_b = record["track_b"]
        print(
            f"{name:>12}: PSNR3D {track_b['psnr_3d']:.2f} dB, MAE {track_b['mae_hu']:.0f} HU, "
            f"Dice {track_b['bone_dice']:.3f}, {record['infer_ms']} ms ({time.perf_counter() - started:.0f} s so far)"
        )
        del model, parser

    # 3. the results and the picture
    reference = network_to_hu(torch.as_tensor(test_cases[0]["label"]).float())
    figure = comparison_figure(reference, reconstructions, title=f"test case {test_cases[0]['case']}")
    context_line = {
        "profile": profile,
        "data": data,
        "budget": budget,
        "seed": seed,
        "train_cases": len(train_cases),
        "test_cases": len(test_cases),
        "test_phantoms": test_phantoms,
        "weights": weights,
        "ood": ood,
        "grid": list(evaluator.geometry.vol_shape),
        "spacing_mm": evaluator.geometry.vol_spacing,
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "wall_s": round(time.perf_counter() - started),
    }
    write_results(out_dir, records, ood_records, context_line, figure, overwrite)
    print(f"wrote {out_dir} in {time.perf_counter() - started:.0f} s")
    return records


__all__ = [
    "default_bundle_root",
    "evaluate",
    "measure_inference",
    "method_config",
    "run",
    "run_overrides",
    "shared_training_data",
    "split_cases",
    "summary",
    "train",
]
