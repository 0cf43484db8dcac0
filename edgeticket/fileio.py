"""Atomic writes, temp folders and hashing: a failed, interrupted or killed command never leaves a half-written
file, and what a killed one left is removed by the next."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from . import signals
from .errors import EdgeticketError, NeedsPickle

if TYPE_CHECKING:
    import torch  # imported where it is used: `edgeticket --help` and the CLI's set-up do not pay for it


def cache_dir() -> Path:
    """Where edgeticket keeps what it can make again (pretrained sources, latency tables): $EDGETICKET_CACHE."""
    return Path(os.environ.get("EDGETICKET_CACHE", Path.home() / ".cache" / "edgeticket"))


def check_output(path: str | os.PathLike, *inputs: str | os.PathLike, folder: bool = False) -> Path:
    """Refuse an output that would destroy something: one of the command's inputs, or an existing path that is
    not a regular file (a folder, for folder outputs): a device node, a socket, a file where a folder goes.
    And one that cannot be written (a read-only or foreign folder), before any work is done."""
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
    check_writable(target)
    return target


def check_writable(target: Path) -> None:
    """The output's folder (or the nearest one that exists: the rest is created) takes new files. os.access
    answers for the real user and sees a read-only mount even for root; write time catches what it cannot."""
    folder = nearest_existing(Path(os.path.abspath(target)).parent)
    if not folder.is_dir():
        raise EdgeticketError(f"cannot write {target}: {folder} is not a folder", hint="name another path with -o")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise EdgeticketError(f"cannot write {target}: {folder} {unwritable_reason(folder, errno.EACCES)}",
                              hint="write to another folder with -o")


def unwritable_reason(folder: Path, code: int | None) -> str:
    try:
        read_only = code == errno.EROFS or bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = code == errno.EROFS
    return "is on a read-only file system" if read_only else "is not writable (permission denied)"


# --- staging: temp files and folders beside the output, named .NAME.PID.edgeticket-XXXXXXXX[.tmp]

MARK = "edgeticket-"
STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+(\.tmp)?$")  # any writer's of a given name (older ones too)
OURS = re.compile(rf"^\.(?P<name>.+)\.(?P<pid>\d+)\.{MARK}[A-Za-z0-9_]+(\.tmp)?$")  # edgeticket's, of any name


RETIRED = "old"  # atomic_dir's name for the output it replaces, between its two renames


def staging_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}.{MARK}"


def remove_stale_staging(target: Path) -> None:
    """Temp files and folders that killed writers left in the output's folder (their process is gone): theirs for
    any output (edgeticket's marked names), and for `target` also the unmarked names older versions used."""
    try:
        entries = [entry for entry in os.scandir(target.parent) if entry.name.startswith(".")]
    except OSError:
        return
    for entry in entries:
        match = OURS.match(entry.name) or STAGING.match(entry.name)
        if not match or (match.re is STAGING and match.group("name") != target.name):
            continue
        pid = int(match.group("pid"))
        if pid == os.getpid() or process_alive(pid):
            continue
        leftover = Path(entry.path)
        original = leftover.with_name(match.group("name"))
        if entry.name.endswith(f".{MARK}{RETIRED}") and not (original.exists() or original.is_symlink()):
            os.replace(leftover, original)  # killed between atomic_dir's two renames: the old output comes back
            continue
        if leftover.is_dir() and not leftover.is_symlink():
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
    except (OverflowError, ValueError):
        return False
    return True


# --- what goes wrong while writing

FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
REFUSED = (errno.EROFS, errno.EACCES, errno.EPERM)
TORCH_WRITER = ("PytorchStreamWriter", "inline_container", "unexpected pos", "file write failed")
LOW_SPACE = 64 << 20  # a failed torch.save with less free than this ran out of space


def write_error(error: BaseException, target: Path, staged: Path | None) -> EdgeticketError | None:
    """The one-line error for a write that failed for want of space or permission (None: another failure).
    Python says ENOSPC, EROFS or EACCES; torch's zip writer says `[enforce fail at inline_container.cc] unexpected
    pos` or `file write failed`, so for it a disk that is (nearly) full at that moment says why."""
    folder = Path(os.path.abspath(target)).parent
    if isinstance(error, OSError) and error.errno is not None:
        named = isinstance(error.filename, (str, os.PathLike))
        where = Path(os.path.abspath(error.filename)).parent if named else None
        ours = not named or where == folder or (staged is not None and (where == staged or staged in where.parents))
        if error.errno in FULL:
            if not named:  # a write(2) says no name: the fuller of the output's folder and the temp folder
                where = min((folder, temp_root()), key=lambda place: free_bytes(place, default=1 << 62))
            return no_space(where, target)
        if error.errno in REFUSED and ((named and ours) or error.errno == errno.EROFS):
            return EdgeticketError(f"cannot write {target}: {folder} {unwritable_reason(folder, error.errno)}",
                                   hint="write to another folder with -o")
        return None
    if isinstance(error, RuntimeError) and any(text in str(error) for text in TORCH_WRITER):
        if free_bytes(folder, default=LOW_SPACE) < LOW_SPACE:
            return no_space(folder, target)
        first = (str(error).splitlines() or [""])[0][:160]
        return EdgeticketError(f"cannot write {target}: torch's writer failed ({first})",
                               hint=f"check the disk of {folder} (df -h, dmesg), or write elsewhere with -o")
    return None


def nearest_existing(folder: Path) -> Path:
    """`folder`, or its nearest ancestor that exists (a write creates the rest)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def free_bytes(folder: Path, default: int) -> int:
    try:
        return shutil.disk_usage(nearest_existing(folder)).free
    except OSError:
        return default


def no_space(folder: Path, target: Path) -> EdgeticketError:
    return EdgeticketError(f"no space left on {device_of(folder)} ({folder}) writing {target}",
                           hint=f"free space there (df -h {folder}), or write elsewhere with -o; nothing was "
                                "half-written")


def device_of(folder: Path) -> str:
    """What holds `folder`: the device (or file system) /proc/mounts names for its mount point, else the mount point."""
    mount = Path(os.path.abspath(folder))
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        devices = [line.split()[0] for line in Path("/proc/mounts").read_text().splitlines()
                   if len(line.split()) > 1 and line.split()[1] == str(mount)]
    except OSError:
        devices = []
    return devices[-1] if devices else str(mount)  # the last mount of a point is the one in effect


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _commit_error(error: BaseException, target: Path, staged: Path | None) -> None:
    converted = write_error(error, target, staged)
    if converted is not None:
        raise converted from None


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds. The temp name carries
    this process's id, so the next write into that folder removes what a killed writer left, and no other's.
    The rename is a critical section for SIGINT/SIGTERM (signals.py); a full disk or a read-only folder is one
    line naming the output, and the temp file is removed."""
    target = check_output(path)
    tmp_path = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(target)
        with signals.critical():  # a signal between making the temp file and naming it would leave it behind
            fd, tmp = tempfile.mkstemp(prefix=staging_prefix(target), suffix=".tmp", dir=target.parent)
            os.close(fd)
            tmp_path = Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should look like any other written file
        yield tmp_path
        with signals.critical():
            os.replace(tmp_path, target)
            if not OURS.match(target.parent.name):  # a file inside atomic_dir's staging folder is not an output yet
                signals.committed(target)
    except (OSError, RuntimeError) as error:
        _commit_error(error, target, tmp_path)
        raise
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside `path`; swap it in for `path` only if the block succeeds (both renames in one
    critical section: a signal never leaves the output missing)."""
    target = check_output(path, folder=True)
    staging = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(target)
        with signals.critical():
            staging = Path(tempfile.mkdtemp(prefix=staging_prefix(target), dir=target.parent))
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700
        yield staging
        retired = target.with_name(f"{staging_prefix(target)}{RETIRED}")
        with signals.critical():
            if target.exists():
                os.replace(target, retired)
            os.replace(staging, target)
            signals.committed(target)
        shutil.rmtree(retired, ignore_errors=True)
    except (OSError, RuntimeError) as error:
        _commit_error(error, target, staging)
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


# --- work folders: $TMPDIR/edgeticket-UID/PID/, one per process, swept when that process is gone

_process = threading.Lock()
_folder: Path | None = None
_lock_fd: int | None = None
_registered: list[bool] = []
_system_tmp: str | None = None  # $TMPDIR as it was before a command pointed it at its own folder


def temp_root() -> Path:
    """$TMPDIR/edgeticket-UID: every edgeticket process's work folder is in it, named by its process id."""
    return Path(_system_tmp or tempfile.gettempdir()) / f"edgeticket-{os.getuid()}"


def _own_folder(path: Path) -> None:
    """Make `path` (0700), or accept it only if it is this user's folder and no one else's to write in."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise EdgeticketError(f"{path} is not a private folder of this user (edgeticket's temp folders go there)",
                              hint="remove it, or set TMPDIR to another folder")


def sweep_temp(root: Path | None = None) -> None:
    """Remove the work folders of edgeticket processes that are gone (killed, even by kill -9): each folder is
    named by its process id, and holds a lock file its process keeps locked, so a live process's folder is never
    removed (not even one whose process id this process cannot see)."""
    import fcntl
    root = root or temp_root()
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == os.getpid() or process_alive(int(entry.name)):
            continue
        lock = os.path.join(entry.path, ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:
            fd = None
        except OSError:
            continue
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:  # locked: its process lives (in another pid namespace)
            continue
        finally:
            if fd is not None:
                os.close(fd)


def process_temp() -> Path:
    """This process's work folder, $TMPDIR/edgeticket-UID/PID (made on first use, after sweeping the folders of
    processes that are gone; removed when the command ends, or at exit)."""
    global _folder, _lock_fd
    import atexit
    import fcntl
    with _process:
        if _folder is not None and _folder.is_dir():
            return _folder
        if _lock_fd is not None:  # its folder was removed under it
            os.close(_lock_fd)
        root = temp_root()
        _own_folder(root)
        sweep_temp(root)
        folder = root / str(os.getpid())
        if folder.exists():  # a dead process's that had this process id
            shutil.rmtree(folder, ignore_errors=True)
        _own_folder(folder)
        _lock_fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        fcntl.flock(_lock_fd, fcntl.LOCK_EX)
        if not _registered:
            atexit.register(release_process_temp)
            _registered.append(True)
        _folder = folder
        return folder


def release_process_temp() -> None:
    """Remove this process's work folder (the next use makes a new one)."""
    global _folder, _lock_fd
    with _process:
        if _folder is not None:
            shutil.rmtree(_folder, ignore_errors=True)
        if _lock_fd is not None:
            os.close(_lock_fd)
        _folder, _lock_fd = None, None


@contextmanager
def redirected_tempdir() -> Iterator[Path]:
    """Point `tempfile` (and $TMPDIR, for child processes) at this process's work folder for the block, so what
    libraries put in temp files (ExecuTorch's serializer, pnnx's intermediates) is swept if the process is killed."""
    global _system_tmp
    saved_tempdir, saved_env, saved_system = tempfile.tempdir, os.environ.get("TMPDIR"), _system_tmp
    try:
        _system_tmp = _system_tmp or tempfile.gettempdir()
        folder = process_temp()
        tempfile.tempdir, os.environ["TMPDIR"] = str(folder), str(folder)
        yield folder
    finally:
        tempfile.tempdir, _system_tmp = saved_tempdir, saved_system
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env


@contextmanager
def command_temp() -> Iterator[Path]:
    """A command's temp files all in its work folder, removed when it ends (swept after a kill -9)."""
    try:
        with redirected_tempdir() as folder:
            yield folder
    finally:
        release_process_temp()


@contextmanager
def work_dir() -> Iterator[Path]:
    """A fresh folder in this process's work folder, removed after the block."""
    folder = Path(tempfile.mkdtemp(dir=process_temp()))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def size_on_disk(path: str | os.PathLike) -> int:
    """Bytes of a file, or of the files in a folder (an ncnn export)."""
    path = Path(path)
    return sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size


def save_torch(obj: object, path: str | os.PathLike) -> None:
    import torch
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


def read_safetensors(path: Path) -> "dict[str, torch.Tensor]":
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


def read_text(path: Path) -> str:
    """A config's or record's text. A FIFO, socket or device is refused before it is opened (reading one blocks or
    never ends); a missing file or a folder is the caller's OSError to name."""
    if isinstance(path, Path) and path.exists() and not (path.is_file() or path.is_dir()):
        raise EdgeticketError(f"{path} is not a regular file (a FIFO, socket or device)", hint="name a file")
    return path.read_text()


def read_torch(path: str | os.PathLike, trust_pickle: bool = False) -> object:
    """torch.load with weights_only (no code runs from the file), and one clear error for anything unreadable."""
    path = Path(path)
    if path.is_dir():
        raise EdgeticketError(f"{path} is a folder, not a checkpoint or ticket file", hint="name a file in it")
    if not path.is_file():
        raise EdgeticketError(f"no such file: {path}", hint="check the path")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error) or "GLOBAL" in str(error):
            found = re.search(r"GLOBAL ([\w.]+)", str(error))
            raise NeedsPickle(
                f"{path.name} needs pickle to load (it stores the Python object {found.group(1) if found else 'a class'}),"
                " which can run arbitrary code",
                hint="re-save it as a state_dict, or pass --trust-pickle if you trust where it came from") from None
        raise EdgeticketError(f"{path.name} is not a PyTorch checkpoint (its data is not valid pickle)",
                              hint="the file is corrupt or of another format; copy it again") from None
    except Exception as error:  # garbage makes the unpickler fail in many ways (IndexError, KeyError, ...)
        reason = "truncated zip archive" if "zip" in str(error) else type(error).__name__
        raise EdgeticketError(f"{path.name} is not a readable PyTorch checkpoint ({reason})",
                              hint="the file is truncated, corrupt or of another format; copy it again") from None
