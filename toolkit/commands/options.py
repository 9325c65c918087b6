"""Shared option aliases so every command spells the same flag the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would be done, then stop.")]
InventoryOpt = Annotated[Path, typer.Option("--inventory", "-i", help="Site folder (from `selfhost init`).")]
PlanArg = Annotated[Path, typer.Argument(help="plan.yml written by `selfhost plan`.")]
