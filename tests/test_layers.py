"""The package's layers import one way only, and nothing inside imports the top-level package.

Layers, lowest first: ``errors`` / ``_version`` / ``_threads``; ``schemas``; ``store``; the stages that use
stores (``inputs``, ``annotators``, ``scoring``, ``export``, ``viz``, ``view``, ``stats``);
``distributed``; ``cli``. A module may import its own layer or lower ones, never higher.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gbc"

RANK = {
    "errors": 0, "_version": 0, "_threads": 0,
    "schemas": 1,
    "store": 2,
    "inputs": 3, "annotators": 3, "scoring": 3, "export": 3, "viz": 3, "view": 3, "stats": 3,
    "distributed": 4,
    "cli": 5,
}


def _part(module: str) -> str:
    """``gbc.store.files`` -> ``store``; ``gbc.stats`` -> ``stats``."""
    return module.split(".")[1]


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        yield name, path


def _imports(path: Path):
    """Every ``gbc`` import of a module, top-level or inside functions: (line, imported module, names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "gbc" or alias.name.startswith("gbc."):
                    yield node.lineno, alias.name, ("gbc",) if alias.name == "gbc" else ()
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "gbc" or node.module.startswith("gbc."):
                yield node.lineno, node.module, tuple(a.name for a in node.names)


def test_every_package_part_has_a_layer():
    parts = {_part(name) for name, _ in _modules() if name != "gbc"}
    assert parts <= set(RANK), f"give these a layer in RANK: {sorted(parts - set(RANK))}"


def test_no_module_imports_a_higher_layer_or_the_top_level_package():
    problems = []
    for name, path in _modules():
        if name == "gbc":  # the top-level package only re-exports
            continue
        own = RANK[_part(name)]
        for line, target, names in _imports(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if target == "gbc":
                allowed = {"_version", "errors"}
                if not set(names) <= allowed:
                    problems.append(f"{where} imports the top-level package ({', '.join(names) or 'gbc'})")
                continue
            if RANK[_part(target)] > own:
                problems.append(f"{where}: {name} (layer {own}) imports {target} (layer {RANK[_part(target)]})")
    assert not problems, "\n".join(problems)


def test_no_import_cycle_between_package_parts():
    import networkx as nx

    graph = nx.DiGraph()
    for name, path in _modules():
        if name == "gbc":
            continue
        for _, target, _ in _imports(path):
            if target != "gbc" and _part(target) != _part(name):
                graph.add_edge(_part(name), _part(target))
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles between parts of the package: {cycles}"


def test_no_import_cycle_between_modules():
    """Module by module, counting imports inside functions too (a lazy import is still a dependency)."""
    import networkx as nx

    graph = nx.DiGraph()
    names = {name for name, _ in _modules()}
    for name, path in _modules():
        if name == "gbc":
            continue
        for _, target, imported in _imports(path):
            # ``from gbc.store import files`` names a module; ``from gbc.store import GraphStore`` a name.
            targets = [f"{target}.{n}" for n in imported if f"{target}.{n}" in names] or [target]
            for t in targets:
                if t != name and t != "gbc" and not name.startswith(t + "."):
                    graph.add_edge(name, t)
    # A package's __init__ re-exporting its own modules is not a cycle of substance.
    cycles = [c for c in nx.simple_cycles(graph) if not any(
        other.startswith(m + ".") for m in c for other in c)]
    assert not cycles, f"import cycles between modules: {cycles[:5]}"
