"""Atomic writes and hashing: a failed or interrupted command never leaves a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from .errors import EdgeticketError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should look like any other written file
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside `path`; swap it in for `path` only if the block succeeds."""
    import shutil
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        retired = target.with_name(f".{target.name}.old")
        if target.exists():
            os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def size_on_disk(path: str | os.PathLike) -> int:
    """Bytes of a file, or of the files in a folder (an ncnn export)."""
    path = Path(path)
    return sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size


def save_torch(obj: object, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(obj: object, path: str | os.PathLike) -> None:
    write_text(json.dumps(obj, indent=2, default=str) + "\n", path)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_torch(path: str | os.PathLike, trust_pickle: bool = False) -> object:
    """torch.load with weights_only (no code runs from the file), and one clear error for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise EdgeticketError(f"no such file: {path}", hint="check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error) or "GLOBAL" in str(error):
            found = re.search(r"GLOBAL ([\w.]+)", str(error))
            raise EdgeticketError(
                f"{path.name} needs pickle to load (it stores the Python object {found.group(1) if found else 'a class'}),"
                " which can run arbitrary code",
                hint="re-save it as a state_dict, or pass --trust-pickle if you trust where it came from") from None
        raise EdgeticketError(f"{path.name} is not a PyTorch checkpoint (its data is not valid pickle)",
                              hint="the file is corrupt or of another format; copy it again") from None
    except Exception as error:  # garbage makes the unpickler fail in many ways (IndexError, KeyError, ...)
        reason = "truncated zip archive" if "zip" in str(error) else type(error).__name__
        raise EdgeticketError(f"{path.name} is not a readable PyTorch checkpoint ({reason})",
                              hint="the file is truncated, corrupt or of another format; copy it again") from None
