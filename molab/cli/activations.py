"""`molab activations ...` and `molab bench activations`. Heavy libraries are imported inside
the commands.

    molab activations cache --model smollm2-135m --corpus runs/x/docs/documents.parquet \\
        --points layers.15.resid_post --out runs/x/activations
    molab bench activations --out docs/bench-activations.json

The cache is a stage directory (`--out`; its parent folder is the run): manifest, lock, and
skipped when its config and corpus are unchanged. A killed run resumes from its last complete
shard, kept in `<out>.work/`. Settings come from defaults < `--config` YAML < `--set a.b=value`
< the options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from molab.cli import bench_app
from molab.cli.options import AdapterOpt, ConfigOpt, ForceOpt, ModelOpt, ModelOverrideOpt, SetOpt

activations_app = typer.Typer(
    help="Activation caches: hook points of a model over a corpus, for dictionaries and feature views.",
    no_args_is_help=True,
)


@activations_app.command("cache")
def cache(
    out: Annotated[Path, typer.Option(help="Stage directory to write, e.g. runs/x/activations.")],
    corpus: Annotated[
        Path | None,
        typer.Option(help="Parquet with a 'text' column, or JSONL of 'text', 'prompt' or 'messages' lines."),
    ] = None,
    points: Annotated[
        str | None,
        typer.Option(help="Comma-separated hook points, e.g. layers.15.resid_post,layers.20.mlp_out."),
    ] = None,
    model: ModelOverrideOpt = None,
    adapter: AdapterOpt = None,
    dtype: Annotated[
        str | None, typer.Option(help="Stored dtype: float32, bfloat16 (default) or float16.")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Stop once this many tokens are stored.")] = None,
    max_length: Annotated[
        int | None, typer.Option(help="Longer documents are truncated to this many tokens (default 1024).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Documents per forward (default 16).")] = None,
    shard_tokens: Annotated[int | None, typer.Option(help="Tokens per shard file (default 65536).")] = None,
    skip_bos: Annotated[
        bool | None, typer.Option("--skip-bos/--keep-bos", help="Leave out each document's BOS token.")
    ] = None,
    layers_per_pass: Annotated[
        int | None, typer.Option(help="Layers cached per pass over the corpus (default: all in one).")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: ForceOpt = False,
):
    """Run the model over a corpus and store the chosen hook points as sharded safetensors with
    an index.json (token ids, document ids, positions, assistant-turn flags per token).

    Chats (JSONL 'prompt' or 'messages', with an optional 'completion' reply) go through the
    model's chat template, and the tokens of assistant turns are flagged. Padding is never
    stored. Each point gets its own folder of shards."""
    from molab.cli.stage import resolve_config, run_one
    from molab.models.activations import ACTIVATIONS

    options = {
        "model.name": model,
        "model.adapters": adapter,
        "corpus": corpus,
        "points": [p.strip() for p in points.split(",") if p.strip()] if points is not None else None,
        "dtype": dtype,
        "max_tokens": max_tokens,
        "max_length": max_length,
        "batch_size": batch_size,
        "shard_tokens": shard_tokens,
        "skip_bos": skip_bos,
        "layers_per_pass": layers_per_pass,
    }
    run_one(
        ACTIVATIONS,
        resolve_config(ACTIVATIONS.config, config, set_, options),
        out,
        force,
        label="activations",
    )


@bench_app.command("activations")
def bench(
    model: ModelOpt = "smollm2-135m",
    docs: Annotated[int, typer.Option(help="Template documents in the corpus.")] = 12,
    layer: Annotated[int | None, typer.Option(help="Layer cached (default: the middle one).")] = None,
    batch_size: Annotated[int, typer.Option(help="Documents per forward.")] = 8,
    repeats: Annotated[int, typer.Option(help="Timed runs of each side, interleaved.")] = 3,
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all cores).")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
):
    """Time activation caching against a plain forward on the same batches, and the cache's
    shuffled reader against a small dictionary's training step."""
    from molab.bench.activations import bench_activations
    from molab.files import check_output_file, write_json

    if out:
        check_output_file(out)
    result = bench_activations(model, docs, layer, batch_size, repeats, threads=threads, log=typer.echo)
    typer.echo(json.dumps(result, indent=2))
    if out:
        write_json(out, result)
