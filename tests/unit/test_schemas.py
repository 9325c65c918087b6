"""docs/schema/*.json are generated from the pydantic models; refresh with UPDATE_GOLDEN=1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from toolkit.plan.schemas import render_schemas

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schema"


@pytest.mark.parametrize("name,text", sorted(render_schemas().items()))
def test_schema_is_current(name, text):
    path = DOCS / name
    if os.environ.get("UPDATE_GOLDEN") and (not path.exists() or path.read_text() != text):
        path.write_text(text)
        pytest.fail(f"{name} rewritten: review the diff and run again without UPDATE_GOLDEN")
    assert path.read_text() == text, f"{name} is stale: run UPDATE_GOLDEN=1 pytest tests/unit/test_schemas.py"


def test_every_field_is_documented():
    """Rule 6: each field carries a docstring (pydantic exposes it as the schema description)."""
    from toolkit.catalog import spec
    from toolkit.plan import model, report, vllm_args
    from toolkit.render import deploy_vars
    from toolkit.sizing import results

    missing = []
    for module in (model, report, spec, vllm_args, deploy_vars, results):
        for obj in vars(module).values():
            if isinstance(obj, type) and hasattr(obj, "model_fields") and obj.__module__ == module.__name__:
                for field_name, info in obj.model_fields.items():
                    if not info.description:
                        missing.append(f"{module.__name__}.{obj.__name__}.{field_name}")
    assert not missing, missing
