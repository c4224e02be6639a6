"""The import graph of ``src/ramir``: no circle, no import back up a layer.

The graph is read from the source with :mod:`ast`; nothing is imported. Its nodes are
ramir's modules (a package is its ``__init__``); an edge ``a -> b`` is an import in ``a``
that runs ``b``:

* ``import ramir.x.y`` and ``from ramir.x.y import name`` run ``ramir.x.y``;
  ``from ramir.x import y`` runs ``ramir.x.y`` when ``y`` is a submodule, else
  ``ramir.x``; relative imports are resolved the same way;
* importing ``ramir.x.y`` also runs the packages above it (``ramir.x``), except those
  above the importer itself, which Python has already started;
* a package that exports names lazily (``ramir.data``: an ``_EXPORTS`` table of
  ``name: submodule`` that its ``__getattr__`` imports) runs the submodule of the name
  that ``from ramir.x import name`` asks for.

Three kinds of import are told apart: *module-level* ones run when the module is
imported, *function-local* ones when the function is called (the CLI's commands import
their library this way, so that ``ramir --help`` stays light), *type-only* ones
(``if TYPE_CHECKING:``) never. A circle can only be made of module-level imports; a
layer is broken by an import of any kind (a function-local or type-only import of a
higher layer is still a dependency on it).

The layers, bottom first (docs/layout.md prints the same table). A module may import
its own package and the packages of lower layers; packages in one layer never import
each other. Inside ``ramir.inference`` and ``ramir.corpus`` the same rule holds between
their modules.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
DOC = Path(__file__).resolve().parents[1] / "docs" / "layout.md"

# Bottom first. An entry names a module or a package (with everything in it); "ramir" is
# the root package's __init__ alone (the facade: ramir.load_model, ramir.restore).
LAYERS: list[tuple[str, ...]] = [
    ("ramir._version", "ramir.errors", "ramir.options"),
    ("ramir.registry", "ramir.config", "ramir.runtime"),
    ("ramir.masking", "ramir.degradations", "ramir.distributed", "ramir.corpus"),
    ("ramir.data", "ramir.models"),
    ("ramir.checkpoint", "ramir.rampp"),
    ("ramir.attribution", "ramir.inference"),
    ("ramir.evaluation",),
    ("ramir.training",),
    ("ramir.demo", "ramir.webapp"),
    ("ramir.commands",),
    ("ramir.cli",),
    ("ramir.__main__", "ramir"),
]

# Layers inside a package, bottom first: every module of the package is listed (the
# package's __init__ under the package's own name).
SUBLAYERS: dict[str, list[tuple[str, ...]]] = {
    "ramir.inference": [
        ("ramir.inference.batching", "ramir.inference.sharding"),
        ("ramir.inference.tiling", "ramir.inference.context"),
        ("ramir.inference.plan", "ramir.inference.restore"),
        ("ramir.inference.batch", "ramir.inference.export"),
        ("ramir.inference",),
    ],
    "ramir.corpus": [
        ("ramir.corpus.archives", "ramir.corpus.manifest"),
        ("ramir.corpus.views",),
        ("ramir.corpus.fetch",),
        ("ramir.corpus",),
    ],
}

# Modules kept light: what their module-level imports (followed through, with the
# packages above them) must never load.
LIGHT: dict[str, tuple[str, ...]] = {
    # tiles and their blending work on any tensor, from any network
    "ramir.inference.tiling": ("ramir.models", "ramir.data"),
    # restoring a tensor needs no image reader
    "ramir.inference.restore": ("ramir.data",),
    # the evaluation's reader/writer threads: no network, no reader, no process group
    "ramir.inference.sharding": (
        "ramir.models",
        "ramir.data",
        "ramir.inference.restore",
        "ramir.distributed",
    ),
}

MODULE, LOCAL, TYPE_ONLY = "module-level", "function-local", "type-only"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: str  # MODULE, LOCAL or TYPE_ONLY
    line: int
    implicit: bool = False  # a package above the imported module


# ------------------------------------------------------------------- reading the graph


def find_modules(src: Path, package: str) -> dict[str, Path]:
    """``{dotted name: file}`` of every module under ``src/package`` (packages by name)."""
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _lazy_exports(package: str, tree: ast.Module) -> dict[str, str]:
    """``{name: module}`` of a package that exports names lazily (PEP 562): its
    ``__init__`` holds ``_EXPORTS = {"name": "submodule", ...}``, which its
    ``__getattr__`` imports on first use (``ramir.data`` does)."""
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["_EXPORTS"]
            and isinstance(node.value, ast.Dict)
        ):
            table = ast.literal_eval(node.value)
            return {name: f"{package}.{sub}" for name, sub in table.items()}
    return {}


def import_graph(src: Path, package: str = "ramir") -> tuple[set[str], list[Edge]]:
    """The modules of ``src/package`` and the imports between them (see the docstring)."""
    modules = find_modules(src, package)
    trees = {
        name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, path in modules.items()
    }
    lazy = {
        name: _lazy_exports(name, tree)
        for name, tree in trees.items()
        if modules[name].name == "__init__.py"
    }
    edges: list[Edge] = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node, kind in _walk_imports(trees[name].body, MODULE):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                assert isinstance(node, ast.ImportFrom)
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    origin = node.module or ""
                for alias in node.names:
                    sub = f"{origin}.{alias.name}"
                    if sub not in modules:
                        sub = lazy.get(origin, {}).get(alias.name, origin)
                    targets.append(sub)
            for target in targets:
                if target != package and not target.startswith(package + "."):
                    continue
                above_source = {name, *_ancestors(name)}
                for parent in _ancestors(target):
                    if parent not in above_source:
                        edges.append(Edge(name, parent, kind, node.lineno, implicit=True))
                if target != name:
                    edges.append(Edge(name, target, kind, node.lineno))
    return set(modules), edges


def _walk_imports(body: Sequence[ast.stmt], kind: str) -> Iterable[tuple[ast.stmt, str]]:
    """Every import statement under ``body`` with its kind: what a function body holds
    is function-local, what ``if TYPE_CHECKING:`` holds is type-only, everything else
    (class bodies, ``if``/``try``/``with`` blocks) runs with the module."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, kind
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _walk_imports(node.body, LOCAL if kind == MODULE else kind)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk_imports(node.body, TYPE_ONLY)
            yield from _walk_imports(node.orelse, kind)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from _walk_imports([child], kind)
                elif isinstance(child, (ast.ExceptHandler, ast.match_case)):
                    yield from _walk_imports(child.body, kind)


# --------------------------------------------------------------------- the two checks


def find_cycles(modules: Iterable[str], edges: Iterable[Edge]) -> list[list[str]]:
    """The circles of module-level imports: one path per strongly connected component
    (Tarjan), each listed from its smallest name and back to it."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        if e.kind == MODULE and e.source != e.target:
            graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the module count
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_circle(graph, c) for c in components]


def _one_circle(graph: Mapping[str, set[str]], component: set[str]) -> list[str]:
    """A shortest circle through the component's smallest name (breadth first)."""
    start = min(component)
    previous = {start: start}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError("a strongly connected component without a circle")


def _rank(
    module: str, layers: Sequence[tuple[str, ...]], sublayers: Mapping[str, list]
) -> tuple[str, int, str, int] | None:
    """``(package entry, layer, unit, sub-layer)`` of a module, or None if unplaced."""

    def place(table: Sequence[tuple[str, ...]], exact: str) -> tuple[str, int] | None:
        best: tuple[str, int] | None = None
        for i, layer in enumerate(table):
            for entry in layer:
                if module == entry or (entry != exact and module.startswith(entry + ".")):
                    if best is None or len(entry) > len(best[0]):
                        best = (entry, i)
        return best

    top = place(layers, exact=module.partition(".")[0])  # the root package: its __init__
    if top is None:
        return None
    entry, layer = top
    if entry in sublayers:
        sub = place(sublayers[entry], exact=entry)
        if sub is None:
            return None
        return entry, layer, sub[0], sub[1]
    return entry, layer, entry, 0


def layer_violations(
    modules: Iterable[str],
    edges: Iterable[Edge],
    layers: Sequence[tuple[str, ...]] = LAYERS,
    sublayers: Mapping[str, list] = SUBLAYERS,
) -> list[str]:
    """Every import (of any kind) that runs up a layer or across to another package of
    its own layer, as ``"a -> b (kind, line n)"``; unplaced modules first."""
    ranks = {m: _rank(m, layers, sublayers) for m in modules}
    found = [f"{m}: not in the layer table" for m, r in sorted(ranks.items()) if r is None]
    for e in edges:
        a, b = ranks[e.source], ranks[e.target]
        if e.implicit or a is None or b is None or a[2] == b[2]:
            continue
        if a[0] == b[0]:  # one package with layers of its own
            allowed = b[3] < a[3]
        else:
            allowed = b[1] < a[1]
        if not allowed:
            found.append(f"{e.source} -> {e.target} ({e.kind}, line {e.line})")
    return sorted(set(found))


def loads(start: str, modules: Iterable[str], edges: Iterable[Edge]) -> set[str]:
    """What importing ``start`` runs of ramir: its packages, itself, and what their
    module-level imports run, followed through."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        if e.kind == MODULE:
            graph[e.source].add(e.target)
    todo = [*_ancestors(start), start]
    seen: set[str] = set()
    while todo:
        v = todo.pop()
        if v not in seen:
            seen.add(v)
            todo.extend(graph[v])
    return seen


def _under(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# -------------------------------------------------------------------------- ramir itself

MODULES, EDGES = import_graph(SRC)


def test_every_module_is_read():
    """The reader sees the tree it checks (a wrong root would pass every check)."""
    assert {"ramir", "ramir.cli", "ramir.models.nafnet", "ramir.inference.restore"} <= MODULES
    assert len(MODULES) > 100
    kinds = {e.kind for e in EDGES}
    assert kinds == {MODULE, LOCAL, TYPE_ONLY}
    # the CLI imports its library inside the command functions
    assert any(
        e.source == "ramir.commands.restore" and e.target.startswith("ramir.inference")
        for e in EDGES
        if e.kind == LOCAL
    )


def test_no_import_circle():
    assert find_cycles(MODULES, EDGES) == []


def test_no_import_runs_up_a_layer():
    assert layer_violations(MODULES, EDGES) == []


@pytest.mark.parametrize("module", sorted(LIGHT))
def test_light_modules_stay_light(module):
    heavy = LIGHT[module]
    assert sorted(m for m in loads(module, MODULES, EDGES) if _under(m, heavy)) == []


def test_the_table_names_only_what_exists():
    entries = [e for layer in LAYERS for e in layer]
    entries += [e for table in SUBLAYERS.values() for layer in table for e in layer]
    top = [e for layer in LAYERS for e in layer]
    assert len(top) == len(set(top))
    for package, table in SUBLAYERS.items():
        inside = [e for layer in table for e in layer]
        assert package in top and package in inside and len(inside) == len(set(inside))
        assert sorted(m for m in MODULES if _under(m, [package]) and m not in inside) == []
    assert sorted(e for e in entries if e not in MODULES) == []


def test_the_graph_is_what_python_imports():
    """For a few modules, a fresh interpreter loads exactly the ramir modules that the
    graph's module-level imports say (so the reading of imports above is Python's)."""
    picks = [
        "ramir",
        "ramir.cli",
        "ramir.inference.tiling",
        "ramir.checkpoint.detect",
        "ramir.training.loop",
        "ramir.webapp.server",
    ]
    code = (
        "import importlib, json, sys\n"
        f"picks = {picks!r}\n"
        "found = {}\n"
        "for module in picks:\n"
        "    for name in [m for m in sys.modules if m == 'ramir' or m.startswith('ramir.')]:\n"
        "        del sys.modules[name]\n"
        "    importlib.import_module(module)\n"
        "    found[module] = sorted(m for m in sys.modules if m == 'ramir' or "
        "m.startswith('ramir.'))\n"
        "print(json.dumps(found))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert found == {m: sorted(loads(m, MODULES, EDGES)) for m in picks}


def test_docs_print_the_same_table():
    """docs/layout.md's table lists the layers above, bottom first."""
    text = DOC.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    listed = [
        tuple(sorted(part.strip(" `") for part in row.split("|")[2].split(","))) for row in rows
    ]
    expected = [tuple(sorted(e.removeprefix("ramir.") for e in layer)) for layer in LAYERS]
    assert listed == expected


# ------------------------------------------------------- the checker can fail (self-test)


def _package(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


TINY = {
    "__init__.py": "",
    "base.py": "import os\n\nthing = 1\n",
    "low/__init__.py": "from pkg import base\n",
    "low/a.py": "from pkg.low import b\nfrom . import c\n",
    "low/b.py": "from pkg.base import thing\n",
    "low/c.py": "",
    "lazy/__init__.py": (
        "import importlib\n"
        "_EXPORTS = {'thing': 'impl'}\n"
        "def __getattr__(name):\n"
        "    return getattr(importlib.import_module('pkg.lazy.' + _EXPORTS[name]), name)\n"
    ),
    "lazy/impl.py": "thing = 1\n",
    "high.py": (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import pkg.low.a\n"
        "if TYPE_CHECKING:\n"
        "    from pkg import cli\n"
        "def run():\n"
        "    from pkg.cli import main\n"
        "from pkg.lazy import thing\n"
    ),
    "cli.py": "from pkg import high\n",
}
TINY_LAYERS = [("pkg.base", "pkg.lazy"), ("pkg.low",), ("pkg.high",), ("pkg.cli", "pkg")]


def test_checker_reads_a_tiny_package(tmp_path):
    root = _package(tmp_path, TINY)
    modules, edges = import_graph(root, "pkg")
    low = {"pkg.low", "pkg.low.a", "pkg.low.b", "pkg.low.c"}
    assert modules == {"pkg", "pkg.base", *low, "pkg.lazy", "pkg.lazy.impl", "pkg.high", "pkg.cli"}
    plain = {(e.source, e.target, e.kind) for e in edges if not e.implicit}
    assert plain == {
        ("pkg.low", "pkg.base", MODULE),
        ("pkg.low.a", "pkg.low.b", MODULE),
        ("pkg.low.a", "pkg.low.c", MODULE),  # relative
        ("pkg.low.b", "pkg.base", MODULE),  # a name: the module it is in
        ("pkg.high", "pkg.low.a", MODULE),
        ("pkg.high", "pkg.cli", TYPE_ONLY),
        ("pkg.high", "pkg.cli", LOCAL),
        ("pkg.high", "pkg.lazy.impl", MODULE),  # a lazy export: its submodule
        ("pkg.cli", "pkg.high", MODULE),
    }
    # importing pkg.low.a from pkg.high runs pkg.low's __init__ first
    assert ("pkg.high", "pkg.low") in {(e.source, e.target) for e in edges if e.implicit}
    assert find_cycles(modules, edges) == []
    assert layer_violations(modules, edges, TINY_LAYERS, {}) == [
        "pkg.high -> pkg.cli (function-local, line 7)",
        "pkg.high -> pkg.cli (type-only, line 5)",
    ]
    assert loads("pkg.low.a", modules, edges) == {"pkg", "pkg.base", *low}
    # what Python itself loads
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "import pkg.high\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'pkg')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    python = json.loads(out)
    assert python == sorted(loads("pkg.high", modules, edges))
    assert "pkg.cli" not in python and "pkg.lazy.impl" in python


def test_checker_finds_an_injected_circle(tmp_path):
    files = dict(TINY, **{"low/c.py": "from pkg.high import run\n"})  # low.c -> high
    modules, edges = import_graph(_package(tmp_path, files), "pkg")
    assert find_cycles(modules, edges) == [["pkg.high", "pkg.low.a", "pkg.low.c", "pkg.high"]]
    assert "pkg.low.c -> pkg.high (module-level, line 1)" in layer_violations(
        modules, edges, TINY_LAYERS, {}
    )


def test_checker_fails_on_a_circle_injected_into_a_copy_of_ramir(tmp_path):
    """A copy of src/ramir with one import added (models.layers -> checkpoint: back up a
    layer, and round through checkpoint.detect, which imports ramir.models)."""
    import shutil

    shutil.copytree(SRC / "ramir", tmp_path / "ramir", ignore=shutil.ignore_patterns("assets"))
    layers = tmp_path / "ramir" / "models" / "layers.py"
    layers.write_text(layers.read_text() + "\nfrom ramir.checkpoint import load_model\n")
    modules, edges = import_graph(tmp_path)
    assert modules == MODULES
    circles = find_cycles(modules, edges)
    assert len(circles) == 1 and {"ramir.models.layers", "ramir.checkpoint"} <= set(circles[0])
    assert [v for v in layer_violations(modules, edges) if "ramir.models.layers" in v] == [
        f"ramir.models.layers -> ramir.checkpoint (module-level, line "
        f"{len(layers.read_text().splitlines())})"
    ]


def test_checker_finds_a_circle_through_a_package_init(tmp_path):
    """``from pkg.low import name`` in a module of pkg.low runs pkg.low's __init__,
    which is itself importing that module: a circle."""
    files = dict(TINY, **{"low/__init__.py": "from pkg.low.b import thing\n"})
    files["low/b.py"] = "from pkg.low import helper\n"
    modules, edges = import_graph(_package(tmp_path, files), "pkg")
    assert find_cycles(modules, edges) == [["pkg.low", "pkg.low.b", "pkg.low"]]


def test_checker_finds_a_sideways_import_and_an_unplaced_module(tmp_path):
    files = dict(TINY, **{"side.py": "import pkg.low\n", "extra.py": ""})
    modules, edges = import_graph(_package(tmp_path, files), "pkg")
    layers = [("pkg.base",), ("pkg.low", "pkg.side"), ("pkg.high",), ("pkg.cli", "pkg")]
    found = layer_violations(modules, edges, layers, {})
    assert "pkg.side -> pkg.low (module-level, line 1)" in found
    assert "pkg.extra: not in the layer table" in found
    sub = {"pkg.low": [("pkg.low.b", "pkg.low.c"), ("pkg.low.a",), ("pkg.low",)]}
    files["low/b.py"] = "from pkg.low import a\n"  # down the package's own layers: up
    modules, edges = import_graph(_package(tmp_path, files), "pkg")
    assert "pkg.low.b -> pkg.low.a (module-level, line 1)" in layer_violations(
        modules, edges, layers, sub
    )
