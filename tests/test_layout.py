"""The package's layout rules, read from the source with ``ast``.

* Dependencies run one way: primitives <- families <- engine. A primitive (a module at the
  top of ``detviz/``) imports only other primitives; a family folder imports primitives and
  other families; ``datasets`` imports primitives; ``evaluation`` imports no model code;
  ``viz`` imports nothing that trains or evaluates; ``cli`` (the commands) may import any part.
* Only ``detviz/viz/`` imports matplotlib, and it never touches pyplot or calls ``show``.
* No module over 450 lines, no function over 80.
"""
import ast
from pathlib import Path

import pytest

import detviz

PACKAGE = Path(detviz.__file__).resolve().parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
FAMILIES = {"gfl", "rcnn", "yolo", "sparse"}
# what each part may import from detviz ("primitive" = any top-level module of the package)
ALLOWED = {
    "primitive": {"primitive"},
    **{family: {"primitive", *FAMILIES} for family in FAMILIES},
    "datasets": {"primitive", "datasets"},
    "evaluation": {"primitive", "evaluation"},
    "analysis": {"primitive", *FAMILIES, "datasets", "evaluation", "analysis"},
    "viz": {"primitive", "analysis", "viz"},
    "engine": {"primitive", *FAMILIES, "datasets", "evaluation", "engine"},
    "cli": {"primitive", *FAMILIES, "datasets", "evaluation", "analysis", "viz", "engine", "cli"},
}
ENTRY_POINTS = {"__init__.py", "__main__.py", "models.py"}  # they gather the rest


def _part(module_name: str) -> str:
    """'detviz.gfl.head' -> 'gfl'; 'detviz.boxes' -> 'primitive'."""
    parts = module_name.split(".")
    if len(parts) < 2:
        return "package"
    sub = PACKAGE / parts[1]
    return parts[1] if sub.is_dir() else "primitive"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "detviz":  # from detviz import viz
                names |= {f"detviz.{alias.name}" for alias in node.names}
    return names


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


@pytest.mark.parametrize("path", [p for p in MODULES if p.name not in ENTRY_POINTS or p.parent != PACKAGE],
                         ids=_rel)
def test_dependencies_run_one_way(path):
    rel = path.relative_to(PACKAGE).parts
    own = rel[0] if len(rel) > 1 else "primitive"
    used = {_part(name) for name in _imports(path) if name.startswith("detviz.") or name == "detviz"}
    assert used <= ALLOWED[own] | {"package"}, f"{_rel(path)} ({own}) imports from {sorted(used - ALLOWED[own])}"


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_only_viz_draws(path):
    imported = _imports(path)
    uses_matplotlib = any(name.split(".")[0] == "matplotlib" for name in imported)
    in_viz = path.parent.name == "viz"
    assert in_viz or not uses_matplotlib, f"{_rel(path)} imports matplotlib outside detviz/viz/"
    assert not any("pyplot" in name for name in imported), f"{_rel(path)} imports pyplot"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "show"], \
        f"{_rel(path)} calls show()"


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_modules_and_functions_stay_small(path):
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= 450, f"{_rel(path)} has {len(source.splitlines())} lines"
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]
    assert not long, f"{_rel(path)}: functions over 80 lines: {long}"


def test_the_rules_see_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import matplotlib.pyplot as plt\nfrom detviz.engine.train import train\nplt.show()\n")
    assert {"matplotlib.pyplot", "detviz.engine.train"} <= _imports(bad)
    assert _part("detviz.engine.train") == "engine" and _part("detviz.boxes") == "primitive"
    assert "engine" not in ALLOWED["evaluation"] | ALLOWED["viz"] | ALLOWED["primitive"]
