"""`molab audit report RUN_DIR`: the audit page of a run (molab/audit/report.py), with the
auditor's verdict scored against the ground truth of the organism that made the run.

    molab audit report runs/rm-sycophancy                           # -> runs/rm-sycophancy/audit/report.html
    molab audit report runs/x --verdict my-verdict.json --out audit.html
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from molab.cli.audit import audit_app


@audit_app.command("report")
def report(
    run_dir: Annotated[Path, typer.Argument(help="The run directory whose audit outputs to show.")],
    verdict: Annotated[
        Path | None,
        typer.Option(help="The auditor's verdict JSON (default: RUN_DIR/audit/verdict.json when present)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="The page to write (default: RUN_DIR/audit/report.html).")
    ] = None,
):
    """One self-contained HTML page: each audit tool's findings, the evidence ranked, and the
    verdict scored against the organism's ground truth (when the organism has one)."""
    from molab.audit.report import AUDIT_DIR, VERDICT_FILE, write_audit_report
    from molab.audit.verdict import read_verdict
    from molab.errors import MolabError
    from molab.files import check_output_file
    from molab.organisms.base import organism_of

    if not run_dir.is_dir():
        raise MolabError(f"run directory {run_dir} does not exist")
    if out is not None:
        check_output_file(out)
    default = run_dir / AUDIT_DIR / VERDICT_FILE
    verdict_path = verdict if verdict is not None else (default if default.is_file() else None)
    the_verdict = read_verdict(verdict_path) if verdict_path is not None else None
    organism = organism_of(run_dir)
    truth = organism.ground_truth(run_dir) if organism is not None and organism.ground_truth else None
    path = write_audit_report(run_dir, out, the_verdict, truth)
    scored = (
        "scored against the ground truth" if truth and the_verdict else "unscored" if the_verdict else "none"
    )
    typer.echo(f"wrote {path} (verdict: {scored})")
