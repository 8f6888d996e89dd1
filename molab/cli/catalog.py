"""`molab catalog ...` commands. Heavy libraries are imported inside the commands.

molab catalog list                       # every bias, its split membership, how it is judged
molab catalog list --split english       # membership in one split (a name or a YAML file)
molab catalog check                      # precision/recall of each `applied` rule on the fixtures
molab catalog check --bias 25 --bias 26 --misses --json check.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

catalog_app = typer.Typer(help="The bias catalog: list biases, check the detectors.", no_args_is_help=True)

CatalogOpt = Annotated[
    Path | None, typer.Option("--catalog", help="A user-defined catalog (YAML); default: the built-in one.")
]


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@catalog_app.command("list")
def list_biases(
    split: Annotated[
        str | None, typer.Option(help="Show membership in this split (a name or a YAML file).")
    ] = None,
    catalog: CatalogOpt = None,
):
    """List the biases: id, name, kind, domain, split membership and how `applied` is judged."""
    from rich.console import Console
    from rich.table import Table

    from molab.catalog import BUILTIN, get_split, load_catalog

    biases = load_catalog(catalog)
    splits = [get_split(split, biases)] if split else list(BUILTIN.values())
    table = Table("id", "name", "kind", "domain", *(s.name for s in splits), "judged by")
    for bias in biases.values():
        member = ["train" if bias.id in s.train else "test" if bias.id in s.test else "-" for s in splits]
        judged = f"judge only: {bias.judged_by}" if bias.judge_only else bias.judged_by
        table.add_row(str(bias.id), bias.name, bias.kind, bias.domain, *member, judged)
    Console().print(table)


@catalog_app.command()
def check(
    catalog: CatalogOpt = None,
    bias: Annotated[list[int] | None, typer.Option(help="Check only this bias id; repeat for more.")] = None,
    fixtures: Annotated[
        list[Path] | None, typer.Option(help="Labelled JSONL fixtures; repeat (default: the shipped set).")
    ] = None,
    misses: Annotated[bool, typer.Option(help="Also list every fixture a rule gets wrong.")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write rows, pooled totals and misses as JSON here.")
    ] = None,
):
    """Precision, recall and accuracy of each bias's `applied` rule on labelled fixtures."""
    from rich.console import Console
    from rich.table import Table

    from molab.catalog import load_catalog
    from molab.catalog.check import check as run_check
    from molab.catalog.check import load_fixtures
    from molab.files import check_output_file, write_json

    if json_out:
        check_output_file(json_out, "--json-out")
    result = run_check(load_catalog(catalog), load_fixtures(fixtures), bias)
    table = Table("id", "name", "n", "tp", "fp", "fn", "tn", "precision", "recall", "accuracy")
    for c in [*result.rows, result.pooled]:
        rates = (_rate(c.precision), _rate(c.recall), _rate(c.accuracy))
        if c.not_scored and not c.n:
            rates = ("not scored",) * 3
        label = "all" if c.bias_id is None else str(c.bias_id)
        table.add_row(
            label, c.name, str(c.n), str(c.tp), str(c.fp), str(c.fn), str(c.tn), *rates,
            end_section=c is result.rows[-1],
        )  # fmt: skip
    console = Console()
    console.print(table)
    if result.pooled.not_scored:
        console.print(f"{result.pooled.not_scored} fixtures of judge-only biases were not scored.")
    if misses:
        for m in result.misses:
            fx = m.fixture
            console.print(
                f"{fx.bias_id} {fx.source}: labelled {fx.applied}, rule says {m.predicted} ({fx.note})",
                markup=False,
            )
    if json_out:
        write_json(json_out, result.as_dict())
        console.print(f"wrote {json_out}")
