"""The package's import graph: no circles between modules, no import from a later layer of docs/ARCHITECTURE.md.

Every `import` / `from ... import` statement anywhere in a module counts (module level, inside functions, under
`TYPE_CHECKING`): an import moved into a function still closes a circle, it only delays it to run time.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "radfinder"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def module_files(package_dir: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package __init__) for every .py file under `package_dir`."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def import_edges(package_dir: Path) -> dict[str, dict[str, int]]:
    """Module -> {imported module of the same package: first line number}.

    `from a.b import c` is an edge to `a.b.c` when that is a module, else to `a.b`. The parent packages that
    Python initialises on the way (`a` for `import a.b`) are not edges: a package `__init__` re-exporting its own
    submodules would otherwise be a circle with each of them.
    """
    top = package_dir.name
    mods = module_files(package_dir)
    edges: dict[str, dict[str, int]] = {}
    for name, (path, is_pkg) in mods.items():
        out = edges.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    targets.append(sub if sub in mods else module)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                if (target == top or target.startswith(top + ".")) and target != name:
                    out.setdefault(target, node.lineno)
    return edges


def find_cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(comps, key=len, reverse=True)


def documented_layers(text: str) -> list[list[str]]:
    """The layers of the '## Layers' list: one per entry (a line starting with '->' begins the next one), each the
    backticked names outside parentheses (what is in parentheses describes the layer: `apply_spec`, `Volume`)."""
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    entries: list[str] = []
    for line in section.splitlines()[1:]:
        if not line.strip():
            break  # the list ends at its first blank line
        if line.startswith("->") or not entries:
            entries.append(line)
        else:  # a continuation line of the entry above
            entries[-1] += " " + line
    layers = []
    for entry in entries:
        while re.search(r"\([^()]*\)", entry):
            entry = re.sub(r"\([^()]*\)", "", entry)
        layers.append(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", entry))
    return layers


def layer_violations(edges: dict[str, dict[str, int]], layers: list[list[str]]) -> list[str]:
    """Imports from a later layer, plus top-level modules the layer list does not place."""
    level = {name: i for i, names in enumerate(layers) for name in names}
    problems = []

    def layer_of(module: str) -> int | None:
        parts = module.split(".")
        if len(parts) == 1:  # the package root: only __version__, a base utility
            return 0
        return level.get(parts[1])

    for module in sorted(edges):
        if layer_of(module) is None:
            problems.append(f"{module}: top-level `{module.split('.')[1]}` is in no layer of docs/ARCHITECTURE.md")
    for module, targets in sorted(edges.items()):
        mine = layer_of(module)
        for target, line in sorted(targets.items()):
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                problems.append(f"{module} (line {line}) imports {target}, a later layer")
    return problems


# ---------------------------------------------------------------- the checks on radfinder itself


@pytest.fixture(scope="module")
def edges():
    return import_edges(PACKAGE)


def test_no_import_cycles(edges):
    cycles = find_cycles(edges)
    detail = [" <-> ".join(c) + ": " + "; ".join(f"{a} -> {b} (line {edges[a][b]})" for a in c for b in c
                                               if b in edges[a]) for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(detail)


def test_imports_follow_the_documented_layers(edges):
    layers = documented_layers(ARCHITECTURE.read_text())
    assert ["errors", "config", "device", "progress"] in layers and ["cli", "__main__"] in layers
    assert layers.index(["io"]) < layers.index(["models"]) < layers.index(["eval"])
    problems = layer_violations(edges, layers)
    assert not problems, "\n".join(problems)


def test_the_three_former_two_file_loops_stay_resolved(edges):
    """The loops the design split (not imports moved into functions): one direction only, each."""
    pairs = [
        ("radfinder.losses.siglip", "radfinder.losses.siglip_dist"),
        ("radfinder.models.astra", "radfinder.models.resnet3d"),
        ("radfinder.models.pretrained", "radfinder.models.radfinder"),
    ]
    for upper, lower in pairs:
        assert lower in edges[upper], f"{upper} should build on {lower}"
        assert upper not in edges[lower], f"{lower} imports {upper} again"


# ---------------------------------------------------------------- the checker finds what it should


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_checker_sees_cycles_hidden_in_functions_and_upward_imports(tmp_path):
    pkg = tmp_path / "toy"
    _write(pkg, "__init__.py", "from .low import a\n")
    _write(pkg, "low/__init__.py", "")
    _write(pkg, "low/a.py", "def f():\n    from ..high.b import g  # hidden in a function\n    return g\n")
    _write(pkg, "high/__init__.py", "from . import b\n")
    _write(pkg, "high/b.py", "from toy.low import a\nfrom ..low.a import f as g\n")
    _write(pkg, "high/c.py", "import toy.high.b\n")
    edges = import_edges(pkg)
    assert edges["toy.high.b"] == {"toy.low.a": 1}
    assert edges["toy.low.a"] == {"toy.high.b": 2}
    assert edges["toy.high"] == {"toy.high.b": 1} and edges["toy.high.c"] == {"toy.high.b": 1}
    assert find_cycles(edges) == [["toy.high.b", "toy.low.a"]]

    doc = "## Layers\n`low` (base, `Thing` (`x`))\n-> `high` (top;\n  `low.a.f`), `other`\n\n`no`\n## Next\n"
    layers = documented_layers(doc)
    assert layers == [["low"], ["high", "other"]]
    assert layer_violations(edges, layers) == ["toy.low.a (line 2) imports toy.high.b, a later layer"]
    assert layer_violations(edges, [["high"]])[0].startswith("toy.low: top-level `low` is in no layer")
