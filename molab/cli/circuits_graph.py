"""`molab circuits graph`: the attribution graph of one prompt (molab/circuits/attribution.py).

    molab circuits graph --model smollm2-135m --transcoders runs/tc --prompt "The capital of Texas is" \\
        --out graph.safetensors
    molab circuits graph --transcoders runs/tc --prompt-file p.txt --target " Austin" --out g.safetensors

Bad inputs are caught before the graph is computed, each in one line: a prompt longer than the
model's context, transcoders of another width or depth, an output path molab may not write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from molab.cli.circuits import circuits_app
from molab.errors import MolabError


@circuits_app.command("graph")
def graph(
    transcoders: Annotated[
        Path, typer.Option(help="Transcoder set folder (config.yaml + layer_<i>.safetensors).")
    ],
    out: Annotated[Path, typer.Option(help="Graph file to write (.safetensors).")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model spec (name, dir or stage dir).")
    ] = "smollm2-135m",
    prompt: Annotated[str | None, typer.Option(help="The prompt text.")] = None,
    prompt_file: Annotated[Path | None, typer.Option(help="A UTF-8 file holding the prompt.")] = None,
    target: Annotated[
        list[str] | None, typer.Option(help="A token to attribute (repeat); default: the top logits.")
    ] = None,
    max_feature_nodes: Annotated[int, typer.Option(help="At most this many feature rows.")] = 7500,
    batch_size: Annotated[int | None, typer.Option(help="Rows per batched backward pass.")] = None,
    max_memory_gb: Annotated[
        float, typer.Option(help="Rows and adjacency must fit this: long prompts get fewer feature rows.")
    ] = 8.0,
):
    """Compute the attribution graph of a prompt on the local replacement model and save it."""
    from pydantic import ValidationError

    from molab.circuits.attribution import AttributionConfig, attribute, check_prompt
    from molab.circuits.targets import prompt_ids
    from molab.circuits.transcoder import load_transcoders
    from molab.files import check_output_file, read_text_file
    from molab.models.loading import load_model

    if (prompt is None) == (prompt_file is None):
        raise MolabError("give exactly one of --prompt TEXT or --prompt-file FILE")
    text = prompt if prompt is not None else read_text_file(prompt_file, "prompt")
    check_output_file(out)
    settings = {
        "max_feature_nodes": max_feature_nodes,
        "targets": target or None,
        "max_memory_gb": max_memory_gb,
    }
    if batch_size is not None:
        settings["batch_size"] = batch_size
    try:
        config = AttributionConfig(**settings)
    except ValidationError as e:
        err = e.errors()[0]
        raise MolabError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    tset = load_transcoders(transcoders, lazy=True)  # W_enc, W_dec stay on disk (memory)
    loaded = load_model(model)
    tset.check_model(loaded.model, transcoders)
    check_prompt(loaded.model, prompt_ids(loaded.tokenizer, text))
    result = attribute(loaded.model, loaded.tokenizer, tset, text, config)
    result.transcoders = str(transcoders)
    result.model_name = loaded.spec.name  # the spec as given (what caches and feature files record)
    result.save(out)
    stats = result.stats
    typer.echo(
        f"{out}: {result.n_nodes} nodes ({result.n_features} features of {stats['active_features']} active, "
        f"{result.n_errors} errors, {result.n_pos} tokens, {result.n_logits} logits) "
        f"in {stats['total_s']:.1f} s"
    )
    if stats["row_cap"] < min(max_feature_nodes, stats["active_features"]):
        typer.echo(f"feature rows capped at {stats['row_cap']} by --max-memory-gb {max_memory_gb:g}")


@circuits_app.command("pathways")
def pathways_command(
    graph: Annotated[Path, typer.Argument(help="A graph file from `molab circuits graph`.")],
    target: Annotated[
        str | None, typer.Option(help="The logit token to follow (default: the most probable).")
    ] = None,
    against: Annotated[
        list[str] | None,
        typer.Option(help="Another model spec (e.g. a control): the graph's features read there; repeat."),
    ] = None,
    shared_with: Annotated[
        list[Path] | None,
        typer.Option(
            help="Another graph (same transcoders): how many of this one's top features it reaches; repeat."
        ),
    ] = None,
    top: Annotated[int, typer.Option(help="Features listed by influence.")] = 15,
    shared_top: Annotated[
        int, typer.Option(help="Top features (layer, index) compared with --shared-with.")
    ] = 50,
    json_out: Annotated[Path | None, typer.Option(help="Also write the result as JSON here.")] = None,
):
    """Through what a graph's target logit runs: token embeddings directly, error nodes or
    features (direct inputs and total influence), its top features, with --against the share
    of its feature influence carried by features that are off in another model, and with
    --shared-with how many of its top features another prompt's graph reaches."""
    from molab.circuits.graph import load_graph
    from molab.circuits.pathways import (
        feature_activations,
        fired_features,
        missing_share,
        pathways,
        shared_features,
        target_index,
        target_influence,
        token_probability,
    )
    from molab.circuits.prune import graph_scores
    from molab.circuits.transcoder import load_transcoders
    from molab.files import check_output_file, write_json
    from molab.models.loading import load_model

    if json_out:
        check_output_file(json_out)
    g = load_graph(graph)
    others = [load_graph(path) for path in shared_with or []]
    for path, other in zip(shared_with or [], others, strict=True):
        if other.transcoders != g.transcoders:
            raise MolabError(f"{path}: built with transcoders {other.transcoders}, not {g.transcoders}")
    own = load_model(g.model_name) if target is not None or others else None  # the graph's own model
    index = target_index(g, target, own.tokenizer if own else None)
    total = target_influence(g, index)  # [N], shared by every measure below
    result = {"graph": str(graph), "prompt": g.prompt, "model": g.model_name} | pathways(g, index, top, total)
    result["scores"] = graph_scores(g)  # replacement and completeness of the unpruned graph
    tset = load_transcoders(g.transcoders, lazy=True) if against or others else None
    if against:
        result["against"] = {}
        for spec in against:
            loaded = load_model(spec)
            tset.check_model(loaded.model, g.transcoders)
            acts = feature_activations(loaded.model, tset, g)  # [n_features]
            result["against"][spec] = missing_share(g, acts, index, total) | {
                "target_probability": token_probability(loaded.model, g, index)
            }
            for f in result["top_features"]:
                f.setdefault("activation_in", {})[spec] = float(acts[f["node"]])
    if others:
        result["shared_with"] = {
            str(path): shared_features(
                g, other, fired_features(own.model, tset, other.input_ids), index, 0, shared_top, total
            )
            for path, other in zip(shared_with, others, strict=True)
        }
    typer.echo(
        f"graph scores: replacement {result['scores']['replacement']:.3f}, "
        f"completeness {result['scores']['completeness']:.3f}"
    )
    if result["active_per_token_layer"] is not None:
        typer.echo(f"active transcoder features per token and layer: {result['active_per_token_layer']:.1f}")
    for kind in ("direct", "total"):
        s = result[kind]
        typer.echo(
            f"{kind:>6}: tokens {s['tokens']:.1%}, errors {s['errors']:.1%}, features {s['features']:.1%}"
        )
    typer.echo(f"{'layer':>6} {'pos':>4} {'feature':>8} {'activation':>10} {'influence':>9}")
    for f in result["top_features"]:
        typer.echo(
            f"{f['layer']:>6} {f['position']:>4} {f['feature']:>8} "
            f"{f['activation']:>10.3f} {f['influence']:>9.4f}"
        )
    for spec, m in (result.get("against") or {}).items():
        typer.echo(
            f"against {spec}: p(target) {m['target_probability']:.3f}; "
            f"{m['off_in_other']} of {m['features']} features off, carrying "
            f"{m['influence_off_in_other']:.1%} of the feature influence "
            f"({m['influence_halved_in_other']:.1%} at half or less)"
        )
    for path, m in (result.get("shared_with") or {}).items():
        typer.echo(
            f"shared with {path}: of the top {m['top']} features ({m['top_share']:.1%} of the feature "
            f"influence), {m['fire_in_other']} fire there ({m['fire_in_other_share']:.1%}), "
            f"{m['in_other_top']} are among its top ({m['in_other_top_share']:.1%})"
        )
    if json_out:
        write_json(json_out, result)
        typer.echo(f"wrote {json_out}")
