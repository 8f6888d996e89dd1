"""`molab study ...`: records of finished runs, and the study's tables pooled over seeds.

molab study record runs/study-english-s0 --out docs/results/study-english-s0.json
molab study table docs/results/*.json                 # markdown tables for docs/results.md
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

study_app = typer.Typer(
    help="A study over runs: per-run records, tables pooled over seeds.", no_args_is_help=True
)


@study_app.command("record")
def record(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory, e.g. runs/study-english-s0.")],
    out: Annotated[Path, typer.Option(help="Where to write the record (JSON).")],
):
    """Write a small JSON record of a finished run: every checkpoint's exploitation verdicts, the
    other evaluations' summaries, stage times and training configs (commit it when the run ends)."""
    from molab.files import check_output_file
    from molab.report.study import write_record

    check_output_file(out)
    path = write_record(run_dir, out)
    typer.echo(f"record: {path}")


@study_app.command("table")
def table(
    records: Annotated[list[Path], typer.Argument(help="Study records (from `molab study record`).")],
    out: Annotated[Path | None, typer.Option(help="Also write the markdown here.")] = None,
):
    """Print the study's tables as markdown: per seed, pooled over seeds, comparisons with intervals
    and p-values, test biases one by one, propensity, knowledge, disclosure and capability."""
    from molab.files import check_output_file, write_text
    from molab.report.study import load_records, markdown

    if out:
        check_output_file(out)
    text = markdown(load_records(records))
    typer.echo(text)
    if out:
        write_text(out, text + "\n")
