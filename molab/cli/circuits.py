"""`molab circuits ...`: circuit tracing (molab/circuits/). Each part's commands live in their
own module below, which adds them to `circuits_app`; heavy libraries load inside the commands."""

from __future__ import annotations

import typer

circuits_app = typer.Typer(
    help="Circuit tracing: train transcoders, compute attribution graphs, view them offline, and "
    "intervene on features.",
    no_args_is_help=True,
)


def _register_parts() -> None:
    """Each part's module adds its commands to `circuits_app` when imported."""
    from molab.cli import (  # noqa: F401
        circuits_bench,
        circuits_graph,
        circuits_intervene,
        circuits_train,
        circuits_view,
    )


_register_parts()
