"""Atomic writes and hashing: a failed or interrupted command never leaves a half-written file."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from .errors import EdgeticketError


def cache_dir() -> Path:
    """Where edgeticket keeps what it can make again (pretrained sources, latency tables): $EDGETICKET_CACHE."""
    return Path(os.environ.get("EDGETICKET_CACHE", Path.home() / ".cache" / "edgeticket"))


def check_output(path: str | os.PathLike, *inputs: str | os.PathLike, folder: bool = False) -> Path:
    """Refuse an output that would destroy something: one of the command's inputs, or an existing path that is
    not a regular file (a folder, for folder outputs): a device node, a socket, a file where a folder goes."""
    target = Path(path)
    for source in inputs:
        if source is not None and Path(source).exists() and target.exists() and os.path.samefile(source, target):
            raise EdgeticketError(f"the output {target} is the input", hint="write to another path with -o")
    if target.exists() or target.is_symlink():
        kind_ok = target.is_dir() if folder else target.is_file()
        if not kind_ok:
            what = "a folder" if target.is_dir() else "a file" if target.is_file() else "not a regular file"
            raise EdgeticketError(f"the output {target} exists and is {what}",
                                  hint=f"name a new path or an existing {'folder' if folder else 'regular file'}")
    return target


STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+(\.tmp)?$")


def remove_stale_staging(target: Path) -> None:
    """Temp files and folders that killed writers of `target` left behind (their process is gone)."""
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*"):
        match = STAGING.match(leftover.name)
        if match and match.group("name") == target.name and not process_alive(int(match.group("pid"))):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds. The temp name carries
    this process's id, so the next write of `path` removes what a killed writer left, and no other's."""
    target = check_output(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
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
    target = check_output(path, folder=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", dir=target.parent))
    try:
        yield staging
        retired = target.with_name(f".{target.name}.{os.getpid()}.old")
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


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file (timm's and Hugging Face's format): tensors only, no code by design."""
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise EdgeticketError(f"{path.name} is a safetensors file and safetensors is not installed",
                              hint="pip install safetensors (it comes with 'edgeticket[timm]')") from None
    try:
        return load_file(path, device="cpu")
    except SafetensorError as error:
        raise EdgeticketError(f"{path.name} is not a readable safetensors file ({error})",
                              hint="the file is truncated, corrupt or of another format; copy it again") from None


def read_torch(path: str | os.PathLike, trust_pickle: bool = False) -> object:
    """torch.load with weights_only (no code runs from the file), and one clear error for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise EdgeticketError(f"no such file: {path}", hint="check the path")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
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
