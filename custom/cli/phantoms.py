"""Command line of the phantoms: ``python -m custom.cli.phantoms generate|validate|fit``.

- ``generate --out DIR --n 8``: volumes, label maps, parameters and a montage to look at;
- ``validate --out DIR``: the realism report (:mod:`custom.phantom.realism`) with its montage beside
  DRRs of the real scans in ../shared/data (skipped when absent);
- ``fit --anatomy_dir ../shared/data/anatomy``: rebuild the committed compact atlas from the source data.

Every command writes all of its files or none, and refuses to overwrite unless told to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from custom.cli import run_commands
from custom.files import atomic_write, json_text, refuse_existing
from custom.imaging.geometry import BiplanarGeometry
from custom.phantom import realism
from custom.phantom.atlas import PACKAGED, build_atlas, load_atlas, save_atlas
from custom.phantom.render import case_seed, make_phantom
from PIL import Image

MONTAGE_ROWS = 16  # cases shown in generate's montage
REAL_SCANS = ("ct/skull_phantom_bone_1mm.nii.gz", "ct/head_ct_template_2mm.nii.gz")  # under ../shared/data


def _stack(rows: list[Image.Image]) -> Image.Image:
    """Pictures one under the other."""
    picture = Image.new("L", (max(r.width for r in rows), sum(r.height for r in rows)))
    for k, row in enumerate(rows):
        picture.paste(row, (0, sum(r.height for r in rows[:k])))
    return picture


def _write_all(files: dict[Path, Callable[[Path], None]], overwrite: bool) -> None:
    """Write ``{path: writer(temporary_path)}`` atomically, all or none (earlier ones removed on failure)."""
    refuse_existing(files, overwrite)
    written = []
    try:
        for path, write in files.items():
            written.append(atomic_write(path, write, overwrite))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def generate(
    out: str,
    n: int = 8,
    seed: int = 0,
    age: float | None = None,
    variant: str | None = None,
    size: int = 128,
    spacing: float = 1.5,
    pose: bool = True,
    anatomy_dir: str | None = None,
    overwrite: bool = False,
) -> None:
    """Write ``n`` phantoms and a montage to look at.

    Files in ``out``: ``phantom_NNN.nii.gz`` (HU, int16, RAS affine of the grid),
    ``phantom_NNN_labels.nii.gz`` (tissues), ``phantom_NNN_bones.nii.gz`` (bones),
    ``phantom_NNN_openings.nii.gz`` (open sutures and fontanelles; see :mod:`custom.phantom.labels`),
    ``phantoms.json`` (the parameters of each case and its generation time) and ``montage.png`` (one row
    per case for the first :data:`MONTAGE_ROWS`: axial, coronal and sagittal slices, then the frontal
    and lateral X-rays simulated with the default detector).

    Args:
        out: output folder.
        n: number of cases. Defaults to 8.
        seed: seed of the set; case i uses ``case_seed(seed, i)``. Defaults to 0.
        age: age of every case, months. Defaults to drawn per case.
        variant: vault type of every case (see :data:`custom.phantom.VAULT_TYPES`). Defaults to drawn per case.
        size: grid voxels per axis, and detector pixels per side. Defaults to 128.
        spacing: voxel size, mm. Defaults to 1.5.
        pose: random head pose. Defaults to True.
        anatomy_dir: the source anatomy data (full resolution). Defaults to the committed atlas.
        overwrite: replace existing files. Defaults to False (then nothing is written if any exists).
    """
    from custom.data.simulate import SimulateBiplanarXRay  # pictures and files only: a light import
    from custom.outputs.montage import montage

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    folder = Path(out)
    names = [f"phantom_{i:03d}" for i in range(n)]
    suffixes = (".nii.gz", "_labels.nii.gz", "_bones.nii.gz", "_openings.nii.gz")
    refuse_existing([folder / f"{name}{s}" for name in names for s in suffixes] + [folder / "phantoms.json"], overwrite)
    geometry = BiplanarGeometry(vol_shape=(size,) * 3, vol_spacing=spacing, det_shape=(size, size))
    simulate = SimulateBiplanarXRay(geometry)
    files, records, rows = {}, [], []
    for i, name in enumerate(names):
        tick = time.perf_counter()
        phantom = make_phantom(case_seed(seed, i), geometry, anatomy_dir, age_months=age, variant=variant, pose=pose)
        seconds = time.perf_counter() - tick
        volumes = {
            ".nii.gz": phantom.hu.round().clamp(-32768, 32767).numpy().astype(np.int16),
            "_labels.nii.gz": phantom.labels.numpy(),
            "_bones.nii.gz": phantom.bones.numpy(),
            "_openings.nii.gz": phantom.openings.numpy(),
        }
        for suffix, array in volumes.items():
            image = nib.Nifti1Image(array, geometry.affine)
            files[folder / f"{name}{suffix}"] = lambda tmp, image=image: nib.save(image, tmp)
        p = phantom.parameters
        title = f"{name}: {p.age_months:.1f} months, {p.sex}, {p.variant}, seed {p.seed}"
        if i < MONTAGE_ROWS:
            rows.append(montage(phantom.hu, simulate(phantom.hu), title, height=160))
        records.append({"name": name, "seconds": round(seconds, 3), **p.to_dict()})
        print(f"{title}  ({seconds:.2f} s)")
    text = json_text({"geometry": geometry.to_dict(), "atlas": anatomy_dir or "packaged", "cases": records})
    picture = _stack(rows)
    files[folder / "montage.png"] = lambda tmp: picture.save(tmp, format="PNG")
    files[folder / "phantoms.json"] = lambda tmp: tmp.write_text(text)
    _write_all(files, overwrite)
    print(f"wrote {n} phantoms, phantoms.json and montage.png to {folder}")


def _real_scan_rows(geometry: BiplanarGeometry, data_dir: Path) -> tuple[list[Image.Image], list[str]]:
    """Montage rows of the real scans that load as HU heads (CT slices and their DRRs), and notes."""
    from custom.data.canonicalise import CanonicaliseCT
    from custom.data.ct_files import LoadCT
    from custom.data.simulate import SimulateBiplanarXRay
    from custom.outputs.montage import montage

    rows, notes = [], []
    simulate = SimulateBiplanarXRay(geometry)
    for relative in REAL_SCANS:
        path = data_dir / relative
        if not path.is_file():
            notes.append(f"{relative}: absent")
            continue
        try:
            hu = CanonicaliseCT(geometry)(LoadCT()(path))[0]
        except ValueError as error:
            notes.append(f"{relative}: skipped ({error})")
            continue
        rows.append(montage(hu, simulate(hu), f"real scan: {relative}", height=160))
    return rows, notes


def validate(
    out: str,
    per_age: int = 12,
    seed: int = 0,
    data_dir: str = "../shared/data",
    anatomy_dir: str | None = None,
    overwrite: bool = False,
) -> None:
    """The realism report: ``realism.json``, ``realism.md`` and ``montage.png`` in ``out``.

    Cohorts of ``per_age`` normal cases (alternating sex) at 0, 6, 12 and 24 months are measured against
    the WHO and normative tables (see :mod:`custom.phantom.realism`); ``per_age`` sagittal synostoses at
    12 months check the cephalic index (scaphocephaly: below 76). The montage shows one normal case per
    age and one of each synostosis, then the real scans under ``data_dir`` (when present).
    """
    from custom.data.simulate import SimulateBiplanarXRay
    from custom.outputs.montage import montage

    folder = Path(out)
    targets = [folder / name for name in ("realism.json", "realism.md", "montage.png")]
    refuse_existing(targets, overwrite)
    atlas = load_atlas(anatomy_dir)
    geometry = BiplanarGeometry()
    tick = time.perf_counter()
    rows = realism.cohort(per_age=per_age, seed=seed, anatomy_dir=anatomy_dir)
    summary = realism.summarise(rows, atlas)
    sagittal = realism.cohort(ages=(12.0,), per_age=per_age, seed=seed, variant="sagittal", anatomy_dir=anatomy_dir)
    sagittal_index = float(np.mean([r["cephalic_index"] for r in sagittal]))
    simulate = SimulateBiplanarXRay(geometry)
    pictures = []
    for k, (age, variant) in enumerate(
        [(a, "normal") for a in realism.AGES_MONTHS]
        + [(12.0, v) for v in ("metopic", "sagittal", "left_coronal", "right_coronal")]
    ):
        phantom = make_phantom(case_seed(seed + 1, k), geometry, anatomy_dir, age_months=age, variant=variant)
        p = phantom.parameters
        pictures.append(
            montage(phantom.hu, simulate(phantom.hu), f"phantom: {age:g} months, {p.sex}, {variant}", height=160)
        )
    real_rows, notes = _real_scan_rows(geometry, Path(data_dir))
    picture = _stack(pictures + real_rows)
    report = {
        "atlas": atlas.source,
        "per_age": per_age,
        "seconds": round(time.perf_counter() - tick, 1),
        "summary": summary,
        "all_within": all(r["within"] for r in summary),
        "sagittal_synostosis_12_months": {"cephalic_index": round(sagittal_index, 2), "below_76": sagittal_index < 76},
        "cases": rows + sagittal,
        "real_scans": notes or "all shown",
    }
    lines = [
        "| age (months) | statistic | cohort mean | SD | reference | tolerance | within |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r['age_months']:g} | {r['statistic']} | {r['mean']} | {r['sd']} | {r['reference']} | "
            f"{r['tolerance']} | {'yes' if r['within'] else 'NO'} |"
            for r in summary
        ],
        "",
        f"Sagittal synostosis at 12 months: cephalic index {sagittal_index:.1f} (scaphocephaly below 76).",
    ]
    _write_all(
        {
            targets[0]: lambda tmp: tmp.write_text(json_text(report)),
            targets[1]: lambda tmp: tmp.write_text("\n".join(lines) + "\n"),
            targets[2]: lambda tmp: picture.save(tmp, format="PNG"),
        },
        overwrite,
    )
    print("\n".join(lines))


def fit(anatomy_dir: str, out: str | None = None, overwrite: bool = False) -> None:
    """Rebuild the compact atlas from the source data in ``anatomy_dir`` into ``out`` (default: the packaged
    ``custom/phantom/anatomy.npz``)."""
    out = str(PACKAGED) if out is None else out
    atlas = build_atlas(anatomy_dir, full=False)
    atomic_write(out, lambda tmp: save_atlas(atlas, tmp), overwrite)
    print(f"wrote {out}")


def main() -> None:
    run_commands({"generate": generate, "validate": validate, "fit": fit})


__all__ = ["fit", "generate", "main", "validate"]


if __name__ == "__main__":
    main()
