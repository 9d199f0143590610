"""The packages import one way: each imports only packages on the floors below it.

Every ``import`` in every file counts, at module level or inside a function, except those under
``if TYPE_CHECKING:`` (annotations only, never run). A unit is a subpackage of
``rtdetr_tao`` (``config``, ``data``, ...), one of its top-level modules (``errors``, ``cli``, ...), ``__init__``
(the package itself) or ``rtdetr_deploy`` as a whole. ``python tests/test_layering.py`` prints the unit graph.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"rtdetr_tao": ROOT / "rtdetr_tao", "rtdetr_deploy": ROOT / "deploy"}

FLOORS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors"),
    ("io", "progress"),
    ("ops", "catalog", "relay", "metadata", "commands"),
    ("config",),
    ("eval",),
    ("data",),
    ("model",),
    ("outputs",),
    ("runtime",),
    ("export", "engine"),
    ("automl", "predictor"),
    ("actions",),
    ("cli",),
    ("rtdetr_deploy",),
)
"""Lowest first. A unit may import units on lower floors only; units on one floor do not import each other."""


def _module_name(package: str, path: Path) -> str:
    parts = path.relative_to(PACKAGES[package]).with_suffix("").parts
    return ".".join((package, *(parts[:-1] if parts[-1] == "__init__" else parts)))


def _known_module(name: str) -> bool:
    package, *rest = name.split(".")
    if package not in PACKAGES:
        return False
    base = PACKAGES[package].joinpath(*rest)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The modules (of our packages) one import statement names, resolved to absolute dotted names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join([*anchor, node.module] if node.module else anchor)
    names = [f"{base}.{alias.name}" for alias in node.names]
    return [name if _known_module(name) else base for name in names]  # `from pkg import module` or a name


def _is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:``: imports for annotations only, which never run."""
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def import_edges() -> set[tuple[str, str]]:
    """(importing module, imported module) for every import of one of our modules, at any depth of the file."""
    edges: set[tuple[str, str]] = set()
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            module = _module_name(package, path)
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block) for n in ast.walk(block)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in typing_only:
                    for target in _imported(node, module, path.name == "__init__.py"):
                        if target.split(".")[0] in PACKAGES:
                            edges.add((module, target))
    return edges


def unit(module: str) -> str:
    """The floor unit of a module: its rtdetr_tao subpackage or top-level module, or rtdetr_deploy."""
    parts = module.split(".")
    if parts[0] != "rtdetr_tao":
        return parts[0]
    return parts[1] if len(parts) > 1 else "__init__"


def unit_graph(edges: set[tuple[str, str]]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in edges:
        if unit(source) != unit(target):
            graph[unit(source)].add(unit(target))
    return graph


FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


def test_every_unit_is_on_one_floor() -> None:
    declared = [name for names in FLOORS for name in names]
    tao = PACKAGES["rtdetr_tao"]
    on_disk = {p.stem for p in tao.glob("*.py")} | {p.parent.name for p in tao.glob("*/__init__.py")}
    assert sorted(declared) == sorted(on_disk | {"rtdetr_deploy"})


def test_no_package_imports_a_higher_one() -> None:
    upward = sorted(
        (source, target)
        for source, target in import_edges()
        if FLOOR[unit(target)] >= FLOOR[unit(source)] and unit(source) != unit(target)
    )
    found = [f"{source} imports {target}" for source, target in upward]
    assert not found, "imports of a package on the same or a higher floor (see FLOORS):\n" + "\n".join(found)


def test_the_documented_package_map_is_the_code() -> None:
    """docs/architecture.md's table lists every unit on the floor FLOORS gives it, and nothing else."""
    rows = re.findall(r"^\| (\d+) \| `([\w]+)` \|", (ROOT / "docs" / "architecture.md").read_text(), re.MULTILINE)
    assert {name: int(level) for level, name in rows} == FLOOR
    assert len(rows) == len(FLOOR)


def test_the_graph_sees_function_level_and_relative_imports() -> None:
    edges = import_edges()
    assert ("rtdetr_tao.cli", "rtdetr_tao.data.localize") in edges  # inside a function
    assert ("rtdetr_tao.engine.ema", "rtdetr_tao.engine.distributed") in edges  # `from .distributed import unwrap`
    assert ("rtdetr_tao.cli", "rtdetr_tao") in edges  # `from . import __version__`


if __name__ == "__main__":
    graph = unit_graph(import_edges())
    width = max(map(len, FLOOR))
    for name in sorted(FLOOR, key=lambda n: (FLOOR[n], n)):
        targets = sorted(graph.get(name, ()), key=lambda n: (FLOOR[n], n))
        marked = [t + (" ^" if FLOOR[t] >= FLOOR[name] else "") for t in targets]
        print(f"{FLOOR[name]:>2} {name:<{width}} -> {', '.join(marked) or '-'}")
