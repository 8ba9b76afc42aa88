"""The package's shape: no module of `mcp_gateway` imports itself back, directly or through others."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import mcp_gateway

PACKAGE_ROOT = Path(mcp_gateway.__file__).parent


def _module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: set[str]) -> Iterator[str]:
    """The modules of the package that one import statement loads (relative imports resolved)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        # `from .x import y` in module a.b.c is relative to a.b; in package a.b (its __init__) to a.b itself.
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    for alias in node.names:
        # `from pkg import sub` loads the submodule; `from mod import name` loads the module only.
        submodule = f"{target}.{alias.name}"
        yield submodule if submodule in modules else target


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the package modules it imports, from every `import` statement in its AST.

    Every statement counts wherever it sits: at the top, inside a function (an import hidden in a function
    is how a cycle is usually papered over) and under `if TYPE_CHECKING:` (mypy and any other reader of the
    annotations still see the cycle, and one deleted guard makes it real). Importing `a.b.c` also runs the
    `__init__` of `a` and `a.b`; those implicit edges are left out, as import tools do, because every
    submodule would otherwise be in a cycle with a package `__init__` that re-exports from it.
    """
    files = {_module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges.update(t for t in _imported(node, module, is_package, modules) if t in modules and t != module)
        graph[module] = edges
    return graph


def import_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def _write(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_mcp_gateway_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE_ROOT)
    assert "mcp_gateway.errors" in graph  # the walk found the package
    cycles = import_cycles(graph)
    assert cycles == [], "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_only_the_cli_and_the_demo_import_the_development_issuer() -> None:
    # devissuer/__init__.py: development only; nothing on the gateway's own path may depend on it.
    importers = {
        module
        for module, edges in import_graph(PACKAGE_ROOT).items()
        if not module.startswith("mcp_gateway.devissuer") and any(e.startswith("mcp_gateway.devissuer") for e in edges)
    }
    assert importers == {"mcp_gateway.cli", "mcp_gateway.demo"}


def test_a_cycle_through_a_function_level_relative_import_is_found(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "sub/__init__.py": "",
            "sub/a.py": "from pkg.b import thing\n",
            "b.py": "def thing():\n    from .sub import a\n    return a\n",
            "c.py": "import pkg.b\n",
        },
    )
    assert import_cycles(import_graph(root)) == [["pkg.b", "pkg.sub.a"]]


def test_a_cycle_through_a_type_checking_import_is_found(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "pkg",
        {
            "__init__.py": "from .a import A\n",
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\nclass A: ...\n",
            "b.py": "from . import a\nclass B: ...\n",
        },
    )
    assert import_cycles(import_graph(root)) == [["pkg.a", "pkg.b"]]


def test_a_package_init_that_re_exports_its_submodules_is_not_a_cycle(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "pkg",
        {"__init__.py": "from pkg.a import A\n", "a.py": "from pkg.b import B\nA = B\n", "b.py": "B = 1\n"},
    )
    assert import_graph(root) == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": set()}
    assert import_cycles(import_graph(root)) == []


MAX_MODULE_LINES = 400


def modules_over(root: Path, limit: int) -> dict[str, int]:
    """Modules longer than `limit` lines: past ~400 a module holds more than one concern (CONVENTIONS.md)."""
    sizes = {
        _module_name(path, root): len(path.read_text(encoding="utf-8").splitlines()) for path in root.rglob("*.py")
    }
    return {module: lines for module, lines in sizes.items() if lines > limit}


def test_no_module_of_the_package_is_over_400_lines() -> None:
    assert modules_over(PACKAGE_ROOT, MAX_MODULE_LINES) == {}


def test_the_size_check_names_a_module_over_the_limit(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "long.py").write_text("x = 1\n" * 401)
    (package / "short.py").write_text("x = 1\n" * 400)
    assert modules_over(package, MAX_MODULE_LINES) == {"pkg.long": 401}
