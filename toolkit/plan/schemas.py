"""JSON Schemas of the documents selfhost writes, generated from the pydantic models (docs/schema/)."""

from __future__ import annotations

import json

from toolkit.plan.model import Plan
from toolkit.plan.report import PlanReport

SCHEMAS = {"plan.schema.json": Plan, "plan-report.schema.json": PlanReport}


def render_schemas() -> dict[str, str]:
    return {name: json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n" for name, model in SCHEMAS.items()}
