"""Style rules that keep the code's shape (style-anchors §11, rules 1 and 3), checked by reading the source."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "toolkit"

# Data flows planner → renderer → deployer; an earlier stage never imports a later one.
STAGES = {
    "pure core": ["spec.py", "plan.py", "vllm_args.py", "sizing", "catalog", "planner.py", "costs.py", "licensing.py"],
    "render": ["render.py", "site.py", "templates.py", "pki.py", "manifest.py"],
}
LATER = {
    "pure core": {"toolkit.render", "toolkit.site", "toolkit.deployer", "toolkit.commands", "toolkit.output", "toolkit.cli"},
    "render": {"toolkit.deployer", "toolkit.commands", "toolkit.cli"},
}


def _files(entries):
    for entry in entries:
        path = PKG / entry
        yield from (sorted(path.rglob("*.py")) if path.is_dir() else [path])


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_no_stage_imports_a_later_one():
    bad = []
    for stage, entries in STAGES.items():
        for path in _files(entries):
            for name in _imports(path):
                if any(name == later or name.startswith(later + ".") for later in LATER[stage]):
                    bad.append(f"{path.relative_to(PKG)} imports {name}")
    assert not bad, bad


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
