from __future__ import annotations

import stat

import pytest
from custom.files import atomic_write, refuse_existing


def test_atomic_write_writes_with_a_normal_file_mode(tmp_path):
    path = atomic_write(tmp_path / "sub" / "out.json", lambda tmp: tmp.write_text("{}"))
    assert path.read_text() == "{}"
    (tmp_path / "plain").write_text("")  # what an ordinary write gets under this umask
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


def test_atomic_write_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("keep")
    with pytest.raises(FileExistsError):
        atomic_write(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "keep"
    atomic_write(path, lambda tmp: tmp.write_text("new"), overwrite=True)
    assert path.read_text() == "new"


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "out.nii.gz", broken)
    assert list(tmp_path.iterdir()) == []


def test_temporary_file_keeps_the_suffixes(tmp_path):
    seen = []
    atomic_write(tmp_path / "ct.nii.gz", lambda tmp: seen.append(tmp.name) or tmp.write_bytes(b""))
    assert seen[0].endswith(".nii.gz")


def test_refuse_existing_names_every_existing_path(tmp_path):
    (tmp_path / "a").write_text("")
    (tmp_path / "b").write_text("")
    with pytest.raises(FileExistsError, match="a.*b"):
        refuse_existing([tmp_path / "a", tmp_path / "b", tmp_path / "c"])
    refuse_existing([tmp_path / "a"], overwrite=True)
