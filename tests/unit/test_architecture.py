"""Style rules that keep the code's shape (style-anchors §11, rules 1 and 3), checked by reading the source."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "toolkit"

# The layout is the flow: each stage package imports only the stages before it (and the foundation).
LAYERS = ["catalog", "sizing", "plan", "render", "deploy", "operate", "commands", "cli"]
FOUNDATION = {"toolkit", "toolkit.errors", "toolkit.resources", "toolkit.__version__"}


def _layer(path: Path) -> str | None:
    rel = path.relative_to(PKG)
    head = rel.parts[0].removesuffix(".py")
    return head if head in LAYERS else None


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n == "toolkit" or n.startswith("toolkit.")}


def _target_layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_lives_in_a_stage_or_the_foundation():
    loose = {p.name for p in PKG.glob("*.py")} - {"__init__.py", "__main__.py", "errors.py", "resources.py", "cli.py"}
    assert not loose, f"modules outside the stage packages: {sorted(loose)}"


def test_no_stage_imports_a_later_one():
    bad = []
    for path in PKG.rglob("*.py"):
        layer = _layer(path)
        if layer is None:
            continue
        for name in _imports(path):
            target = _target_layer(name)
            if target is None:
                assert name in FOUNDATION or name.split(".")[1] in ("errors", "resources", "__version__"), name
                continue
            if LAYERS.index(target) > LAYERS.index(layer):
                bad.append(f"{path.relative_to(PKG)} ({layer}) imports {name} ({target})")
    assert not bad, bad


def test_the_foundation_imports_no_stage():
    for name in ("errors.py", "resources.py"):
        assert not {n for n in _imports(PKG / name) if _target_layer(n)}, name


def test_only_cli_and_output_print_or_exit():
    bad = []
    for path in PKG.rglob("*.py"):
        if path.name in ("cli.py", "output.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                if isinstance(f, ast.Name) and f.id in ("print", "exit", "quit"):
                    bad.append(f"{path.relative_to(PKG)}:{node.lineno} {f.id}()")
                if isinstance(f, ast.Attribute) and f.attr == "exit" and getattr(f.value, "id", "") == "sys":
                    bad.append(f"{path.relative_to(PKG)}:{node.lineno} sys.exit()")
    assert not bad, bad
