"""The package's layering: no import circle between subpackages and no upward import.

Every `import` / `from ... import` in `metareason/` counts, function-local ones included (that is
where upward imports hide). A subpackage (or top-level module) may import its own layer's other
members only without forming a circle, and lower layers freely; an import of a higher layer is an
upward import. Run as a script to print the counts:

    python tests/test_layers.py
"""

from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1] / "metareason"

# Bottom to top. model and data at the bottom, commands at the top (DESIGN.md "One way to do each thing").
LAYERS = [
    {"errors", "tokenize", "model", "stats"},
    {"tasks", "parallel", "sample"},
    {"data", "format"},
    {"runs"},
    {"probe", "evaluate"},
    {"inner"},
    {"train"},
    {"studies"},
    {"reproduce"},
    {"cli", "selfcheck", "demo", "__init__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def unit_of(path: pathlib.Path) -> str:
    """The subpackage (or top-level module) a file of `metareason/` belongs to."""
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_units(path: pathlib.Path) -> set[str]:
    """The `metareason` units a file imports, anywhere in it (top level or inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    pkg = path.relative_to(ROOT.parent).with_suffix("").parts[:-1]  # ("metareason", "probe")
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = list(pkg[:len(pkg) - node.level + 1])
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
            if names[0] == "metareason":  # from metareason import probe, train
                names = [f"metareason.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "metareason" and len(parts) > 1:
                out.add(parts[1])
    return out


def graph() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> the files (relative to the repo) that import it."""
    g: dict[str, dict[str, list[str]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        src = unit_of(path)
        for dst in imported_units(path):
            if dst != src:
                g.setdefault(src, {}).setdefault(dst, []).append(str(path.relative_to(ROOT.parent)))
    return g


def cycles(g: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The elementary circles between units (each once, starting from its smallest name)."""
    found = set()

    def walk(start, node, path):
        for nxt in g.get(node, {}):
            if nxt == start:
                found.add(tuple(path))
            elif nxt not in path and nxt > start:
                walk(start, nxt, path + [nxt])

    for start in sorted(g):
        walk(start, start, [start])
    return [list(c) for c in sorted(found)]


def upward(g: dict[str, dict[str, list[str]]]) -> list[tuple[str, str, list[str]]]:
    """Imports of a higher layer (or of a unit no layer names): (importer, imported, files)."""
    bad = []
    for src, dsts in sorted(g.items()):
        for dst, files in sorted(dsts.items()):
            if RANK.get(dst, len(LAYERS)) > RANK.get(src, -1):
                bad.append((src, dst, files))
    return bad


def test_every_unit_has_a_layer():
    units = {unit_of(p) for p in ROOT.rglob("*.py")}
    assert units <= set(RANK), f"add {sorted(units - set(RANK))} to LAYERS in tests/test_layers.py"


def test_no_import_circle():
    assert cycles(graph()) == []


def test_no_upward_import():
    assert [f"{s} -> {d} ({', '.join(f)})" for s, d, f in upward(graph())] == []


if __name__ == "__main__":
    g = graph()
    cs, up = cycles(g), upward(g)
    local = len({(p, m.lineno) for p in ROOT.rglob("*.py") for n in ast.walk(ast.parse(p.read_text()))
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for m in ast.walk(n) if isinstance(m, (ast.Import, ast.ImportFrom))})
    print(f"{len(cs)} circles, {len(up)} upward imports, {local} function-local imports")
    for c in cs:
        print("circle:", " -> ".join(c + c[:1]))
    for s, d, f in up:
        print(f"upward: {s} -> {d} ({', '.join(f)})")
    sys.exit(1 if cs or up else 0)
