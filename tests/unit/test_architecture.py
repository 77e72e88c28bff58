"""The shape of ``src/nurture`` (docs/architecture.md): layers, no import cycle, no giant room.

The layer contract itself lives in ``pyproject.toml`` (``[tool.importlinter]``) so that
``make lint`` and this test read the same one. Imports under ``TYPE_CHECKING`` count: a type
that names a module is a dependency on it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "nurture"
MAX_SHARE = 0.15
# Removed in the feature split; nothing may bring them back as re-exporting shims.
GONE = ("services", "delivery", "testing_channels", "testing_providers", "automation/loader")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("nurture", cache_dir=None)


def strongly_connected(graph: grimp.ImportGraph) -> Iterator[list[str]]:
    """Tarjan's algorithm over the module graph; yields every component of two or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        # Iterative, so a deep chain cannot hit the recursion limit.
        work: list[tuple[str, Iterator[str]]] = []
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work.append((root, iter(sorted(graph.find_modules_directly_imported_by(root)))))
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    imported = graph.find_modules_directly_imported_by(child)
                    work.append((child, iter(sorted(imported))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    yield sorted(component)


def test_no_module_imports_itself_through_others(graph: grimp.ImportGraph) -> None:
    cycles = list(strongly_connected(graph))
    assert cycles == [], f"import cycles: {cycles}"


def test_a_cycle_is_found_when_there_is_one() -> None:
    graph = grimp.ImportGraph()
    for name in ("a", "a.one", "a.two", "a.three", "a.four"):
        graph.add_module(name)
    graph.add_import(importer="a.one", imported="a.two")
    graph.add_import(importer="a.two", imported="a.three")
    graph.add_import(importer="a.three", imported="a.one")
    graph.add_import(importer="a.four", imported="a.one")
    assert list(strongly_connected(graph)) == [["a.one", "a.three", "a.two"]]


def test_layers_hold() -> None:
    # The contract in pyproject.toml. In a child process: import-linter configures logging
    # (dictConfig), which would disable this process's existing loggers for later tests.
    check = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True))"
    )
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_nothing_below_the_composition_root_imports_it(graph: grimp.ImportGraph) -> None:
    edges = {"nurture.cli", "nurture.web", "nurture.runtime", "nurture.testing"}
    importers = {
        m
        for m in graph.find_downstream_modules("nurture.bootstrap", as_package=True)
        if not any(m == e or m.startswith(e + ".") for e in edges)
    }
    assert importers == set()


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_package_holds_more_than_its_share() -> None:
    total = sum(_lines(p) for p in SRC.rglob("*.py"))
    shares = {
        d.name: sum(_lines(p) for p in d.rglob("*.py")) / total
        for d in SRC.iterdir()
        if (d / "__init__.py").is_file()
    }
    too_big = {name: f"{share:.1%}" for name, share in shares.items() if share > MAX_SHARE}
    assert too_big == {}


def test_every_package_says_what_it_owns() -> None:
    silent = [
        str(d.relative_to(SRC))
        for d in [SRC, *SRC.iterdir()]
        if (d / "__init__.py").is_file()
        and not ast.get_docstring(ast.parse((d / "__init__.py").read_text()))
    ]
    assert silent == []


def test_old_locations_stay_gone() -> None:
    back = [name for name in GONE if (SRC / name).exists() or (SRC / f"{name}.py").exists()]
    assert back == []
