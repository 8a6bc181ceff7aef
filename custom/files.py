"""Files in and out: outputs complete or absent and never silently replaced, folders scanned safely.

- :func:`atomic_write` and :func:`atomic_folder` write one file or one folder through a temporary
  beside it, moved into place when complete.
- :func:`write_together` writes several outputs (a case's CT, labels, DICOM series, mesh, preview) as
  one: into a staging folder, committed by a journal, then moved into place. A failure removes the
  staging folder; a kill leaves it behind, and :func:`recover_staged` (called by the next run before it
  writes) finishes a committed one and removes an uncommitted one, so a folder of results only ever
  shows whole cases.
- :func:`check_output_folder` finds an output folder that cannot be created or written before any work.
- :func:`safe_case_id` turns a case name into a file name that stays inside its output folder.
- :func:`visible_files` walks a folder tree as the datalist builders need: hidden entries skipped,
  symbolic links to folders followed, each real folder visited once (no link loop can trap it).
- :func:`write_json` and :func:`write_csv` write records as every result file of the package is
  written: strict JSON (indented by 4; non-finite floats as the strings ``"inf"``, ``"-inf"``,
  ``"nan"``, so any JSON reader takes it) and CSV (a header, ``\n`` line ends, blank cells where a row
  has no value or None), atomically and never silently replacing a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from custom.errors import ExistingOutputError, OutputFolderError

MAX_CASE_ID_LENGTH = 120  # characters of a case id in file names
STAGING_PREFIX = ".staging."  # write_together's staging folders: .staging.<pid>.<random>
JOURNAL = ".committed"  # in a staging folder: the entries to move into place, one name per line


def safe_case_id(case: Any) -> str:
    """A file-name-safe case id: letters, digits, ``.``, ``_`` and ``-`` kept, anything else as ``_``.

    Path separators and ``..`` cannot survive, and leading or trailing ``.``, ``_`` and ``-`` are
    dropped, so ``output_dir / case`` stays inside ``output_dir`` and is not hidden or taken for an
    option. Raises ValueError for a name with no usable character.
    """
    text = re.sub(r"\.{2,}", "_", re.sub(r"[^A-Za-z0-9._-]", "_", str(case))).strip("._-")[:MAX_CASE_ID_LENGTH]
    if not text:
        raise ValueError(f"case id {case!r} has no character usable in a file name.")
    return text


def refuse_existing(paths: Iterable[str | os.PathLike], overwrite: bool = False) -> None:
    """Raise :class:`~custom.errors.ExistingOutputError` naming every path that exists, unless ``overwrite``.

    Check all outputs of a command with this before writing the first, so a refusal writes nothing.
    """
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise ExistingOutputError(
            f"refusing to overwrite {existing}; remove them, write elsewhere, or ask to overwrite "
            "(overwrite=True, --overwrite true)."
        )


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Write ``path`` through ``write(temporary_path)`` and move it into place only when complete.

    The temporary file sits in the same folder and has the same suffixes (so writers that choose a
    format by extension, such as nibabel, still work); it is removed if ``write`` fails.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    refuse_existing([path], overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix="".join(path.suffixes))
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, normal_mode())  # mkstemp makes it private; give it a normal file's mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def has_dicom_marker(path: str | os.PathLike) -> bool:
    """Whether a file carries the DICOM Part 10 marker ("DICM" after the 128-byte preamble).

    DICOM files are often named by UID or have no extension; this recognises them by content.
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def atomic_folder(folder: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Write the folder ``folder`` through ``write(staging_folder)`` and move it into place only when complete.

    The staging folder sits beside ``folder`` (the same file system, so the move is a rename). With
    ``overwrite`` an existing ``folder`` is swapped out whole and then removed; if ``write`` fails, the
    staging folder is removed and an existing ``folder`` stays as it was.

    Raises:
        FileExistsError: ``folder`` exists and ``overwrite`` is False.
    """
    folder = Path(folder)
    refuse_existing([folder], overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        write(staging)
        os.chmod(staging, normal_mode(directory=True))  # mkdtemp makes it private
        if folder.exists():  # swap the complete new folder in, then drop the old one
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old."))  # empty: a target
            os.replace(folder, old)
            os.replace(staging, folder)
            shutil.rmtree(old)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def normal_mode(directory: bool = False) -> int:
    """The permission bits a new file (or folder) gets under the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def check_output_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and make sure a file can be written in it; before any work is done.

    Raises:
        OutputFolderError: ``folder`` or a folder above it is a file, or the folder cannot be created
            or written to (the message gives the system's reason).
    """
    folder = Path(folder)
    above = next((p for p in (folder, *folder.parents) if p.exists() or p.is_symlink()), None)
    if above is not None and not above.is_dir():
        where = "is a file" if above == folder else f"cannot be created: {above} is a file"
        raise OutputFolderError(f"the output folder {folder} {where}; give a folder (--output_dir).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputFolderError(f"cannot write to the output folder {folder}: {error.strerror or error}.") from error
    return folder


def write_together(folder: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False) -> list[Path]:
    """Write a group of outputs into ``folder`` as one: all of them, or none.

    ``write(staging)`` creates the outputs (files or folders) in an empty staging folder inside
    ``folder``; each entry it leaves there is then moved to ``folder / entry.name``. The steps: write,
    check that no output exists (unless ``overwrite``), commit (the journal :data:`JOURNAL` lists the
    entries), move each into place (an existing one is first moved aside into the staging folder),
    remove the staging folder. A failure before the commit removes the staging folder and writes
    nothing; a kill leaves the staging folder for :func:`recover_staged`.

    Returns:
        The outputs' paths in ``folder``, sorted by name.

    Raises:
        ExistingOutputError: an output exists and ``overwrite`` is False (nothing is written).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f"{STAGING_PREFIX}{os.getpid()}."))
    try:
        write(staging)
        names = sorted(p.name for p in staging.iterdir() if not p.name.startswith("."))
        refuse_existing([folder / name for name in names], overwrite)
        atomic_write(staging / JOURNAL, lambda tmp: tmp.write_text("".join(f"{name}\n" for name in names)))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _move_into_place(staging, folder)
    return [folder / name for name in names]


def _move_into_place(staging: Path, folder: Path) -> None:
    """Move a committed staging folder's entries to ``folder`` (outputs there are replaced), then drop it."""
    names = (staging / JOURNAL).read_text().split()
    replaced = staging / ".replaced"
    for name in names:
        entry, target = staging / name, folder / name
        if not entry.exists():  # moved before a kill
            continue
        if target.exists() or target.is_symlink():
            replaced.mkdir(exist_ok=True)
            os.replace(target, replaced / name)
        os.chmod(entry, normal_mode(directory=entry.is_dir()))
        os.replace(entry, target)
    shutil.rmtree(staging)


def _process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (signal 0 probes without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def recover_staged(folder: str | os.PathLike) -> list[str]:
    """Finish or remove what killed runs left in ``folder`` by :func:`write_together`.

    A staging folder whose process (the pid in its name) no longer runs is finished when it was
    committed (its outputs are complete: they are moved into place) and removed otherwise. Staging
    folders of running processes are left alone.

    Returns:
        One line per staging folder handled, saying what was done.
    """
    folder = Path(folder)
    done: list[str] = []
    for staging in sorted(folder.glob(f"{STAGING_PREFIX}*")) if folder.is_dir() else []:
        pid = staging.name[len(STAGING_PREFIX) :].split(".")[0]
        if not staging.is_dir() or not pid.isdigit() or _process_alive(int(pid)):
            continue
        if (staging / JOURNAL).is_file():
            names = (staging / JOURNAL).read_text().split()
            _move_into_place(staging, folder)
            done.append(f"{staging}: a killed run's complete outputs moved into place: {names}")
        else:
            shutil.rmtree(staging)
            done.append(f"{staging}: a killed run's incomplete outputs removed")
    return done


def visible_files(root: str | os.PathLike) -> Iterator[tuple[Path, list[str]]]:
    """Each folder below ``root`` (``root`` first) with its visible files' names, both sorted.

    Hidden files and folders (names starting with ``.``) are skipped. Symbolic links to folders are
    followed, but a real folder is visited once only, so links that loop back (or point to a folder
    seen already) are not followed again.
    """
    seen: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        yield Path(folder), sorted(f for f in files if not f.startswith("."))


def _json_values(value: Any) -> Any:
    """``value`` ready for strict JSON: non-finite floats as the strings ``"inf"``, ``"-inf"``, ``"nan"``.

    Dicts, lists and tuples are converted recursively (tuples become lists, as JSON writes them).
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_values(item) for item in value]
    return value


def json_text(data: Any) -> str:
    """``data`` as the text :func:`write_json` writes: strict JSON, indented by 4, with a final newline.

    Raises:
        TypeError: ``data`` holds a value JSON has no form for.
    """
    return json.dumps(_json_values(data), indent=4, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, data: Any, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` as strict JSON (:func:`json_text`), atomically.

    Raises:
        ExistingOutputError: ``path`` exists and ``overwrite`` is False.
        TypeError: ``data`` holds a value JSON has no form for (nothing is written).
    """
    text = json_text(data)  # before the file is created: a value JSON cannot hold writes nothing
    return atomic_write(path, lambda temporary: temporary.write_text(text), overwrite)


def csv_text(rows: Iterable[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """``rows`` as the text :func:`write_csv` writes: a header line, then one line per row.

    A cell is ``str(value)`` (non-finite floats ``inf``, ``-inf``, ``nan``), blank where the row has no
    such key or its value is None; lines end in ``\n``.

    Args:
        rows: one dict per row.
        columns: the columns in order. Defaults to every row's keys in first-seen order.

    Raises:
        ValueError: a row has a key that ``columns`` does not name.
    """
    rows = list(rows)
    columns = list(dict.fromkeys(key for row in rows for key in row)) if columns is None else list(columns)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return table.getvalue()


def write_csv(
    path: str | os.PathLike,
    rows: Iterable[dict[str, Any]],
    columns: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``rows`` to ``path`` as CSV (:func:`csv_text`), atomically.

    Raises:
        ExistingOutputError: ``path`` exists and ``overwrite`` is False.
        ValueError: a row has a key that ``columns`` does not name (nothing is written).
    """
    text = csv_text(rows, columns)
    return atomic_write(path, lambda temporary: temporary.write_text(text), overwrite)


__all__ = [
    "JOURNAL",
    "MAX_CASE_ID_LENGTH",
    "STAGING_PREFIX",
    "atomic_folder",
    "atomic_write",
    "check_output_folder",
    "csv_text",
    "has_dicom_marker",
    "json_text",
    "normal_mode",
    "recover_staged",
    "refuse_existing",
    "safe_case_id",
    "visible_files",
    "write_csv",
    "write_json",
    "write_together",
]
