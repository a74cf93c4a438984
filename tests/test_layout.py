"""The house's rule: imports point one way (cli -> sweep, tools -> run -> models, data -> core) and close no
circle. Every import is read from the code's syntax: top-level and function-local ones, relative ones, and the
module names given as strings to importlib.import_module / __import__."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dltrain"
# A wing's floor: a module may import its own wing and the wings on lower floors, never a higher floor or a
# neighbour on its own floor (models and data, sweep and tools know nothing of each other).
FLOORS = {"core": 0, "models": 1, "data": 1, "run": 2, "sweep": 3, "tools": 3, "cli": 4}
FACADE = 5  # dltrain/__init__.py: the public names, loaded lazily; nothing inside the package imports it
NOT_CODE = {"starter"}  # `dltrain init`'s templates: files a user's project gets, not modules of dltrain


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package under root (a folder named like the package), by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        if not NOT_CODE & set(path.relative_to(root).parts):
            found[module_name(path, root)] = path
    return found


def imported_names(path: Path, name: str) -> list[tuple[int, str]]:
    """(line, dotted module name) of every import in the file, wherever it stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}|{base}") for alias in node.names]  # a module, or a name in base
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")):
            found.append((node.lineno, node.args[0].value))
    return found


def import_graph(root: Path) -> dict[str, set[tuple[int, str]]]:
    """module -> {(line, module it imports)}, within the package only (a `from a import b` that names a
    function rather than a module counts as an import of a)."""
    known = modules(root)
    graph: dict[str, set[tuple[int, str]]] = {}
    for name, path in known.items():
        graph[name] = set()
        for line, options in imported_names(path, name):
            target = next((t for t in options.split("|") if t in known), None)
            if target is not None:
                graph[name].add((line, target))
    return graph


def floor(name: str) -> tuple[str, int]:
    parts = name.split(".")
    if len(parts) == 1:
        return "", FACADE
    return parts[1], FLOORS.get(parts[1], FACADE)  # a module beside the wings (none today) stands with the facade


def upward_imports(root: Path) -> list[str]:
    """'file:line: a imports b' for each import into a higher floor or a neighbouring wing."""
    problems = []
    for name, targets in import_graph(root).items():
        wing, level = floor(name)
        for line, target in sorted(targets):
            to_wing, to_level = floor(target)
            if to_wing != wing and (to_level > level or (to_level == level and level != FACADE)):
                problems.append(f"{modules(root)[name].relative_to(root.parent)}:{line}: {name} ({wing or 'facade'}, "
                                f"floor {level}) imports {target} ({to_wing or 'facade'}, floor {to_level})")
    return problems


def circles(root: Path) -> list[list[str]]:
    """The import circles (strongly connected groups of more than one module, or a module importing itself)."""
    edges = {name: {t for _, t in targets} for name, targets in import_graph(root).items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the package is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in edges[node]:
                found.append(sorted(group))

    for name in sorted(edges):
        if name not in index:
            visit(name)
    return found


def test_every_import_points_down_or_stays_in_its_wing():
    assert upward_imports(PACKAGE) == []


def test_no_import_closes_a_circle():
    assert circles(PACKAGE) == []


def test_the_package_has_its_wings_and_each_says_what_it_may_import():
    for wing in FLOORS:
        init = PACKAGE / wing / "__init__.py"
        assert init.is_file(), wing
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, wing
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules beside the wings: {loose}"


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "dltrain"


def test_the_checker_finds_an_upward_import_of_every_kind(tmp_path):
    package = write_tree(tmp_path, {
        "dltrain/__init__.py": "", "dltrain/core/__init__.py": "", "dltrain/run/__init__.py": "",
        "dltrain/sweep/__init__.py": "", "dltrain/tools/__init__.py": "",
        "dltrain/core/engine.py": "def f():\n    from dltrain.run import train\n",  # function-local, upward
        "dltrain/core/files.py": "import importlib\nimportlib.import_module('dltrain.sweep.plan')\n",
        "dltrain/core/tags.py": "from ..run.train import x\n",  # relative
        "dltrain/run/train.py": "from dltrain.core import engine\nx = 1\n",  # downward: fine
        "dltrain/sweep/plan.py": "from dltrain.tools import board\n",  # a neighbour on the same floor
        "dltrain/tools/board.py": "",
    })
    found = upward_imports(package)
    assert [line.split(":")[0] for line in found] == ["dltrain/core/engine.py", "dltrain/core/files.py",
                                                     "dltrain/core/tags.py", "dltrain/sweep/plan.py"]
    assert "dltrain.core.engine (core, floor 0) imports dltrain.run.train (run, floor 2)" in found[0]


def test_the_checker_finds_a_circle_inside_one_wing(tmp_path):
    package = write_tree(tmp_path, {
        "dltrain/__init__.py": "", "dltrain/run/__init__.py": "",
        "dltrain/run/config.py": "from dltrain.run.door import check_across\n",
        "dltrain/run/door.py": "def f():\n    from dltrain.run import config\n",
        "dltrain/run/train.py": "from dltrain.run import config\n",
    })
    assert circles(package) == [["dltrain.run.config", "dltrain.run.door"]]
    assert upward_imports(package) == []
