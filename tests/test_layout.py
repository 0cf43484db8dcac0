"""The package's architecture: the core imports no layer above it, and no two modules import each other."""

import ast
from pathlib import Path

import pytest

import edgeticket

PACKAGE = Path(edgeticket.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


ENTRY_POINTS = {"edgeticket", "edgeticket.cli", "edgeticket.api", "edgeticket.__main__"}


def imports(path: Path) -> set[str]:
    """Modules of the package that `path` imports, at module level or inside functions: a function-local import
    only hides a cycle (the entry points import lazily to start fast, and nothing imports them)."""
    name, tree = module_name(path), ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in (tree.body if name in ENTRY_POINTS else ast.walk(tree)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            found |= {f"{target}.{a.name}" if f"{target}.{a.name}".replace(".", "/") in MODULES else target
                      for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("edgeticket")}
    return {m for m in found if m != name}


MODULES = {module_name(p).replace(".", "/") for p in PACKAGE.rglob("*.py")}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_no_import_cycles():
    edges = graph()
    visiting, done = [], set()

    def visit(module):
        if module in done:
            return
        assert module not in visiting, " -> ".join(visiting[visiting.index(module):] + [module])
        visiting.append(module)
        for target in edges.get(module, ()):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in edges:
        visit(module)


def test_the_core_imports_no_layer_above_it():
    core = {"edgeticket.ticket", "edgeticket.config", "edgeticket.masks", "edgeticket.errors", "edgeticket.fileio",
            "edgeticket.text", "edgeticket.signals"}
    allowed = core | {"edgeticket", "edgeticket.models", "edgeticket.models.archs", "edgeticket.models.normalize",
                      "edgeticket.registry"}
    for module in core:
        assert graph()[module] <= allowed, (module, graph()[module] - allowed)


def test_make_test_keeps_a_module_on_one_worker(request):
    """`make test` runs `--dist loadgroup` so a module's tests share one worker and its module fixtures are built
    once (conftest.py names the groups). The group reaches xdist only through the test's id: with pytest 9.2 and
    xdist 3.8 it silently did not (pytest-xdist#1386), and every module fixture was built on both workers."""
    if not getattr(request.config.option, "loadgroup", False):  # what xdist sets on a worker
        pytest.skip("not run with --dist loadgroup")
    assert request.node.nodeid.endswith("@tests.test_layout")
