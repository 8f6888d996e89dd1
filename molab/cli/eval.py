"""`molab eval ...` commands. Heavy libraries are imported inside the commands."""

from __future__ import annotations

import typer

eval_app = typer.Typer(
    help="Evaluations: exploitation, propensity, knowledge quiz, disclosure, capability.", no_args_is_help=True
)
