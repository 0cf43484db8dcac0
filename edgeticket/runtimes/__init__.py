"""Edge runtimes as plugins: one Python file each, found in this package, in the `edgeticket.runtimes` entry
point group, or as `*.py` files in the folders of $EDGETICKET_RUNTIMES (separated by ':').

A runtime file declares, at its top level (the README's "Add a runtime" shows a whole one):

    NAME = "onnxruntime"             what a device profile's `runtime` names
    FORMAT = "onnx"                  what `export --format` names
    SUFFIX = ".onnx"                 its artifact's suffix (a file; a folder when FOLDER_FILES is set)
    PROVIDERS = ("cpu", "cuda")      a profile's `provider`: the first is the one exports are checked on
    PRECISIONS = ("fp32", "int8")    a profile's `precision`
    TOLERANCE = (1e-4, 1e-6)         fp32 parity with torch: atol + rtol * max |torch logit|
    MODULE = "onnxruntime"           what the runner imports; its version comes from
    DISTRIBUTIONS = ("onnxruntime",)  the first of these pip distributions that is installed
    def open_model(path, provider, threads, precision): images [N, C, H, W] float32 -> logits [N, classes]
    def write(module, example, path): the torch module (eval, pixels in [0, 1]) as an artifact at `path`

and optionally ORDER (where lists put a built-in), CPU_PROVIDERS, FOLDER_FILES, BOARD_PACKAGES, DEVICES, DEFAULT_DEVICES,
unavailable_reason(provider), timing_note(profile, cpu), read_metadata(path), embed_metadata(path, entries),
export_int8(ticket, path, splits, ticket_sha256), model_io(path) and write_block(block, path) (see `Runtime`).

The torch-free bench runner loads the same file by its path, here or on a board, and calls `open_model`; so
its top level imports the standard library and numpy only, and `write` and the rest import what they need
(torch, edgeticket) inside. That one file is the whole runtime: everything else asks this registry."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np

from ..errors import EdgeticketError
from ..registry import Registry

Predict = Callable[[np.ndarray], np.ndarray]
REQUIRED = ("NAME", "FORMAT", "SUFFIX", "PROVIDERS", "PRECISIONS", "TOLERANCE", "MODULE", "DISTRIBUTIONS",
            "open_model", "write")
ENTRY_POINTS = "edgeticket.runtimes"


@dataclass(frozen=True)
class Runtime:
    """A runtime file's module, typed: what edgeticket asks of it (read from the module each time, so a test
    can patch a runtime's TOLERANCE where it lives)."""
    plugin: ModuleType

    @classmethod
    def from_module(cls, module: ModuleType) -> "Runtime":
        """The module's declarations, checked: one error naming the file and the first name that is wrong."""
        missing = [name for name in REQUIRED if not hasattr(module, name)]
        if missing:
            raise EdgeticketError(f"runtime plugin {module.__file__} does not declare {', '.join(missing)}",
                                  hint="a runtime file declares " + ", ".join(REQUIRED) + " (see the README)")
        wrong = next(((name, what) for name, what, ok in declaration_checks(module) if not ok), None)
        if wrong:
            raise EdgeticketError(f"runtime plugin {module.__file__}: {wrong[0]} must be {wrong[1]}, not "
                                  f"{getattr(module, wrong[0])!r}", hint="see the README's \"Add a runtime\"")
        heavy = sorted(top_level_imports(Path(module.__file__)) & RUNNER_CANNOT_IMPORT)
        if heavy:
            raise EdgeticketError(f"runtime plugin {module.__file__} imports {', '.join(heavy)} at its top level",
                                  hint="the bench runner loads this file alone, without torch or edgeticket (on a "
                                       "board too): import them inside write() and the other host-side functions")
        return cls(module)

    name = property(lambda self: str(self.plugin.NAME))
    format = property(lambda self: str(self.plugin.FORMAT))
    suffix = property(lambda self: str(self.plugin.SUFFIX))
    providers = property(lambda self: tuple(self.plugin.PROVIDERS))
    precisions = property(lambda self: tuple(self.plugin.PRECISIONS))
    tolerance = property(lambda self: tuple(self.plugin.TOLERANCE))
    module = property(lambda self: str(self.plugin.MODULE))
    distributions = property(lambda self: tuple(self.plugin.DISTRIBUTIONS))
    source = property(lambda self: Path(self.plugin.__file__), doc="the file the runner loads")
    cpu_providers = property(lambda self: tuple(getattr(self.plugin, "CPU_PROVIDERS", ("cpu",))),
                             doc="providers whose `threads` are CPU cores")
    folder_files = property(lambda self: tuple(getattr(self.plugin, "FOLDER_FILES", ())),
                            doc="an artifact that is a folder holds these files")
    board_packages = property(lambda self: tuple(getattr(self.plugin, "BOARD_PACKAGES", self.distributions[:1])),
                              doc="what `pip install` needs on a board to run it")
    default_devices = property(lambda self: dict(getattr(self.plugin, "DEFAULT_DEVICES", {})),
                               doc="an artifact's precision -> the profile that runs it as exported")
    devices = property(lambda self: dict(getattr(self.plugin, "DEVICES", {})),
                       doc="device profiles the runtime brings: name -> a profile's keys, as in its TOML")

    @property
    def builtin(self) -> bool:
        return self.plugin.__name__.startswith(f"{__name__}.")

    def as_dict(self) -> dict:
        """What `devices --json` shows of it, with whether it runs here (on its first provider)."""
        reason = self.unavailable_reason(self.check_provider)
        return {"name": self.name, "format": self.format, "suffix": self.suffix, "providers": list(self.providers),
                "precisions": list(self.precisions), "tolerance": list(self.tolerance), "version": self.version(),
                "source": str(self.source), "builtin": self.builtin, "available": reason is None,
                "reason": reason or ""}

    def _optional(self, name: str) -> Callable | None:
        return getattr(self.plugin, name, None)

    @property
    def folder(self) -> bool:
        return bool(self.folder_files)

    def holds(self, folder: Path) -> bool:
        """Whether `folder` is one of this (folder) runtime's artifacts: it holds all of its FOLDER_FILES."""
        return self.folder and all((folder / name).is_file() for name in self.folder_files)

    @property
    def check_provider(self) -> str:
        """The provider exports are checked on (this machine's CPU, for the built-in runtimes)."""
        return self.providers[0]

    def open_model(self, path: str | Path, provider: str, threads: int = 1, precision: str = "fp32",
                   hint: str = "export it again with `edgeticket export`", label: str | None = None) -> Predict:
        """The model in this process (export checks, eval); the runtime's own error for a file it cannot load
        becomes one line (naming `label`, else the file)."""
        try:
            return self.plugin.open_model(str(path), provider, threads, precision)
        except EdgeticketError:
            raise
        except Exception as error:  # runtimes raise their own untyped errors for bad files
            first = (str(error).splitlines() or [type(error).__name__])[0][:160]
            raise EdgeticketError(f"{self.name} cannot load {label or Path(path).name}: {first}", hint=hint) from None

    def write(self, module, example, path: Path) -> None:
        self.plugin.write(module, example, path)

    def write_block(self, block, path: Path) -> None:
        """A latency table's block (bench/latency.py's ConvBlock) as an artifact: the plugin's own `write_block`
        where it has a faster way, else its `write` of the block as a torch module."""
        write = self._optional("write_block")
        if write:
            write(block, path)
        else:
            self.write(block.module(), block.example(), path)

    def unavailable_reason(self, provider: str) -> str | None:
        """None when this runtime (with `provider`) runs and exports here, else why not and what to install."""
        check = self._optional("unavailable_reason")
        try:
            if check:
                return check(provider)
            found = importlib.util.find_spec(self.module) is not None
        except ImportError:  # a dotted module whose package is missing (tflite_runtime.interpreter)
            found = False
        except Exception as error:  # a plugin's own check that breaks says so, in its row
            return f"{self.name}'s availability check failed ({type(error).__name__}: {error})"
        return None if found else f"{self.module} is not installed; pip install {' '.join(self.board_packages)}"

    def timing_note(self, profile, cpu) -> str | None:
        """Why this profile's timings on `cpu` should not be read as the device's (None: they can be)."""
        note = self._optional("timing_note")
        return note(profile, cpu) if note else None

    def version(self) -> str | None:
        """The installed version here, from the first of its distributions found; None if none is."""
        for name in self.distributions:
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                pass
        return None

    @property
    def embeds_metadata(self) -> bool:
        return self._optional("embed_metadata") is not None

    def embed_metadata(self, path: Path, entries: dict[str, str]) -> None:
        self.plugin.embed_metadata(path, entries)

    def read_metadata(self, path: Path) -> dict[str, str] | None:
        """Metadata inside the artifact (None: this runtime keeps it in a JSON beside or inside the folder)."""
        read = self._optional("read_metadata")
        return read(path) if read else None

    @property
    def export_int8(self) -> Callable | None:
        """(ticket, path, splits, ticket_sha256) -> ExportReport, for a runtime that runs static int8 models."""
        return self._optional("export_int8")

    @property
    def model_io(self) -> Callable | None:
        """(path) -> (input dims, output dims) of a model edgeticket did not export, where the format says."""
        return self._optional("model_io")


RUNNER_CANNOT_IMPORT = {"torch", "torchvision", "edgeticket"}


def top_level_imports(path: Path) -> set[str]:
    """The packages a file imports at its top level (not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def declaration_checks(module: ModuleType) -> list[tuple[str, str, bool]]:
    """(name, what it must be, whether it is) for each of a runtime file's declarations."""
    text = lambda value: isinstance(value, str) and bool(value.strip())
    texts = lambda value: isinstance(value, (tuple, list)) and bool(value) and all(map(text, value))
    get = lambda name, default=None: getattr(module, name, default)
    tolerance = get("TOLERANCE")
    return [("NAME", "a non-empty string", text(get("NAME"))), ("FORMAT", "a non-empty string", text(get("FORMAT"))),
            ("SUFFIX", "a suffix such as '.npz'", text(get("SUFFIX")) and get("SUFFIX").startswith(".")),
            ("PROVIDERS", "a non-empty tuple of strings", texts(get("PROVIDERS"))),
            ("PRECISIONS", "a non-empty tuple of strings", texts(get("PRECISIONS"))),
            ("TOLERANCE", "(atol, rtol), two numbers", isinstance(tolerance, (tuple, list)) and len(tolerance) == 2
             and all(isinstance(v, (int, float)) for v in tolerance)),
            ("MODULE", "a module name", text(get("MODULE"))),
            ("DISTRIBUTIONS", "a non-empty tuple of pip names", texts(get("DISTRIBUTIONS"))),
            ("open_model", "a function", callable(get("open_model"))), ("write", "a function", callable(get("write"))),
            ("DEVICES", "a dict of profile name -> dict of its keys", isinstance(get("DEVICES", {}), dict)
             and all(isinstance(v, dict) for v in get("DEVICES", {}).values())),
            ("DEFAULT_DEVICES", "a dict of precision -> profile name", isinstance(get("DEFAULT_DEVICES", {}), dict))]


RUNTIMES: Registry[Runtime] = Registry("runtime")
_discovered = False


def register_runtime(module: ModuleType) -> ModuleType:
    """Register a runtime file's module (discovery calls this for each one it finds)."""
    runtime = Runtime.from_module(module)
    if runtime.name in RUNTIMES:
        raise EdgeticketError(f"runtime '{runtime.name}' of {runtime.source} is already registered "
                              f"(by {RUNTIMES.get(runtime.name).source})", hint="rename it or remove one")
    for key, same in (("FORMAT", lambda r: r.format == runtime.format),
                      ("SUFFIX", lambda r: r.suffix.lower() == runtime.suffix.lower())):
        clash = next((r for r in RUNTIMES.entries() if same(r)), None)
        if clash:
            raise EdgeticketError(f"runtime '{runtime.name}' of {runtime.source}: its {key} "
                                  f"'{getattr(runtime, key.lower())}' is runtime '{clash.name}'s",
                                  hint=f"give it a {key} of its own (suffixes are compared ignoring case)")
    RUNTIMES.add(runtime.name, runtime)
    return module


def plugin_dirs() -> list[Path]:
    return [Path(p) for p in os.environ.get("EDGETICKET_RUNTIMES", "").split(os.pathsep) if p]


def load_file(path: Path) -> ModuleType:
    """A plugin file as a module named after it (edgeticket_plugin_<stem>), so it shadows no real package."""
    name = f"edgeticket_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == str(path)]
        where = f" (line {lines[-1]})" if lines and not isinstance(error, SyntaxError) else ""
        raise EdgeticketError(f"runtime plugin {path} does not import{where}: {type(error).__name__}: {error}",
                              hint="fix it, or take its folder out of $EDGETICKET_RUNTIMES") from None
    return module


def discover() -> None:
    """Register every runtime once: this package's files, then entry points, then $EDGETICKET_RUNTIMES. A broken
    plugin is an error naming its file, every time it is looked for (nothing half-registered stays)."""
    global _discovered
    if _discovered:
        return
    try:
        builtins = [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)]
        for module in sorted(builtins, key=lambda m: getattr(m, "ORDER", 100)):
            register_runtime(module)
        for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
            register_runtime(load_entry_point(entry))
        for folder in plugin_dirs():
            if not folder.is_dir():
                raise EdgeticketError(f"$EDGETICKET_RUNTIMES names {folder}, which is not a folder",
                                      hint="list folders of runtime .py files, separated by ':'")
            for path in sorted(folder.glob("*.py")):
                register_runtime(load_file(path))
    except BaseException:
        RUNTIMES.clear()
        raise
    _discovered = True


def load_entry_point(entry: importlib.metadata.EntryPoint) -> ModuleType:
    """The module an `edgeticket.runtimes` entry point names (a runtime is a file, so a module, not an object in
    one: the runner loads the file)."""
    try:
        module = entry.load()
    except Exception as error:
        raise EdgeticketError(f"runtime plugin entry point {entry.value} does not import: {type(error).__name__}: "
                              f"{error}", hint=f"fix or uninstall the package that provides {entry.value}") from None
    if not isinstance(module, ModuleType) or not getattr(module, "__file__", None) or hasattr(module, "__path__"):
        raise EdgeticketError(f"runtime plugin entry point {entry.name} = {entry.value} does not name a module file",
                              hint=f'a runtime is one .py file, not a package or an object: {entry.name} = "module"')
    return module


def reset() -> None:
    """Forget what discovery found, so the next lookup looks again (a test, or a long-lived process after a
    plugin was installed)."""
    global _discovered
    RUNTIMES.clear()
    _discovered = False


def list_runtimes() -> list[Runtime]:
    discover()
    return RUNTIMES.entries()


def get_runtime(name: str) -> Runtime:
    discover()
    return RUNTIMES.get(name)


def runtime_names() -> list[str]:
    """The built-in runtimes (by their ORDER), then plugins."""
    return [runtime.name for runtime in list_runtimes()]


def formats() -> list[str]:
    return [runtime.format for runtime in list_runtimes()]


def reference_runtime() -> Runtime:
    """The runtime an exported model is compared with torch in by default (the sweep's deploy step, the report's
    ONNX Acc column): ONNX Runtime, a core dependency, so every machine has it."""
    return get_runtime("onnxruntime")


def runtime_for_format(fmt: str) -> Runtime:
    runtime = next((r for r in list_runtimes() if r.format == fmt), None)
    if runtime is None:
        raise EdgeticketError(f"unknown --format '{fmt}'", hint=f"choose one of: {', '.join(formats())}")
    return runtime


def runtime_for_path(path: str | Path) -> Runtime | None:
    """The runtime whose artifacts `path` names: by suffix, or a folder holding a folder runtime's files."""
    path = Path(path)
    by_suffix = runtime_for_suffix(path.suffix)
    if by_suffix or not path.is_dir():
        return by_suffix
    return next((r for r in list_runtimes() if r.holds(path)), None)


def runtime_for_suffix(suffix: str) -> Runtime | None:
    return next((r for r in list_runtimes() if r.suffix == suffix), None)
