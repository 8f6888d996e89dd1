"""`molab train ...` commands. Heavy libraries are imported inside the commands."""

from __future__ import annotations

import typer

train_app = typer.Typer(help="Training stages: mid-training, SFT and DPO (TRL + PEFT).", no_args_is_help=True)
