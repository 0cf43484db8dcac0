"""Device profiles: TOML files naming a runtime, its provider, threads, precision, the channel multiple its
kernels like, and the device each stands for. A profile with an `[ssh]` table runs on that board (bench/ssh.py).

Built-in profiles ship in the package (edgeticket/devices/); a runtime plugin may bring its own (its DEVICES).
A user's own come from $EDGETICKET_DEVICES
(folders separated by ':'), ~/.config/edgeticket/devices/ and ./devices/, in that order; the first file of a
name wins, and one that shadows a built-in profile is announced once, when it is used. A broken user profile breaks nothing
until it is used: then it is an error naming the file and the key."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from ..console import info
from ..errors import EdgeticketError
from ..fileio import read_text
from ..host import CpuInfo, cpu_info
from ..runtimes import get_runtime, list_runtimes, runtime_names
from ..text import clean, one_line

MAX_THREADS = 256  # a profile's (and a --threads override's) threads; a bench here is bounded by its CPUs too
MAX_ROUND_TO = 256  # channels per multiple: SIMD widths are 4 to 64
EXAMPLE = 'runtime = "onnxruntime"\nprovider = "cpu"\nthreads = 1\nprecision = "fp32"'


@dataclass(frozen=True)
class SshTarget:
    """A profile's `[ssh]` table: the board a remote profile runs on, and how to reach it."""
    host: str
    port: int | None = None   # else ~/.ssh/config's Port, else 22
    user: str = ""            # else ~/.ssh/config's User, else the local user name
    identity: str = ""        # a private key file; else ~/.ssh/config's IdentityFile, the agent and default keys
    known_hosts: str = "~/.ssh/known_hosts"  # the board's host key must be here: never accepted blindly
    python: str = "python3"   # the board's interpreter, with numpy and the runtime installed
    workdir: str = "~/.cache/edgeticket"  # where the runner, model and inputs go (~/: the board's home); yours alone

    @property
    def label(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}{f':{self.port}' if self.port else ''}"


SSH_KEYS = [f.name for f in dataclasses.fields(SshTarget)]
SSH_EXAMPLE = '[ssh]\nhost = "pi5.local"\nuser = "pi"\npython = "python3"  (keys: ' + ", ".join(SSH_KEYS) + ")"


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    runtime: str      # a registered runtime (edgeticket/runtimes/, or a plugin)
    provider: str     # one of the runtime's PROVIDERS
    threads: int
    precision: str    # one of the runtime's PRECISIONS
    stands_for: str = ""
    round_to: int = 1  # `draw --device NAME` keeps a multiple of this many channels per layer
    path: str = ""    # the TOML it was read from
    builtin: bool = True
    ssh: SshTarget | None = None  # a board reached over ssh; None: this machine

    @property
    def format(self) -> str:
        """The export format this profile runs."""
        return get_runtime(self.runtime).format

    @property
    def int8(self) -> bool:
        return self.precision == "int8"

    @property
    def where(self) -> str:
        """Where it runs, for tables: this machine, or the board over ssh."""
        return f"ssh {self.ssh.label}" if self.ssh else "here"


@dataclass(frozen=True)
class BrokenProfile:
    """A user profile that does not read; an error only when it is used."""
    name: str
    path: str
    error: EdgeticketError

    def use(self):
        raise self.error


KEYS = [f.name for f in dataclasses.fields(DeviceProfile) if f.name not in ("name", "path", "builtin")]
REQUIRED = ("runtime", "provider", "threads", "precision")


def user_dirs() -> list[Path]:
    """Where a user's profiles are looked for, first match first."""
    env = [Path(p) for p in os.environ.get("EDGETICKET_DEVICES", "").split(os.pathsep) if p]
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "edgeticket" / "devices"
    return env + [config, Path.cwd() / "devices"]


def positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _problem(raw: dict) -> tuple[str, str] | None:
    """(key, what is wrong with it) for the first bad key of a profile, else None."""
    unknown = [key for key in raw if key not in KEYS]
    if unknown:
        return unknown[0], f"unknown key (keys: {', '.join(KEYS)})"
    missing = [key for key in REQUIRED if key not in raw]
    if missing:
        return missing[0], "missing"
    for key in ("runtime", "provider", "precision", "stands_for"):
        if key in raw and not isinstance(raw[key], str):
            return key, f"must be a string, not {raw[key]!r}"
    if raw["runtime"] not in runtime_names():
        return "runtime", f"unknown runtime {raw['runtime']!r} (known: {', '.join(runtime_names())})"
    runtime = get_runtime(raw["runtime"])
    if raw["provider"] not in runtime.providers:
        return "provider", (f"unknown provider {raw['provider']!r} for {raw['runtime']} "
                            f"(known: {', '.join(runtime.providers)})")
    for key, most in (("threads", MAX_THREADS), ("round_to", MAX_ROUND_TO)):
        if key in raw and not (positive_int(raw[key]) and raw[key] <= most):
            return key, f"must be a whole number from 1 to {most}, not {raw[key]!r}"
    if raw["precision"] not in runtime.precisions:
        return "precision", (f"unknown precision {raw['precision']!r} for {raw['runtime']} "
                             f"(known: {', '.join(runtime.precisions)})")
    if "ssh" in raw:
        return _ssh_problem(raw["ssh"])
    return None


def _ssh_problem(table: object) -> tuple[str, str] | None:
    if not isinstance(table, dict):
        return "ssh", "must be a table: " + SSH_EXAMPLE.replace("\n", "; ")
    unknown = [key for key in table if key not in SSH_KEYS]
    if unknown:
        return f"ssh.{unknown[0]}", f"unknown key (keys: {', '.join(SSH_KEYS)})"
    if not table.get("host") or not isinstance(table["host"], str):
        return "ssh.host", "missing: the board's name or address"
    if table["host"].startswith("-") or any(c.isspace() or c in "@/" for c in table["host"]):
        return "ssh.host", f"{table['host']!r} is not a host name or address (the user goes in ssh.user)"
    if "port" in table and not (positive_int(table["port"]) and table["port"] <= 65535):
        return "ssh.port", f"must be a port number, 1 to 65535, not {table['port']!r}"
    for key in ("user", "identity", "known_hosts", "python", "workdir"):
        if key in table and not (isinstance(table[key], str) and table[key].strip()):
            return f"ssh.{key}", f"must be a non-empty string, not {table[key]!r}"
    return None


def read_profile(path: Path | Traversable, builtin: bool = False) -> DeviceProfile:
    """A profile from its TOML; a clear error naming the file and the key when it does not read. The file's
    name is cleaned too (`devices` prints it in Text cells, which the console does not clean)."""
    where = one_line(path)
    try:
        raw = tomllib.loads(read_text(path))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as error:
        raise EdgeticketError(f"device profile {where} is not valid TOML: {error}",
                              hint="a profile looks like: " + EXAMPLE.replace("\n", "; ")) from None
    return profile_from(raw, Path(path.name).stem, where, builtin)


def profile_from(raw: dict, name: str, where: str, builtin: bool = False) -> DeviceProfile:
    """A profile from its keys (a TOML's, or a runtime file's DEVICES entry), checked and its strings cleaned
    (`text.clean`: no escape code or line break reaches the `devices` table); `where` names its source."""
    raw, name = clean(dict(raw)), one_line(name)
    problem = _problem(raw)
    if problem:
        key, what = problem
        example = (SSH_EXAMPLE if key.startswith("ssh") else EXAMPLE).replace("\n", "; ")
        raise EdgeticketError(f"device profile {where}: key '{key}': {what}",
                              hint=f"fix or remove the file; a profile looks like: {example}")
    raw = dict(raw)
    ssh = SshTarget(**raw.pop("ssh")) if "ssh" in raw else None
    return DeviceProfile(name, **raw, path=where, builtin=builtin, ssh=ssh)


def builtin_files() -> dict[str, Traversable]:
    """The profiles shipped in the package (read through importlib.resources, so a zipped install works)."""
    folder = resources.files("edgeticket") / "devices"
    return {Path(entry.name).stem: entry for entry in folder.iterdir() if entry.name.endswith(".toml")}


_announced: set[str] = set()


def announce(key: str, message: str) -> None:
    """Say it once per process."""
    if key not in _announced:
        _announced.add(key)
        info(message)


def announce_shadowing(profile: DeviceProfile) -> None:
    """A user's profile used under a built-in name is announced (once), so a number is not read as the built-in's."""
    if not profile.builtin and profile.name in builtin_files():
        announce(profile.name, f"device profile {profile.name}: using {profile.path}, not the built-in one")


def list_devices() -> list[DeviceProfile | BrokenProfile]:
    """Every profile by name, a user's first; a broken user profile is listed as such, not raised."""
    found: dict[str, DeviceProfile | BrokenProfile] = {}
    for folder in user_dirs():
        if not folder.is_dir():
            if str(folder) in os.environ.get("EDGETICKET_DEVICES", "").split(os.pathsep):
                announce(str(folder), f"$EDGETICKET_DEVICES names {folder}, which is not a folder")
            continue
        for path in sorted(folder.glob("*.toml")):
            if path.stem in found:
                continue
            try:
                found[path.stem] = read_profile(path)
            except EdgeticketError as error:
                found[path.stem] = BrokenProfile(one_line(path.stem), one_line(path), error)
    for name, path in builtin_files().items():
        found.setdefault(name, read_profile(path, builtin=True))
    for runtime in list_runtimes():  # profiles a runtime plugin brings (its DEVICES), after the built-in ones
        for name, raw in runtime.devices.items():
            where = f"{runtime.source}: DEVICES['{name}']"
            if name in found:
                announce(where, f"{where} is not used: {found[name].path} has the name {name}")
                continue
            try:
                found[name] = profile_from({"runtime": runtime.name, **raw}, name, where)
            except EdgeticketError as error:
                found[name] = BrokenProfile(name, where, error)
    return sorted(found.values(), key=lambda p: p.name)


def get_device(name: str) -> DeviceProfile:
    """A profile by name, or a path to a profile's TOML."""
    if name.endswith(".toml"):
        if not Path(name).is_file():
            raise EdgeticketError(f"no such device profile: {name}", hint="see `edgeticket devices`")
        return read_profile(Path(name))
    profiles = {p.name: p for p in list_devices()}
    if name not in profiles:
        raise EdgeticketError(f"unknown device '{name}'", hint=f"choose one of: {', '.join(profiles)}")
    profile = profiles[name]
    if isinstance(profile, BrokenProfile):
        profile.use()
    announce_shadowing(profile)
    return profile


def unavailable_reason(profile: DeviceProfile | BrokenProfile) -> str | None:
    """None when the profile can run on this machine, else why not."""
    if isinstance(profile, BrokenProfile):
        return f"broken profile: {profile.error.message}"
    if profile.ssh:
        return None  # the board is probed when the profile is used: a bench says what it lacks
    return get_runtime(profile.runtime).unavailable_reason(profile.provider)


def timing_note(profile: DeviceProfile, cpu: CpuInfo | None = None, cpus: int | None = None) -> str | None:
    """Why a profile's timings should not be read as the device's, when they should not (`cpu`, `cpus`: the
    machine it ran on)."""
    cpu, cpus = cpu or cpu_info(), cpus or os.cpu_count()
    runtime = get_runtime(profile.runtime)
    if profile.provider in runtime.cpu_providers and cpus and profile.threads > cpus:
        return f"{profile.threads} threads on {cpus} cores: the device's timing would differ"
    return runtime.timing_note(profile, cpu)
