"""Option types shared by the command modules."""

from __future__ import annotations

from typing import Annotated

import typer

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="'smollm2-135m', a local model dir or a hub id.")
]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a recipe field: --set a.b=value.")]
