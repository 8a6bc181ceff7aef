"""Datalists for training and evaluation: generated phantoms, a folder of CTs, or a JSON datalist.

A datalist is a list of dicts, one per case, as MONAI datasets take them. Three sources give one:

- ``"phantom"``: ``n`` procedural phantoms, items ``{"case", "phantom_seed"}``; :class:`MakePhantomd`
  renders the CT and labels from the seed, so the data needs no download and is the same everywhere;
- a folder: every NIfTI/NRRD/MetaImage file and every folder holding a DICOM series below it,
  items ``{"case", "ct"}`` sorted by path;
- a JSON file: MONAI's datalist format (``{"training": [...], "validation": [...], "test": [...]}`` or
  a plain list) with paths relative to the file's folder.

Inference reads X-ray pairs: one pair, a JSON datalist of ``{"frontal", "lateral"}`` items, or a folder
(:func:`xray_folder_datalist`: ``<case>_frontal.png`` beside ``<case>_lateral.png``, or
``<case>/frontal.dcm`` beside ``<case>/lateral.dcm``), the layout the MONAI Label app's studies use too.

:func:`load_datalist` picks a split. Splits are deterministic: a datalist's own sections are used as
they are; otherwise the cases are shuffled with ``seed`` and cut by ``fractions``, so a given list
and seed always give the same train/val/test cases. Every transform before the first random one is
deterministic (phantom rendering, CT loading and canonicalisation), so ``monai.data.CacheDataset``
(memory) or ``PersistentDataset`` (disk) can keep their results and spare the CPU at each epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from custom.data.ct_files import DICOM_SUFFIXES, ITK_SUFFIXES, NIFTI_SUFFIXES
from custom.errors import InvalidInputError
from custom.files import has_dicom_marker, safe_case_id, visible_files
from custom.imaging.geometry import VIEW_NAMES, BiplanarGeometry
from custom.phantom import case_seed, make_phantom
from custom.phantom.labels import structure_map
from monai.data import MetaTensor
from monai.transforms import MapTransform

SPLITS = ("train", "val", "test")
_SECTIONS = {"train": "training", "val": "validation", "test": "test"}  # MONAI datalist section names
VIEW_TAG = re.compile(r"(^|[_-])(frontal|pa|ap|lateral|lat)$", re.IGNORECASE)  # a view named at a stem's end
VIEW_OF_TAG = {"frontal": "frontal", "pa": "frontal", "ap": "frontal", "lateral": "lateral", "lat": "lateral"}
XRAY_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".dicom", ".png", ".tif", ".tiff", ".jpg", ".jpeg")
PATH_KEYS = ("ct", "labels", "frontal", "lateral")  # item keys holding file paths


def phantom_datalist(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` phantom cases: ``{"case": "phantom_NNN", "phantom_seed": case_seed(seed, i)}``."""
    if n < 1:
        raise InvalidInputError(f"need at least one phantom case, got n={n}.")
    return [{"case": f"phantom_{i:03d}", "phantom_seed": case_seed(seed, i)} for i in range(n)]


LABEL_MAP_ENDINGS = ("_labels", "_label", "_seg", "_mask")  # volume names of label maps, not CTs


def _is_ct_file(path: Path) -> bool:
    """A NIfTI/NRRD/MetaImage volume whose name does not mark it as a label map."""
    name = path.name.lower()
    suffix = next((s for s in NIFTI_SUFFIXES + ITK_SUFFIXES if name.endswith(s)), None)
    return suffix is not None and not name[: -len(suffix)].endswith(LABEL_MAP_ENDINGS)


def _is_dicom_image(path: Path) -> bool:
    """A DICOM file by name or marker, other than a DICOMDIR (the index of an export)."""
    if path.name.upper() == "DICOMDIR":
        return False
    return path.suffix.lower() in DICOM_SUFFIXES[:-1] or has_dicom_marker(path)  # not "": any name


def ct_folder_datalist(root: str | os.PathLike) -> list[dict[str, Any]]:
    """Every CT below ``root``: volume files (NIfTI, NRRD, MetaImage) and DICOM series folders.

    A folder counts as one DICOM series if any of its own files is DICOM (a DICOMDIR does not count);
    :class:`~custom.data.ct_files.LoadCT` reports a folder that mixes series. Symbolic links to folders are
    followed (each real folder once, :func:`~custom.files.visible_files`). Hidden files and folders, and
    volumes named as label maps (ending in :data:`LABEL_MAP_ENDINGS` before the suffix, such as the
    phantom CLI's ``phantom_000_labels.nii.gz``), are skipped.

    Raises:
        ValueError: ``root`` is not a folder or holds no CT.
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a folder of CTs.")
    items = []
    for folder, files in visible_files(root):
        paths = [folder / name for name in files]
        items += [{"case": str(p.relative_to(root)), "ct": str(p)} for p in paths if _is_ct_file(p)]
        if any(_is_dicom_image(p) for p in paths):
            items.append({"case": str(folder.relative_to(root)) if folder != root else root.name, "ct": str(folder)})
    if not items:
        raise InvalidInputError(
            f"no CT found below {root} (looked for {NIFTI_SUFFIXES + ITK_SUFFIXES} and DICOM series)."
        )
    return sorted(items, key=lambda item: item["case"])


def _default_case(item: dict[str, Any]) -> str:
    """The name of an item without ``case``: its CT path as written, else its frontal X-ray's file name
    without its image suffix and a trailing view tag (``sample_frontal.png`` -> ``sample``; a file
    named only by its view, ``child07/pa.dcm``, takes its folder's name), else its content; all stable
    when the datalist and its data move."""
    if isinstance(item.get("ct"), str):
        return item["ct"]
    if isinstance(item.get("frontal"), str):
        path = Path(item["frontal"])
        return xray_stem(path)[0] or path.parent.name or path.name
    return json.dumps(item, sort_keys=True)


def json_datalist(path: str | os.PathLike) -> dict[str, list[dict[str, Any]]] | list[dict[str, Any]]:
    """A MONAI-style JSON datalist, with relative paths made absolute against the file's folder.

    Items without a ``case`` name get one from :func:`_default_case`, so splits do not change when the
    datalist and its data move.

    Returns the sections as ``{"train": ..., "val": ..., "test": ...}`` (those present) when the file
    has ``training`` / ``validation`` / ``test`` sections, else the plain list.

    Raises:
        ValueError: unreadable JSON, or neither a list nor a dict with a known section.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"cannot read the datalist {path}: {error}") from error
    base = path.parent

    def resolved(items: Any) -> list[dict[str, Any]]:
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise InvalidInputError(f"{path}: a datalist section must be a list of objects.")
        return [
            {
                "case": item.get("case", _default_case(item)),
                **{k: str(base / v) if k in PATH_KEYS and isinstance(v, str) else v for k, v in item.items()},
            }
            for item in items
        ]

    if isinstance(content, list):
        return resolved(content)
    sections = (
        {s: resolved(content[name]) for s, name in _SECTIONS.items() if name in content}
        if isinstance(content, dict)
        else {}
    )
    if not sections:
        raise InvalidInputError(f"{path}: expected a list of cases or sections {tuple(_SECTIONS.values())}.")
    return sections


def _draw(item: dict[str, Any], seed: int) -> float:
    """A number in [0, 1) fixed by the case (its ``case`` name, else its content) and the seed."""
    key = item.get("case", json.dumps(item, sort_keys=True, default=str))
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64


def split_datalist(
    items: Sequence[dict[str, Any]], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """Assign each case to train/val/test by a number drawn from its name and ``seed``.

    A case's split depends only on itself and the seed, so adding or removing cases never moves the
    others between splits (no leaks between experiments on growing data); the shares match
    ``fractions`` on average. A held-out split that would be empty although its fraction is positive
    takes the last-drawn case of the largest split, so tiny lists still get one validation and one
    test case.

    Raises:
        ValueError: fractions that are not three shares >= 0 summing to 1, or fewer cases than splits
            with a positive fraction.
    """
    fractions = [float(f) for f in fractions]
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1):
        raise InvalidInputError(
            f"fractions must be three shares (train, val, test) >= 0 summing to 1, got {fractions}."
        )
    if len(items) < sum(f > 0 for f in fractions):
        raise InvalidInputError(f"{len(items)} cases cannot be split by {fractions}.")
    bounds = np.cumsum(fractions)[:2]
    draws = sorted(((_draw(item, seed), i) for i, item in enumerate(items)))
    split: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for draw, i in draws:
        split[SPLITS[int(np.searchsorted(bounds, draw, side="right"))]].append(items[i])
    for name, fraction in zip(SPLITS[1:], fractions[1:]):
        if fraction > 0 and not split[name]:  # take the last-drawn case of the largest split
            donor = max((split[other] for other in SPLITS if other != name), key=len)
            split[name].append(donor.pop())
    return split


def load_datalist(
    source: str | os.PathLike,
    split: str | None = "train",
    n: int = 64,
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
) -> list[dict[str, Any]]:
    """One split (or all cases, ``split=None``) of the phantom set, a CT folder or a JSON datalist.

    Args:
        source: ``"phantom"``, a folder of CTs, or a ``.json`` datalist.
        split: ``train``, ``val``, ``test``, or ``all`` (or None) for every case. Defaults to ``train``.
        n: number of phantom cases. Defaults to 64.
        seed: seed of the phantom set and of the split. Defaults to 0.
        fractions: (train, val, test) shares where the source has no sections. Defaults to (0.8, 0.1, 0.1).

    Raises:
        ValueError: an unknown split, a missing source, or a JSON datalist without the requested section.
    """
    if split == "all":  # the command-line spelling of None
        split = None
    if split is not None and split not in SPLITS:
        raise InvalidInputError(f"split must be one of {SPLITS}, 'all' or None, got {split!r}.")
    if str(source) == "phantom":
        items = phantom_datalist(n, seed)
    elif Path(source).is_dir():
        items = ct_folder_datalist(source)
    elif Path(source).is_file() and str(source).lower().endswith(".json"):
        listed = json_datalist(source)
        if isinstance(listed, dict):  # the datalist's own sections
            if split is None:
                return [item for part in listed.values() for item in part]
            if split not in listed:
                raise InvalidInputError(f"{source} has no {_SECTIONS[split]!r} section (it has {sorted(listed)}).")
            return listed[split]
        items = cast("list[dict[str, Any]]", listed)  # sections were returned above (pytype does not narrow here)
    else:
        raise InvalidInputError(
            f"the data source must be 'phantom', a folder of CTs or a .json datalist; got {source!s}."
        )
    return list(items) if split is None else split_datalist(items, fractions, seed)[split]


def xray_stem(path: str | os.PathLike) -> tuple[str, str | None]:
    """A file's name without its X-ray suffix, split into the case part and the view its tag names.

    ``child07_frontal.png`` -> ``("child07", "frontal")``, ``lat.dcm`` -> ``("", "lateral")``,
    ``sample.png`` -> ``("sample", None)``.
    """
    name = Path(path).name
    name = next((name[: -len(s)] for s in XRAY_SUFFIXES if name.lower().endswith(s)), name)
    tag = VIEW_TAG.search(name)
    return (name[: tag.start()], VIEW_OF_TAG[tag.group(2).lower()]) if tag else (name, None)


def xray_folder_datalist(root: str | os.PathLike) -> list[dict[str, Any]]:
    """The X-ray pairs in a folder: files named by their view, paired by the rest of their name.

    A file of an X-ray format (:data:`XRAY_SUFFIXES`) whose name ends in a view tag (``_frontal``,
    ``_pa``, ``_ap``, ``_lateral``, ``_lat``) belongs to the case its name gives before the tag, or,
    named only by its view (``frontal.dcm``), to the case of its folder; the folder's subfolders are
    searched too (symbolic links followed, each real folder once), hidden ones skipped, and a case
    below ``root`` is named by its path from ``root``
    (``a/child07``), so equal names in different folders stay apart. ``root/child07_pa.png`` and
    ``root/child07_lat.png`` make case ``child07``; so do ``root/child07/frontal.dcm`` and
    ``root/child07/lateral.dcm``.

    Returns:
        ``{"case", "frontal", "lateral"}`` items sorted by case.

    Raises:
        ValueError: ``root`` is not a folder, holds no tagged X-ray, or a case lacks a view or has two
            files for one view (all such cases named at once).
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a folder of X-ray pairs.")
    views: dict[str, dict[str, list[str]]] = {}
    for folder, files in visible_files(root):
        for name in files:
            stem, view = xray_stem(name)
            if view is None or not name.lower().endswith(XRAY_SUFFIXES):
                continue
            place = folder.relative_to(root)  # "." at the top
            case = str(place / stem) if stem else (str(place) if place != Path(".") else root.name)
            views.setdefault(case, {}).setdefault(view, []).append(str(folder / name))
    if not views:
        raise InvalidInputError(
            f"no X-ray pair found in {root}: name the files <case>_frontal.<ext> and <case>_lateral.<ext>."
        )
    problems = [
        f"{case!r} has {len(found.get(view, []))} {view} files {found.get(view, [])}"
        for case, found in sorted(views.items())
        for view in VIEW_NAMES
        if len(found.get(view, [])) != 1
    ]
    if problems:
        raise InvalidInputError(f"{root}: every case needs exactly one file per view; " + "; ".join(problems) + ".")
    return [{"case": case, **{view: found[view][0] for view in VIEW_NAMES}} for case, found in sorted(views.items())]


def xray_pair(path: str | os.PathLike) -> dict[str, Any]:
    """The case one X-ray belongs to, with its other view found beside it (or the one pair in a folder).

    ``child07_pa.png`` finds ``child07_lat.png`` (or ``child07_lateral.dcm``, any X-ray format) in its
    folder, the naming of :func:`xray_folder_datalist`; a folder must hold exactly one pair.

    Returns:
        ``{"case", "frontal", "lateral"}``.

    Raises:
        ValueError: the name carries no view tag, the other view is missing or ambiguous, or a folder
            holds no pair or several.
    """
    path = Path(path)
    if path.is_dir():
        items = xray_folder_datalist(path)
        if len(items) != 1:
            raise InvalidInputError(f"{path} holds {len(items)} X-ray pairs ({[i['case'] for i in items]}); give one.")
        return items[0]
    case, view = xray_stem(path)
    if view is None:
        raise InvalidInputError(
            f"{path.name} does not say its view: name the X-rays <case>_frontal.<ext> and <case>_lateral.<ext>."
        )
    other = next(v for v in VIEW_NAMES if v != view)
    files = [p for p in sorted(path.parent.iterdir()) if p.is_file() and p.name.lower().endswith(XRAY_SUFFIXES)]
    partners = [p for p in files if xray_stem(p) == (case, other)]
    if len(partners) != 1:
        found = [p.name for p in partners]
        raise InvalidInputError(f"{path.name}: expected one {other} X-ray of case {case!r} beside it, found {found}.")
    views = {view: str(path), other: str(partners[0])}
    return {"case": case or path.parent.name, **{v: views[v] for v in VIEW_NAMES}}


def xray_datalist(
    datalist: str | os.PathLike | None = None,
    frontal: str | os.PathLike | None = None,
    lateral: str | os.PathLike | None = None,
    case: str | None = None,
    folder: str | os.PathLike | None = None,
    sample: Mapping[str, str | os.PathLike] | None = None,
) -> list[dict[str, Any]]:
    """The cases to reconstruct: ``{"case", "frontal", "lateral"}`` items, from a datalist, a folder or one pair.

    Args:
        datalist: a JSON datalist whose items name a ``frontal`` and a ``lateral`` X-ray file (relative
            paths are against the file's folder); with sections, the ``test`` section is used.
        frontal, lateral: one case's two files, used when ``datalist`` and ``folder`` are None. Both
            or neither: one alone is an error, never paired with some other X-ray.
        case: that case's name. Defaults to the frontal file's name without suffixes and view tag.
        folder: a folder of X-ray pairs (:func:`xray_folder_datalist`), used when ``datalist`` is None.
        sample: ``{"frontal", "lateral"}`` files to use when no input is given at all (the bundle's
            sample pair). Defaults to None: no input is an error.

    The list is checked here (every case names both views, no two cases share output files); the
    files themselves are opened by :mod:`custom.data.preflight`, every case before any runs, so one
    message names every bad case.

    Raises:
        InvalidInputError: no input (and no ``sample``), only one view given, a case without both
            views, or two cases whose names give the same output files (:func:`safe_case_id`).
    """
    if datalist is not None:
        items = json_datalist(datalist)
        if isinstance(items, dict):
            if "test" not in items:
                raise InvalidInputError(f"{datalist} has no 'test' section of X-ray pairs (it has {sorted(items)}).")
            items = items["test"]
    elif folder is not None:
        items = xray_folder_datalist(folder)
    elif frontal is not None and lateral is not None:
        item = {"frontal": str(frontal), "lateral": str(lateral)}
        items = [{"case": case if case is not None else _default_case(item), **item}]
    elif frontal is not None or lateral is not None:
        given, missing = ("frontal", "lateral") if frontal is not None else ("lateral", "frontal")
        raise InvalidInputError(
            f"only the {given} X-ray was given ({frontal if frontal is not None else lateral}); give the {missing} "
            f"one too (--{missing} FILE): a reconstruction needs both views of the same child."
        )
    elif sample is not None:
        item = {view: str(sample[view]) for view in VIEW_NAMES}
        items = [{"case": case if case is not None else _default_case(item), **item}]
    else:
        raise InvalidInputError(
            "give a frontal and a lateral X-ray file (--frontal, --lateral), a folder of pairs (--dataset_dir) "
            "or a datalist of pairs (--input_datalist)."
        )
    names: dict[str, Any] = {}  # output stem -> the case that takes it
    for item in items:
        case = item.get("case")
        missing = [view for view in VIEW_NAMES if not item.get(view)]
        if missing:
            raise InvalidInputError(f"case {case!r} has no {' and no '.join(missing)} X-ray; both views are needed.")
        stem = safe_case_id(case)
        if stem in names:
            raise InvalidInputError(
                f"cases {names[stem]!r} and {case!r} would both be written as {stem!r}; name them apart."
            )
        names[stem] = case
    return items


class MakePhantomd(MapTransform):
    """Render the phantom of each item's seed: adds the CT (HU), its labels and its parameters.

    Args:
        geometry: the CT grid.
        seed_key: the item key holding the phantom's seed. Defaults to ``"phantom_seed"``.
        ct_key: where the (1, X, Y, Z) HU MetaTensor goes. Defaults to ``"ct"``.
        label_key: where the (1, X, Y, Z) uint8 label MetaTensor goes. Defaults to ``"labels"``.
        parameters_key: where the parameters go, as a JSON string (collates into a batch).
            Defaults to ``"phantom"``.
        vocabulary: the label map's classes: ``tissues`` (:data:`custom.phantom.LABELS`) or
            ``structures`` (:data:`custom.phantom.STRUCTURES`, bones and open sutures for SPIDER).
            Defaults to ``tissues``.
        allow_missing_keys: leave items without a seed unchanged. Defaults to False.
        **options: :func:`custom.phantom.sample_parameters` arguments (e.g. ``age_months``,
            ``variant``, ``pose``) applied to every case.
    """

    def __init__(
        self,
        geometry: BiplanarGeometry,
        seed_key: Hashable = "phantom_seed",
        ct_key: Hashable = "ct",
        label_key: Hashable = "labels",
        parameters_key: Hashable = "phantom",
        allow_missing_keys: bool = False,
        vocabulary: str = "tissues",
        **options: Any,
    ) -> None:
        super().__init__(seed_key, allow_missing_keys)
        if vocabulary not in ("tissues", "structures"):
            raise ValueError(f"vocabulary must be tissues or structures, got {vocabulary!r}.")
        self.geometry, self.vocabulary = geometry, vocabulary
        self.ct_key, self.label_key, self.parameters_key = ct_key, label_key, parameters_key
        self.options = options

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            phantom = make_phantom(int(d[key]), self.geometry, **self.options)
            affine = torch.as_tensor(self.geometry.affine)
            d[self.ct_key] = MetaTensor(phantom.hu[None], affine=affine)
            labels = phantom.labels
            if self.vocabulary == "structures":
                labels = structure_map(phantom.labels, phantom.bones, phantom.openings)
            d[self.label_key] = MetaTensor(labels[None], affine=affine)
            d[self.parameters_key] = json.dumps(phantom.parameters.to_dict())
        return d


__all__ = [
    "LABEL_MAP_ENDINGS",
    "PATH_KEYS",
    "SPLITS",
    "MakePhantomd",
    "ct_folder_datalist",
    "json_datalist",
    "load_datalist",
    "phantom_datalist",
    "xray_folder_datalist",
    "xray_pair",
    "xray_stem",
    "xray_datalist",
    "split_datalist",
]
