"""Option types shared by the command modules, declared once so every command spells and
explains them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_MODEL_HELP = "'smollm2-135m', a local model dir, a training stage dir or a hub id."

ModelOpt = Annotated[str, typer.Option("--model", "-m", help=_MODEL_HELP)]
# The same, for commands whose config already names a model: given, it overrides the config's.
ModelOverrideOpt = Annotated[str | None, typer.Option("--model", "-m", help=_MODEL_HELP)]
AdapterOpt = Annotated[
    list[Path] | None, typer.Option("--adapter", help="LoRA adapter dir; repeat to stack.")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config of the stage (its fields).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a recipe field: --set a.b=value.")]
SplitOpt = Annotated[str | None, typer.Option(help="Bias split: 'english', 'paper' or a YAML file.")]
ForceOpt = Annotated[
    bool,
    typer.Option(help="Re-run even when up to date (and replace another stage's outputs at --out)."),
]
