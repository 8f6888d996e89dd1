"""`molab data ...` commands. Heavy libraries are imported inside the commands."""

from __future__ import annotations

import typer

data_app = typer.Typer(help="Make training and evaluation data: documents, chat prompts, SFT and DPO sets.", no_args_is_help=True)
