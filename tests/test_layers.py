"""The shape of the code: no import cycle, and every import points down the layers.

Every module under ``src/tidings`` is parsed (not imported) and its *module-level* imports
make the graph: what runs when the module is imported, class bodies and top-level ``try``
included; imports inside functions (deferred) and under ``if TYPE_CHECKING:`` (types only)
are not edges. ``from a import b`` is an edge to ``a`` and, when ``a.b`` is a module, to
``a.b`` too (importing ``a.b`` runs ``a/__init__`` first).

:data:`LAYERS` is the design, lowest first. A module belongs to the layer of its longest
matching prefix; it may import its own layer and any layer below, never one above.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: list[tuple[str, ...]] = [
    # the leaves: the domain's words and small tools that import nothing above them
    (
        "tidings",  # the package itself (its version)
        "tidings.vocabulary",
        "tidings.errors",
        "tidings.durations",
        "tidings.ids",
        "tidings.clock",
        "tidings.json_input",
        "tidings.crypto",
        "tidings.metrics",
        "tidings.availability",
        "tidings.ratelimit",
    ),
    ("tidings.client",),  # the shop's Python client: leaves only, never the server's code
    ("tidings.config",),
    ("tidings.templates",),
    ("tidings.events",),  # CloudEvents and the catalog (the AMQP intake is higher up)
    ("tidings.strategy",),
    ("tidings.queue",),
    ("tidings.store",),
    ("tidings.channels",),
    ("tidings.delivery",),
    ("tidings.broadcasts",),
    ("tidings.events.amqp",),  # the AMQP intake: a consumer writing to the store
    ("tidings.runtime",),
    ("tidings.api",),
    ("tidings.web",),  # the dashboard reads through the API's helpers
    ("tidings.api.app",),  # the composition root: every router, the dashboard's too
    # ``tidings check`` (every layer's view of a config) and the command line
    (
        "tidings.config_check",
        "tidings.packs",
        "tidings.reports",
        "tidings.keys_cli",
        "tidings.demo",
        "tidings.cli",
    ),
]


def modules() -> dict[str, Path]:
    """Every module under src/tidings by its dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in sorted((SRC / "tidings").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _module_level(block)
            for handler in node.handlers:
                yield from _module_level(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _module_level(node.body)


def _deferred(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements inside functions (run when the function is first called)."""
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    yield node


def _base(name: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = package[: len(package) - node.level + 1]
    return ".".join([*package, node.module] if node.module else package)


def import_graph(found: dict[str, Path], *, deferred: bool = False) -> dict[str, set[str]]:
    """Module → the tidings modules it imports at module level (``deferred``: in functions)."""
    graph: dict[str, set[str]] = {name: set() for name in found}
    for name, path in found.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in _deferred(tree) if deferred else _module_level(tree.body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _base(name, path, node)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            graph[name].update(t for t in targets if t in found and t != name)
    return graph


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of the longest prefix naming ``module``."""
    best, length = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(modules())


def test_the_graph_sees_module_level_imports_only(graph: dict[str, set[str]]) -> None:
    # a module-level import is an edge; the sanity check that the parse found the real graph
    assert "tidings.vocabulary" in graph["tidings.config"]
    assert "tidings.queue.inbox_hub" in graph["tidings.runtime.processor"]
    assert graph["tidings.vocabulary"] == set()


def test_no_import_cycle_among_modules(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_cycles_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    assert [m for m in graph if layer_of(m) < 0] == []


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a layer above the importer's, in words."""
    return sorted(
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )


def test_every_import_points_down_the_layers(graph: dict[str, set[str]]) -> None:
    assert upward(graph) == []


def test_no_deferred_import_points_up_either() -> None:
    # an import inside a function makes no cycle at import time, but it is the same leak
    deferred = import_graph(modules(), deferred=True)
    assert "tidings.cli" in {m for m, targets in deferred.items() if targets}
    assert upward(deferred) == []


def test_upward_names_an_import_of_a_higher_layer() -> None:
    graph = {"tidings.config": {"tidings.channels.base"}, "tidings.cli": {"tidings.config"}}
    assert upward(graph) == ["tidings.config (layer 2) imports tidings.channels.base (layer 8)"]


def test_the_vocabulary_is_a_leaf(graph: dict[str, set[str]]) -> None:
    assert graph["tidings.vocabulary"] == set()
    assert "tidings.vocabulary" in LAYERS[0]
