import pytest

from edgeticket.fileio import atomic_path, write_text


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    write_text("old", target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_written_files_follow_the_umask(tmp_path):
    import os
    write_text("x", tmp_path / "a.txt")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


# --- faults while writing (issue: leftovers, read-only folders, full disks)

import errno
import os
import subprocess

import torch

from edgeticket import fileio
from edgeticket.errors import EdgeticketError
from edgeticket.fileio import check_output, save_torch


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_dead_writers_staging_is_swept_for_any_output_in_the_folder(tmp_path):
    dead = dead_pid()
    other_file = tmp_path / f".other.onnx.{dead}.edgeticket-abcd1234.tmp"  # another output's, killed
    other_file.write_bytes(b"x" * 100)
    other_folder = tmp_path / f".x.ncnn.{dead}.edgeticket-abcd1234"
    (other_folder / "sub").mkdir(parents=True)
    retired = tmp_path / f".x.ncnn.{dead}.edgeticket-old"
    retired.mkdir()
    live = tmp_path / f".other.onnx.{os.getpid()}.edgeticket-efgh5678.tmp"  # a concurrent writer's: never touched
    live.write_bytes(b"y")
    users = [tmp_path / f".config.{dead}.bak", tmp_path / f".other.onnx.{dead}.bak.tmp"]  # not edgeticket's names
    for path in users:
        path.write_bytes(b"mine")
    write_text("new", tmp_path / "out.txt")
    assert not other_file.exists() and not other_folder.exists() and not retired.exists()
    assert live.exists() and all(path.read_bytes() == b"mine" for path in users)


def test_staging_names_are_marked_and_folders_follow_the_umask(tmp_path):
    seen = []
    with fileio.atomic_dir(tmp_path / "m.ncnn") as staging:
        seen.append(staging.name)
        (staging / "f").write_text("x")
    assert fileio.OURS.match(seen[0]) and fileio.OURS.match(seen[0]).group("pid") == str(os.getpid())
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.ncnn").stat().st_mode & 0o777 == 0o777 & ~umask


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(fileio.os, "access", lambda path, mode: False if str(path) == str(tmp_path) else real_access(path, mode))
    with pytest.raises(EdgeticketError, match=f"cannot write {tmp_path}/new/out.ticket: {tmp_path} is "):
        check_output(tmp_path / "new" / "out.ticket")  # the nearest folder that exists is the one checked


@pytest.mark.parametrize("code, message", [(errno.EROFS, "is on a read-only file system"),
                                           (errno.EACCES, "is not writable")])
def test_a_refused_temp_file_names_the_output_not_the_temp(tmp_path, monkeypatch, code, message):
    def refuse(prefix, suffix, dir):
        raise OSError(code, os.strerror(code), os.path.join(dir, f"{prefix}abcd1234{suffix}"))
    monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
    with pytest.raises(EdgeticketError) as caught:
        write_text("x", tmp_path / "out.txt")
    assert caught.value.message == f"cannot write {tmp_path / 'out.txt'}: {tmp_path} {message}" + \
        ("" if code == errno.EROFS else " (permission denied)")
    assert ".tmp" not in caught.value.message and "-o" in caught.value.hint


def half_written(error):
    def save(obj, path):
        with open(path, "wb") as handle:
            handle.write(b"PK" + b"\0" * 500)
        raise error
    return save


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 832 vs 726"),
                                   RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")])
def test_a_full_disk_is_named_and_nothing_half_written_stays(tmp_path, monkeypatch, error):
    target = tmp_path / "out.ticket"
    target.write_bytes(b"old")
    monkeypatch.setattr(torch, "save", half_written(error))
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda path: shutil_usage(0))
    with pytest.raises(EdgeticketError) as caught:
        save_torch({"a": 1}, target)
    assert caught.value.message.startswith("no space left on ") and f"({tmp_path}) writing {target}" in caught.value.message
    assert "inline_container" not in caught.value.message and "df -h" in caught.value.hint
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.ticket"]


def test_a_torch_writer_failure_with_free_space_is_one_line_naming_the_output(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", half_written(RuntimeError("[enforce fail at inline_container.cc:672] . "
                                                                 "unexpected pos 832 vs 726")))
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda path: shutil_usage(10 << 30))
    with pytest.raises(EdgeticketError, match=r"cannot write .*out.ticket: torch's writer failed"):
        save_torch({"a": 1}, tmp_path / "out.ticket")
    assert not list(tmp_path.iterdir())


def test_other_errors_in_the_block_pass_unchanged(tmp_path):
    with pytest.raises(OSError) as caught:
        with atomic_path(tmp_path / "out.txt"):
            open(tmp_path / "missing" / "input.txt")
    assert caught.value.errno == errno.ENOENT and not list(tmp_path.iterdir())


def shutil_usage(free: int):
    import shutil
    return shutil._ntuple_diskusage(100 << 30, 100 << 30, free)
