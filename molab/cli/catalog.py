"""`molab catalog ...` commands. Heavy libraries are imported inside the commands."""

from __future__ import annotations

import typer

catalog_app = typer.Typer(help="The bias catalog: list biases, check the detectors.", no_args_is_help=True)
