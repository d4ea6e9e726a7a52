"""The code's shape as tests: layers import one way, no import circles, short functions and files.

The layers, lowest first (ARCHITECTURE.md draws them):

    ingest -> retrieve -> generate -> tune -> serve -> evals -> ragtune_cli

A module may import its own package and any lower layer, never a higher one. Every import counts: top-level ones,
the lazy ones inside functions (kept lazy for start-up time, not to hide an arrow) and those under TYPE_CHECKING.
Inside a package the modules' imports must form no circle either, so each package reads bottom-up too.

    pytest -q tests/test_layers.py
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["ingest", "retrieve", "generate", "tune", "serve", "evals", "ragtune_cli"]
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 400
# Arrows known to point the wrong way, each with the move that removes it. Keep it empty; never add to it.
PENDING: set[str] = set()


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of every layer."""
    found = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules one module imports, anywhere in its body (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import module` imports the module; `from module import name` the module itself
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in known else base)
    found = set()
    for target in targets:
        # `import a.b.c` names a.b.c; keep the longest project module it starts with
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a lower layer to a higher one, as 'a -> b'."""
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if _layer(b) > _layer(a))


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan), package level and module level."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for a, targets in graph.items():
        pa = a.split(".")[0]
        packages.setdefault(pa, set()).update(b.split(".")[0] for b in targets if b.split(".")[0] != pa)
    return packages


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[tuple[int, str]]:
    """(lines, 'file:function') for every function longer than `limit` lines outside tests."""
    found = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append((lines, f"{path.relative_to(ROOT)}:{node.name}"))
    return sorted(found, reverse=True)


def long_files(limit: int = MAX_FILE_LINES) -> list[tuple[int, str]]:
    found = []
    for path in _modules().values():
        lines = len(path.read_text().splitlines())
        if lines > limit:
            found.append((lines, str(path.relative_to(ROOT))))
    return sorted(found, reverse=True)


def _graph_without_pending() -> dict[str, set[str]]:
    graph = _graph()
    for arrow in PENDING:
        a, b = arrow.split(" -> ")
        graph[a].discard(b)
    return graph


def test_no_arrow_goes_up_the_layers():
    assert upward_arrows(_graph()) == sorted(PENDING)


def test_no_import_circle_between_packages():
    assert circles(package_graph(_graph_without_pending())) == []


def test_no_import_circle_inside_a_package():
    assert circles(_graph()) == []


def test_functions_stay_under_80_lines():
    assert long_functions() == []


def test_files_stay_under_400_lines():
    assert long_files() == []


def test_every_layer_is_an_installed_package():
    """pyproject's package list names every layer, so `pip install .` ships them all."""
    text = (ROOT / "pyproject.toml").read_text()
    for package in LAYERS:
        assert f'"{package}"' in text, package


if __name__ == "__main__":  # a report of where the code stands: python tests/test_layers.py
    g = _graph()
    print("upward arrows:", len(upward_arrows(g)))
    for arrow in upward_arrows(g):
        print("  ", arrow)
    print("package circles:", circles(package_graph(g)))
    print("module circles:")
    for c in circles(g):
        print("  ", c)
    print("long functions:", long_functions())
    print("long files:", long_files())
