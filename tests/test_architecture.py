"""The shape of the code (issue 12, docs/architecture.md): read from the imports with ``ast``.

- ``crdt/`` is the ground floor: it imports nothing from ``node/``, and ``node/`` uses only its
  public interface (``crdt/__init__.py``'s ``__all__``).
- No import circle anywhere in ``node/`` or ``crdt/``, counting imports inside functions too
  (an import hidden in a function to dodge a circle is still a circle).
- Layers: a module imports only from its own layer or below (``TYPE_CHECKING`` imports are
  types, not dependencies). Features reach the node and ``maia`` only through ``node.features``;
  ``node/api/`` (the SPEC-003 machinery) and ``node/transport/`` know no feature.
- Fewer than 20 imports inside function bodies, each with a one-line reason on the line above.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import crdt

ROOT = Path(__file__).resolve().parent.parent
FEATURES = ("node.memory", "node.devices", "node.mesh", "node.routing", "node.backup",
            "node.sessions", "node.web", "node.mcp", "node.search", "node.consolidation")
# Lowest first. A module may import from its own layer and the ones listed before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", ("crdt",)),
    ("machinery", ("node.transport", "node.api", "node.config", "node.logs", "node.memtrim",
                   "node.heap", "node.datadir", "node.scopes", "node.files", "node.cli.common",
                   "node.cli.client")),
    ("features", ("node.features", "node.status", *FEATURES)),
    ("process", ("node.node", "node.cli", "node.apidoc")),
]
MAX_FUNCTION_IMPORTS = 20


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (node/ or crdt/ only)
    line: int
    in_function: bool


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _modules() -> dict[str, Path]:
    paths = [*(ROOT / "node").rglob("*.py"), *(ROOT / "crdt").rglob("*.py")]
    return {_module_name(p)[0]: p for p in paths}


MODULES = _modules()


def _known(name: str) -> str | None:
    """The module ``name`` refers to: itself, else its nearest enclosing package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> list[Import]:
    _, is_package = _module_name(path)
    tree = ast.parse(path.read_text())
    out: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # types only: not a dependency at run time
            if isinstance(child, ast.If) and ast.unparse(child.test) == "__name__ == '__main__'":
                continue  # a script's own start (python -m), never run by an importer
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - child.level + 1]
                    prefix = ".".join(base + ([child.module] if child.module else []))
                else:
                    prefix = child.module or ""
                names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix
                         for a in child.names]
            else:
                visit(child, inner)
                continue
            for name in names:
                target = _known(name) if name.split(".")[0] in ("node", "crdt") else None
                if target and target != module:
                    out.append(Import(module, target, child.lineno, in_function))

    visit(tree, False)
    return out


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports(module, path)]


def _layer(module: str) -> int:
    best, found = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    assert found >= 0, f"{module} belongs to no layer: add it to LAYERS"
    return found


def _feature(module: str) -> str | None:
    return next((f for f in FEATURES if module == f or module.startswith(f + ".")), None)


def test_crdt_imports_nothing_from_node() -> None:
    bad = [f"{i.source}:{i.line} imports {i.target}" for i in IMPORTS
           if i.source.startswith("crdt") and i.target.startswith("node")]
    assert not bad, bad


def test_node_uses_only_the_public_interface_of_crdt() -> None:
    bad = [f"{i.source}:{i.line} imports {i.target}" for i in IMPORTS
           if i.source.startswith("node") and i.target != "crdt" and i.target.startswith("crdt")]
    assert not bad, bad
    assert set(crdt.__all__) <= set(vars(crdt)), "crdt.__all__ names something it lacks"


def test_no_import_circle() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        graph[imp.source].add(imp.target)
    circles = _circles(graph)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
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


def test_the_tarjan_walk_finds_a_planted_circle() -> None:
    """The circle check is not vacuous: a planted circle is found, a line is not."""
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_from_a_higher_layer() -> None:
    bad = [f"{i.source}:{i.line} ({LAYERS[_layer(i.source)][0]}) imports {i.target} "
           f"({LAYERS[_layer(i.target)][0]})"
           for i in IMPORTS if not i.in_function and _layer(i.target) > _layer(i.source)]
    assert not bad, bad


def test_machinery_and_features_know_no_other_feature_by_accident() -> None:
    """node/api and node/transport import no feature; a feature imports another only where
    listed here (the web page shows documents, devices and peers)."""
    allowed = {("node.web", "node.devices"), ("node.web", "node.mesh"),
               ("node.routing", "node.mesh"), ("node.sessions", "node.memory"),
               ("node.sessions", "node.mesh"), ("node.memory", "node.sessions"),
               # the MCP server serves sessions' memory; sessions install it with the hooks
               ("node.mcp", "node.sessions"), ("node.mcp", "node.memory"),
               ("node.sessions", "node.mcp"),
               # the search index reads memory's entry ids and kinds
               ("node.search", "node.memory"),
               # search embeds through the embedding cortex the router chooses (SPEC-006 §13.6)
               ("node.search", "node.routing"),
               # consolidation writes facts, skills and pins as signed memory entries
               ("node.consolidation", "node.memory"),
               # a device's storage tells which of its memory documents list no entry
               ("node.devices", "node.memory")}
    bad = []
    for i in IMPORTS:
        src, dst = _feature(i.source), _feature(i.target)
        if dst is None or src == dst:
            continue
        if src is None and _layer(i.source) <= 1:
            bad.append(f"{i.source}:{i.line} (machinery) imports feature {i.target}")
        elif src is not None and (src, dst) not in allowed:
            bad.append(f"{i.source}:{i.line} ({src}) imports {i.target} ({dst})")
    assert not bad, bad


def test_few_imports_inside_functions_and_each_says_why() -> None:
    inside: dict[str, bool] = {}
    for path in [*(ROOT / "node").rglob("*.py"), *(ROOT / "crdt").rglob("*.py")]:
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Import | ast.ImportFrom):
                        above = lines[sub.lineno - 2].strip()
                        inside[f"{path.relative_to(ROOT)}:{sub.lineno}"] = (
                            above.startswith("#") or "#" in lines[sub.lineno - 1])
    assert len(inside) < MAX_FUNCTION_IMPORTS, sorted(inside)
    assert all(inside.values()), sorted(where for where, reason in inside.items() if not reason)


def test_maia_starts_without_the_features_http_and_peer_code() -> None:
    """``maia`` builds its whole parser (every feature's commands, registered through the
    FEATURES entries) without importing aiohttp, zeroconf, SPAKE2 or litellm: only ``maia up``
    and ``maia pair`` load them."""
    code = ("import sys, node.cli; node.cli.build_parser(); "
            "print(sorted(m for m in ('aiohttp', 'zeroconf', 'spake2', 'litellm') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
