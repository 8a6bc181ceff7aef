from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from custom.errors import ExistingOutputError, OutputFolderError
from custom.files import (
    JOURNAL,
    STAGING_PREFIX,
    atomic_write,
    check_output_folder,
    csv_text,
    recover_staged,
    refuse_existing,
    safe_case_id,
    visible_files,
    write_csv,
    write_json,
    write_together,
)


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


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def _write_case(staging: Path) -> None:
    (staging / "c.nii.gz").write_bytes(b"ct")
    (staging / "c_dicom").mkdir()
    (staging / "c_dicom" / "slice_0000.dcm").write_bytes(b"slice")


def test_write_together_moves_every_output_into_place_and_leaves_no_staging(tmp_path):
    written = write_together(tmp_path / "out", _write_case)
    assert written == [tmp_path / "out" / "c.nii.gz", tmp_path / "out" / "c_dicom"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c.nii.gz", "c_dicom"]
    assert (tmp_path / "out" / "c_dicom" / "slice_0000.dcm").read_bytes() == b"slice"


def test_write_together_refuses_existing_outputs_and_replaces_them_only_when_asked(tmp_path):
    write_together(tmp_path, _write_case)
    (tmp_path / "c_dicom" / "old_extra.dcm").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="c.nii.gz"):
        write_together(tmp_path, _write_case)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.nii.gz", "c_dicom"]  # no staging left
    write_together(tmp_path, _write_case, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "c_dicom").iterdir()) == ["slice_0000.dcm"]  # the folder was replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.nii.gz", "c_dicom"]


def test_a_failure_part_way_writes_nothing(tmp_path):
    def fail_after_the_ct(staging: Path) -> None:
        (staging / "c.nii.gz").write_bytes(b"ct")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_together(tmp_path, fail_after_the_ct)
    assert list(tmp_path.iterdir()) == []


def test_recovery_finishes_a_killed_committed_case_and_removes_an_uncommitted_one(tmp_path):
    pid = _dead_pid()
    committed = tmp_path / f"{STAGING_PREFIX}{pid}.abc"
    committed.mkdir()
    _write_case(committed)
    (committed / JOURNAL).write_text("c.nii.gz\nc_dicom\n")
    os.replace(committed / "c.nii.gz", tmp_path / "c.nii.gz")  # killed after moving the first output
    uncommitted = tmp_path / f"{STAGING_PREFIX}{pid}.xyz"
    uncommitted.mkdir()
    (uncommitted / "d.nii.gz").write_bytes(b"half")
    running = tmp_path / f"{STAGING_PREFIX}{os.getpid()}.run"  # a live process's: left alone
    running.mkdir()
    done = recover_staged(tmp_path)
    assert len(done) == 2 and "moved into place" in done[0] and "removed" in done[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "c.nii.gz", "c_dicom"]
    assert (tmp_path / "c_dicom" / "slice_0000.dcm").read_bytes() == b"slice"


def test_check_output_folder_refuses_a_file_or_a_path_below_one_and_creates_the_rest(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputFolderError, match="output folder .*file is a file"):
        check_output_folder(tmp_path / "file")
    with pytest.raises(OutputFolderError, match=r"file/sub/deeper cannot be created: .*file is a file"):
        check_output_folder(tmp_path / "file" / "sub" / "deeper")
    assert check_output_folder(tmp_path / "new" / "out").is_dir() and not list((tmp_path / "new" / "out").iterdir())


def test_visible_files_follows_folder_links_once_and_skips_hidden_entries(tmp_path):
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    (tmp_path / "a" / "x.png").write_text("")
    (tmp_path / "a" / ".x.png").write_text("")
    (tmp_path / "a" / "up").symlink_to(tmp_path, target_is_directory=True)  # a loop
    (tmp_path / "b").symlink_to(tmp_path / "a", target_is_directory=True)  # a second way in
    visited = [(str(folder.relative_to(tmp_path)), files) for folder, files in visible_files(tmp_path)]
    assert visited == [(".", []), ("a", ["x.png"])]


def test_write_json_writes_non_finite_numbers_as_strings_and_strict_json(tmp_path):
    data = {"psnr": math.inf, "low": -math.inf, "std": math.nan, "nested": [{"x": (1.5, math.inf)}], "none": None}
    path = write_json(tmp_path / "sub" / "summary.json", data)
    text = path.read_text()
    assert text.endswith("}\n") and text.startswith('{\n    "psnr": "inf",')
    expected = {"psnr": "inf", "low": "-inf", "std": "nan", "nested": [{"x": [1.5, "inf"]}], "none": None}
    assert json.loads(text) == expected and "Infinity" not in text and "NaN" not in text
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))


def test_write_json_and_write_csv_refuse_to_overwrite_unless_asked(tmp_path):
    for write, data in ((write_json, {"a": 1}), (write_csv, [{"a": 1}])):
        path = tmp_path / f"out.{write.__name__}"
        path.write_text("earlier")
        with pytest.raises(ExistingOutputError, match="refusing to overwrite"):
            write(path, data)
        assert path.read_text() == "earlier"
        write(path, data, overwrite=True)
        assert path.read_text() != "earlier"


def test_write_json_writes_nothing_for_a_value_json_cannot_hold(tmp_path):
    with pytest.raises(TypeError):
        write_json(tmp_path / "out.json", {"a": object()})
    assert not list(tmp_path.iterdir())


def test_write_csv_cells_blank_for_missing_and_none_and_non_finite_as_words(tmp_path):
    rows = [{"case": "a", "psnr": math.inf, "dice": 0.5}, {"case": "b", "dice": None, "hd95": math.nan}]
    path = write_csv(tmp_path / "cases.csv", rows)  # columns in first-seen order
    assert path.read_text() == "case,psnr,dice,hd95\na,inf,0.5,\nb,,,nan\n"
    assert csv_text(rows, ["case", "dice", "psnr", "hd95"]) == "case,dice,psnr,hd95\na,0.5,inf,\nb,,,nan\n"
    assert csv_text([], ["case"]) == "case\n"
    with pytest.raises(ValueError):
        write_csv(tmp_path / "narrow.csv", rows, ["case"])  # a row's key that no column names
    assert not (tmp_path / "narrow.csv").exists()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("a\\b:c", "a_b_c"),
        (".hidden", "hidden"),
        ("-rf", "rf"),
        ("p-1.2_x", "p-1.2_x"),
    ],
)
def test_case_ids_cannot_leave_the_output_folder(case, expected):
    assert safe_case_id(case) == expected


def test_a_case_id_without_usable_characters_is_refused():
    with pytest.raises(ValueError, match="no character usable"):
        safe_case_id("../..")
