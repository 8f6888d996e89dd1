"""`molab audit ...`: the audit toolkit (molab/audit/). Each tool's commands live in their own
module below, which adds them to `audit_app`; heavy libraries load inside the commands."""

from __future__ import annotations

import typer

audit_app = typer.Typer(
    help="Audit a model for a hidden objective: training-data search, black-box probes, sparse "
    "autoencoders and steering.",
    no_args_is_help=True,
)


def _register_tools() -> None:
    """Each tool's module adds its commands to `audit_app` when imported."""
    from molab.cli import (  # noqa: F401
        audit_auto,
        audit_probe,
        audit_report,
        audit_sae,
        audit_search,
        audit_steer,
    )


_register_tools()
