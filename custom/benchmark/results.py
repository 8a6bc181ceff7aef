"""The benchmark's result files: machine-readable records, per-case values and a Markdown table.

In the results folder:

- ``results.json``: a list of records, one per method: ``variant`` (the method's name),
  ``description``, ``track_a`` and ``track_b`` (means over the test cases), ``structure`` for
  networks that predict labels (the Dice of their own bone class), ``params``, ``model_mb``,
  ``infer_ms``, ``peak_mem_mb``, ``train_s_per_iter``, ``iterations``, ``device``, ``profile`` and
  ``cases`` (each case's values);
- ``results.csv``: the same means, one row per method, flat columns;
- ``cases.csv``: one row per method and test case;
- ``results.md``: the run's settings and three tables (Track B, Track A, efficiency), the best value
  of each metric in bold (no bold where all are equal); the out-of-distribution table, when there is
  one, under its own heading;
- ``ood_results.json``: the out-of-distribution records, when there are any;
- ``comparison.png``: the figure of :mod:`custom.benchmark.figure`.

The JSON and CSV files are formatted as :func:`custom.files.write_json` and
:func:`custom.files.write_csv` write them: non-finite values (a perfect case's infinite PSNR) as the
strings ``"inf"``/``"nan"``, so the JSON stays strict. Every file is written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from custom.files import atomic_write, csv_text, json_text
from custom.metrics.protocol import LOWER_IS_BETTER, TRACK_A, TRACK_B
from PIL import Image

OUTPUTS = ("results.json", "results.csv", "cases.csv", "results.md", "ood_results.json", "comparison.png")
EFFICIENCY = ("params", "model_mb", "infer_ms", "peak_mem_mb", "train_s_per_iter", "iterations")
HEADINGS = {
    "psnr_3d": "PSNR3D dB",
    "ssim_3d": "SSIM3D",
    "mae_hu": "MAE HU",
    "bone_dice": "Dice 300",
    "bone_dice_200": "Dice 200",
    "hd95_mm": "HD95 mm",
    "assd_mm": "ASSD mm",
    "chamfer_mm": "Chamfer mm",
    "projection_psnr": "proj. PSNR dB",
    "psnr_slices": "PSNR slices dB",
    "psnr_3d_bone": "PSNR3D bone dB",
    "ssim_slices": "SSIM slices",
    "psnr_slices_x2ct_peak4095": "PSNR slices, peak 4095 (X2CT) dB",
    "params": "parameters",
    "model_mb": "weights MB",
    "infer_ms": "inference ms",
    "peak_mem_mb": "peak memory MB",
    "train_s_per_iter": "train s/iter",
    "iterations": "updates",
    "bone_dice_labels": "Dice of its bone class",
}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def _table(records: list[dict[str, Any]], names: tuple[str, ...], values: Any, best: bool) -> list[str]:
    """A Markdown table, one row per record; ``values(record)`` gives the columns; best values in bold."""
    columns = [values(record) for record in records]
    lines = ["| variant | " + " | ".join(HEADINGS[n] for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    winners = {}
    for i, name in enumerate(names):
        finite = [row[i] for row in columns if isinstance(row[i], (int, float)) and not math.isnan(row[i])]
        if best and finite and min(finite) != max(finite):  # a column of equal values has no winner
            winners[i] = min(finite) if name in LOWER_IS_BETTER else max(finite)
    for record, row in zip(records, columns):
        cells = [f"**{_cell(v)}**" if i in winners and winners[i] == v else _cell(v) for i, v in enumerate(row)]
        lines.append(f"| {record['variant']} | " + " | ".join(cells) + " |")
    return lines


def markdown(records: list[dict[str, Any]], ood_records: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The Markdown report: settings, Track B, Track A, efficiency, and out-of-distribution apart."""
    lines = ["# Side-by-side benchmark", ""]
    lines += [f"- {key}: {value}" for key, value in settings.items()]
    lines += ["", "Means over the held-out test cases; best in bold. Track B (physical, our primary):", ""]
    lines += _table(records, TRACK_B, lambda r: [r["track_b"][n] for n in TRACK_B], best=True)
    structured = [r for r in records if "structure" in r]
    if structured:
        lines += ["", "Networks that predict structure: their bone class against the thresholded CT's bone:", ""]
        names = ("bone_dice_labels", "bone_dice")
        lines += _table(
            structured, names, lambda r: [r["structure"]["bone_dice_labels"], r["track_b"]["bone_dice"]], False
        )
    lines += ["", "Track A (paper-compatible: bone only, zero-error slices = 100 dB; peak 4095 shown apart):", ""]
    lines += _table(records, TRACK_A, lambda r: [r["track_a"][n] for n in TRACK_A], best=True)
    lines += ["", "Efficiency (batch 1; training seconds include data loading and simulation):", ""]
    lines += _table(records, EFFICIENCY, lambda r: [r[n] for n in EFFICIENCY], best=False)
    lines += ["", "Methods:", ""] + [f"- `{r['variant']}`: {r['description']}" for r in records]
    if ood_records:
        lines += ["", f"## Out of distribution: {settings.get('ood')} (never mixed into the results above)", ""]
        lines += _table(ood_records, TRACK_B, lambda r: [r["track_b"][n] for n in TRACK_B], best=True)
    return "\n".join(lines) + "\n"


def write_results(
    out_dir: str | Path,
    records: list[dict[str, Any]],
    ood_records: list[dict[str, Any]],
    settings: dict[str, Any],
    figure: Image.Image,
    overwrite: bool = False,
) -> None:
    """Write every result file of the module docstring into ``out_dir`` (all formatted before the first is written)."""
    out_dir = Path(out_dir)
    means = [
        {
            "variant": r["variant"],
            **r["track_a"],
            **r["track_b"],
            **{n: r[n] for n in EFFICIENCY},
            "device": r["device"],
        }
        for r in records
    ]
    cases = [{"variant": r["variant"], **case} for r in records for case in r["cases"]]
    texts = {
        "results.json": json_text(records),
        "results.csv": csv_text(means),  # columns: every row's keys in first-seen order
        "cases.csv": csv_text(cases),
        "results.md": markdown(records, ood_records, settings),
    }
    if ood_records:
        texts["ood_results.json"] = json_text(ood_records)
    for name, text in texts.items():
        atomic_write(out_dir / name, lambda tmp, text=text: tmp.write_text(text), overwrite)
    atomic_write(out_dir / "comparison.png", figure.save, overwrite)


__all__ = ["OUTPUTS", "markdown", "write_results"]
