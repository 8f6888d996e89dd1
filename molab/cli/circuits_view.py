"""`molab circuits export | features | view`: a graph as frontend JSON with its scores, feature
files for viewers, and the offline viewer (molab/circuits/export.py, feature_files.py,
viewer.py).

    molab circuits export runs/x/graph.safetensors --out runs/x/graphs --slug austin
    molab circuits features --transcoders runs/x/tc --cache runs/x/acts
      --graph runs/x/graphs/austin.json --out runs/x/features
    molab circuits view runs/x/graphs/austin.json --features runs/x/features              # -> austin.html
    molab circuits view runs/x/graphs/austin.json --features runs/x/features --serve      # saves supernodes
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from molab.cli.circuits import circuits_app
from molab.errors import MolabError


def _local_tokenizer(model_name: str):
    """The tokenizer of `model_name` when it is on this machine (never a download), else None."""
    from molab.models.default_model import DEFAULT_MODEL
    from molab.models.loading import load_tokenizer, resolve_model_dir

    if model_name != DEFAULT_MODEL and not Path(model_name).expanduser().is_dir():
        return None
    return load_tokenizer(resolve_model_dir(model_name))


@circuits_app.command("export")
def export(
    graph: Annotated[Path, typer.Argument(help="A graph file of `molab circuits graph` (.safetensors).")],
    out: Annotated[Path, typer.Option(help="Folder for <slug>.json and graph-metadata.json.")],
    slug: Annotated[str | None, typer.Option(help="The graph's name (default: the file's stem).")] = None,
    node_threshold: Annotated[
        float, typer.Option(help="Keep nodes up to this share of the total influence.")
    ] = 0.8,
    edge_threshold: Annotated[
        float, typer.Option(help="Keep edges up to this share of their influence.")
    ] = 0.98,
    scan: Annotated[
        str | None, typer.Option(help="The transcoders' name in the file (default: the set's folder).")
    ] = None,
):
    """Prune a graph and write it as circuit-tracer / Neuronpedia frontend JSON, with its entry in
    the folder's graph-metadata.json; prints the replacement and completeness scores."""
    from molab.circuits.export import check_slug, write_graph_files
    from molab.circuits.graph import load_graph

    name = check_slug(slug or re.sub(r"[^A-Za-z0-9._-]", "-", graph.stem))
    g = load_graph(graph)
    tokenizer = _local_tokenizer(g.model_name)
    path = write_graph_files(g, out, name, node_threshold, edge_threshold, scan=scan, tokenizer=tokenizer)
    data = json.loads(path.read_text(encoding="utf-8"))
    scores = data["metadata"]["molab"]["scores"]
    typer.echo(
        json.dumps(
            {
                "nodes": len(data["nodes"]),
                "links": len(data["links"]),
                "replacement": round(scores["replacement"], 4),
                "completeness": round(scores["completeness"], 4),
                "pruned_replacement": round(scores["pruned_replacement"], 4),
                "pruned_completeness": round(scores["pruned_completeness"], 4),
            },
            indent=2,
        )
    )
    if tokenizer is None:
        typer.echo(f"note: {g.model_name} is not on this machine: logit nodes are named by token id")
    typer.echo(f"wrote {path}")


@circuits_app.command("features")
def features(
    transcoders: Annotated[
        Path, typer.Option(help="Transcoder set folder (config.yaml + layer_<i>.safetensors).")
    ],
    cache: Annotated[Path, typer.Option(help="Activation cache holding layers.<i>.mlp_in of those layers.")],
    out: Annotated[Path, typer.Option(help="Feature folder to write (index.json.gz + layer_<i>.bin).")],
    graph: Annotated[
        Path | None, typer.Option(help="Only the features of this graph JSON (default: every feature).")
    ] = None,
    top_k: Annotated[int, typer.Option(help="Top-activating examples per feature.")] = 10,
    context: Annotated[int, typer.Option(help="Tokens of context either side of an example.")] = 8,
):
    """Feature files in circuit-tracer's local format: top examples, logit effects, histograms."""
    from molab.audit.features import unembedding
    from molab.circuits.export import read_graph_json
    from molab.circuits.feature_files import graph_features, write_feature_files
    from molab.circuits.transcoder import load_transcoders
    from molab.models.activations import ActivationCache
    from molab.models.loading import ModelSpec, load_model

    if top_k < 1 or context < 0:
        raise MolabError("--top-k must be at least 1 and --context at least 0")
    acts = ActivationCache(cache)
    spec = acts.index["model"]
    wanted = None
    if graph is not None:
        wanted = graph_features(read_graph_json(graph, model_name=spec["name"]))
    tset = load_transcoders(transcoders, sorted(wanted) if wanted else None)
    loaded = load_model(ModelSpec(name=spec["name"], adapters=spec["adapters"]))
    tset.check_model(loaded.model, transcoders)
    record = write_feature_files(
        tset,
        acts,
        out,
        tokenizer=loaded.tokenizer,
        unembed=unembedding(loaded.model),
        features=wanted,
        top_k=top_k,
        context=context,
    )
    count = sum(len(v) for v in record["features"].values())
    typer.echo(f"wrote {count} features of layers {', '.join(record['features'])} to {out}")


@circuits_app.command("view")
def view(
    graph: Annotated[Path, typer.Argument(help="A graph JSON of `molab circuits export`.")],
    features: Annotated[
        Path | None, typer.Option(help="Feature folder of `molab circuits features` (examples on hover).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="The page to write (default: GRAPH with .html).")] = None,
    serve: Annotated[
        bool, typer.Option("--serve", help="Serve on 127.0.0.1 instead; the page saves into GRAPH.")
    ] = False,
    port: Annotated[int, typer.Option(help="Port to serve on (0: any free one).")] = 8032,
    max_links: Annotated[
        int, typer.Option(help="Links the page carries: the strongest overall, plus each node's strongest.")
    ] = 5000,
    links_per_node: Annotated[int, typer.Option(help="Each node's strongest in- and out-links kept.")] = 10,
):
    """The offline viewer: a self-contained page, or a local server whose page saves pinned nodes
    and supernodes into the graph file."""
    from molab.circuits import viewer

    if serve and out is not None:
        raise MolabError("give --out (a static page) or --serve, not both")
    if not serve:
        path = viewer.write_page(
            graph,
            out or graph.with_suffix(".html"),
            features,
            max_links=max_links,
            links_per_node=links_per_node,
        )
        typer.echo(f"wrote {path}")
        return
    server = viewer.serve(graph, features, port, max_links=max_links, links_per_node=links_per_node)
    typer.echo(f"serving {graph} at {server.url} (Ctrl+C to stop)")
    try:
        server.thread.join()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        server.stop()
