"""Writing output files safely: complete or absent, never silently replaced."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


def refuse_existing(paths: Iterable[str | os.PathLike], overwrite: bool = False) -> None:
    """Raise FileExistsError naming every path that exists, unless ``overwrite``.

    Check all outputs of a command with this before writing the first, so a refusal writes nothing.
    """
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"refusing to overwrite {existing}; remove them or ask to overwrite (overwrite=True, --overwrite)."
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


__all__ = ["atomic_folder", "atomic_write", "has_dicom_marker", "normal_mode", "refuse_existing"]
