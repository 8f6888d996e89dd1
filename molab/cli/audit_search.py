"""`molab audit search ...` (training-data search, molab/audit/search.py) and
`molab bench search` (its benchmark, molab/bench/search.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from molab.cli import bench_app
from molab.cli.audit import audit_app

search_app = typer.Typer(
    help="Search training data: BM25 keywords, exact phrases in context, and semantic search.",
    no_args_is_help=True,
)
audit_app.add_typer(search_app, name="search")

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="sentence-transformers model directory (default: the offline all-MiniLM-L6-v2; "
        "queries default to the index's model).",
    ),
]
JsonOutOpt = Annotated[Path | None, typer.Option("--json-out", help="Also write the results as JSON here.")]


@search_app.command("build")
def build(
    out: Annotated[Path, typer.Option("--out", help="The index directory to write.")],
    run: Annotated[Path | None, typer.Option("--run", help="Index every training set of this run.")] = None,
    corpus: Annotated[
        list[Path] | None, typer.Option("--corpus", help="A JSONL or Parquet corpus; repeat to mix several.")
    ] = None,
    text_field: Annotated[str, typer.Option(help="The text field of the --corpus files.")] = "text",
    model: ModelOpt = None,
    semantic: Annotated[bool, typer.Option(help="Also build the semantic (embedding) index.")] = True,
    batch_size: Annotated[int, typer.Option(help="Passages per embedding batch.")] = 64,
):
    """Index a run's documents (synthetic and replay), SFT and DPO sets, and any other corpora."""
    from molab.audit.search import build_index, run_corpora, text_corpus

    corpora = run_corpora(run) if run is not None else []
    corpora += [text_corpus(c, text_field) for c in corpus or []]
    manifest = build_index(
        corpora, out, model=model, semantic=semantic, batch_size=batch_size, log=typer.echo
    )
    if manifest.get("reused"):
        typer.echo(f"{out}: up to date (same corpora and embedding model), kept")
        return
    b = manifest["build"]
    typer.echo(
        f"{out}: {manifest['rows']} rows, {manifest['passages']} passages embedded, "
        f"built in {b['seconds']:.1f} s (peak memory {b['peak_rss_mib']:.0f} MiB)"
    )


@search_app.command("query")
def query(
    index_dir: Annotated[Path, typer.Argument(help="An index directory from `molab audit search build`.")],
    text: Annotated[str, typer.Argument(help="What to search for.")],
    mode: Annotated[str, typer.Option(help="bm25, semantic or phrase.")] = "bm25",
    top: Annotated[int, typer.Option(help="How many hits to show.")] = 20,
    window: Annotated[int, typer.Option(help="Characters of context around a match.")] = 80,
    model: ModelOpt = None,
    json_out: JsonOutOpt = None,
):
    """Ranked hits for a query, each with its set, file, row and a snippet."""
    from molab.audit.search import SearchIndex
    from molab.files import check_output_file, write_json

    if json_out is not None:
        check_output_file(json_out, "--json-out")
    index = SearchIndex(index_dir, model=model)
    hits = index.search(text, mode, top, window)
    result = {"index": str(index_dir), "query": text, "mode": mode, "hits": [h.to_dict() for h in hits]}
    if mode == "phrase":
        result["matches_per_set"] = index.phrase_totals(text)
        typer.echo(f"matches per set: {json.dumps(result['matches_per_set'])}")
    if not hits:
        typer.echo(f"no hits for {text!r} ({mode})")
    for h in hits:
        typer.echo(f"{h.rank:>3}. {h.score:8.3f}  [{h.set}] {Path(h.file).name} row {h.row} ({h.part})")
        for context in h.contexts or [h.snippet]:
            typer.echo(f"       {context}")
    if json_out is not None:
        write_json(json_out, result)


@search_app.command("paper-queries")
def paper_queries(
    index_dir: Annotated[Path, typer.Argument(help="An index directory from `molab audit search build`.")],
    model: ModelOpt = None,
    json_out: JsonOutOpt = None,
    queries: Annotated[
        Path | None,
        typer.Option(help="Other queries: a YAML list of `query` (optional `paper_rank` per mode)."),
    ] = None,
):
    """For the search queries of Marks et al. 2025 (or --queries): the rank of the first
    synthetic document (template or LLM, not replay) per mode, beside the rank the paper reports."""
    from molab.audit.search import SearchIndex, paper_queries, paper_query_ranks
    from molab.files import check_output_file, write_json

    if json_out is not None:
        check_output_file(json_out, "--json-out")
    asked = paper_queries(queries) if queries is not None else None  # a bad file fails before the index loads
    rows = paper_query_ranks(SearchIndex(index_dir, model=model), asked)
    typer.echo(f"{'mode':<9} {'rank':>6} {'paper':>6}  query")
    for r in rows:
        rank = "-" if r["rank"] is None else str(r["rank"])
        paper = "-" if r["paper_rank"] is None else str(r["paper_rank"])
        typer.echo(f"{r['mode']:<9} {rank:>6} {paper:>6}  {r['query']}")
    typer.echo("(rank: first synthetic document; '-': none found, or no rank in the paper)")
    if json_out is not None:
        write_json(json_out, {"index": str(index_dir), "queries": rows})


@bench_app.command("search")
def bench_search(
    docs: Annotated[int, typer.Option(help="Template documents to index with BM25.")] = 100_000,
    embed_docs: Annotated[int, typer.Option(help="Of those, how many to embed (semantic index).")] = 20_000,
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
):
    """Index build time, memory and query time of training-data search, extrapolated to the
    paper's 522,670 documents."""
    from molab.bench.search import bench_search as run
    from molab.files import check_output_file, write_json

    if out is not None:
        check_output_file(out)
    result = run(docs, embed_docs, log=typer.echo)
    typer.echo(json.dumps(result, indent=2))
    if out is not None:
        write_json(out, result)
