"""What inference checks before it computes anything: the weights, every case's X-rays, the output folder.

The bundle's inference (``configs/inference.json``) runs these as the first steps of ``inference``,
before the network's weights are loaded or any case is reconstructed, so that a bad input costs
seconds, not the reconstructions that came before it (``initialize`` stays free of them, so
``monai.bundle.load`` neither reads X-rays nor creates folders). The dataset reads its cases from
:func:`inference_cases` too, so any other way of running the pipeline (the MONAI Label app) checks
them as well:

1. :func:`inference_cases`:

   - every case's two X-rays are loaded exactly as the network will see them (readable, 2D, finite,
     not constant, at least :data:`~custom.data.xray.MIN_XRAY_PIXELS` on a side); a view magnified
     by more than :data:`~custom.data.xray.MAX_UPSAMPLING` onto the detector gets a warning;
   - bad cases fail the run before anything is written, all of them named in one message; with
     ``skip_bad_cases`` they are left out instead, and listed (with their reasons) in the report
     ``skipped_cases_<date>-<time>.json`` in the output folder;
   - the output folder must be creatable and writable; what a killed run left there is finished or
     removed (:func:`custom.files.recover_staged`);
   - no case may replace an earlier result unless ``overwrite``.
2. :func:`check_weights`: the weights file exists, is a checkpoint, and fits the network built
   from the config's geometry and network settings (same tensor names and shapes).

Every refusal is a :class:`~custom.errors.UserError`, which ``python -m monai.bundle run`` reports in one
line (:func:`custom.errors.report_user_errors`).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from custom.data.xray import MAX_UPSAMPLING
from custom.errors import ExistingOutputError, InvalidInputError, MissingInputError, one_line
from custom.files import check_output_folder, recover_staged, write_json

logger = logging.getLogger(__name__)
SHOWN = 5  # names given in a message before "and N more"


def _listing(names: Sequence[str]) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 7 more``."""
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def check_weights(path: str | os.PathLike, network: torch.nn.Module) -> Path:
    """Check that ``path`` holds weights for ``network``: the same tensor names, each of the same shape.

    Accepts a plain ``state_dict`` or MONAI's ``{"model": state_dict}``, as the bundle's
    ``CheckpointLoader`` does.

    Raises:
        MissingInputError: no file at ``path``.
        InvalidInputError: not a weights file, or weights of another network or geometry (the message
            gives the first differences).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"no weights at {path}: give the weights file with --ckpt_path.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch raises many kinds for a file that is not a checkpoint
        raise InvalidInputError(f"{path} is not a weights file torch can read ({one_line(error)}).") from error
    if isinstance(state, Mapping) and set(state) == {"model"}:
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidInputError(f"{path} holds no state_dict of tensors.")
    expected = network.state_dict()
    differences = [f"{name} is missing" for name in expected if name not in state]
    differences += [f"{name} is not in the network" for name in state if name not in expected]
    differences += [
        f"{name} is {tuple(state[name].shape)}, the network's is {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    if differences:
        raise InvalidInputError(
            f"the weights in {path} do not fit the network the config builds ({len(differences)} differences: "
            f"{_listing(differences)}); use the geometry and network settings they were trained with."
        )
    return path


def _upsampling_warnings(item: Mapping[str, Any], loaded: Mapping[str, Any], views: Iterable[str]) -> list[str]:
    """A sentence for each view magnified more than :data:`MAX_UPSAMPLING` output pixels per native pixel."""
    metas = (getattr(value, "meta", None) for value in loaded.values())  # the stacked views, whatever their key
    meta = next((m for m in metas if isinstance(m, Mapping) and any(f"{v}_zoom" in m for v in views)), {})
    found = []
    for view in views:
        zoom = max(meta.get(f"{view}_zoom", (1.0,)))
        if zoom > MAX_UPSAMPLING:
            rows, columns = meta.get(f"{view}_native_shape", ("?", "?"))
            found.append(
                f"case {item.get('case')!r}: the {view} X-ray {item.get(view)} ({rows} x {columns} pixels) is "
                f"magnified {zoom:.1f}x onto the detector; it holds less detail than the network was trained on."
            )
    return found


def inference_cases(
    datalist: Sequence[Mapping[str, Any]],
    load: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    paths: Callable[[Any], Mapping[str, Path]],
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    skip_bad_cases: bool = False,
    views: Sequence[str] = ("frontal", "lateral"),
) -> list[dict[str, Any]]:
    """The cases inference will reconstruct, after checking every input and the output folder.

    Args:
        datalist: ``{"case", "frontal", "lateral"}`` items (:func:`custom.data.datasets.xray_datalist`).
        load: loads one item as the pipeline will (``LoadXRayd``); its errors name the file.
        paths: the files a case writes (``SaveReconstructiond.paths``).
        output_dir: the folder the results go to.
        overwrite: whether results may replace earlier ones. Defaults to False.
        skip_bad_cases: leave out cases whose X-rays cannot be used (listed in a report) instead of
            refusing the run. Defaults to False.
        views: the item keys of the X-ray files. Defaults to frontal and lateral.

    Returns:
        The items to reconstruct, in order.

    Raises:
        InvalidInputError: a bad case (without ``skip_bad_cases``), or no usable case at all.
        OutputFolderError: the output folder cannot be created or written to.
        ExistingOutputError: a case would overwrite a result and ``overwrite`` is False.
    """
    # 1. every case's X-rays, loaded as the network will see them
    good, bad = [], []
    for item in datalist:
        try:
            loaded = load(dict(item))
        except (ValueError, OSError) as error:  # the readers' refusals: they name the file
            bad.append({**{k: str(v) for k, v in item.items()}, "reason": one_line(error)})
            continue
        for sentence in _upsampling_warnings(item, loaded, views):
            warnings.warn(sentence, stacklevel=2)
        good.append(dict(item))
    if bad and not skip_bad_cases:
        reasons = "; ".join(f"case {b.get('case')!r}: {b['reason'].rstrip('.')}" for b in bad)
        raise InvalidInputError(
            f"{len(bad)} of {len(datalist)} cases cannot be reconstructed, so nothing was: {reasons}. "
            "Fix or remove them, or pass --skip_bad_cases true to reconstruct the others."
        )
    if not good:
        raise InvalidInputError(f"none of the {len(datalist)} cases can be reconstructed: {bad[0]['reason']}")
    # 2. the output folder: usable, what killed runs left settled, no result replaced by surprise
    folder = check_output_folder(output_dir)
    for line in recover_staged(folder):
        logger.warning(line)
    existing = [str(p) for item in good for p in paths(item["case"]).values() if p.exists()]
    if existing and not overwrite:
        raise ExistingOutputError(
            f"{len(existing)} results of an earlier run are in the way in {folder}: {_listing(existing)}; "
            "remove them, choose another --output_dir, or pass --overwrite true."
        )
    # 3. the report of skipped cases
    if bad:
        report = folder / f"skipped_cases_{time.strftime('%Y%m%d-%H%M%S')}.json"
        content = {"reconstructed": len(good), "skipped": bad}
        write_json(report, content)
        logger.warning(f"skipped {len(bad)} of {len(datalist)} cases; see {report}.")
    return good


__all__ = ["SHOWN", "check_weights", "inference_cases"]
