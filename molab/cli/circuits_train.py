"""`molab circuits train` and `molab bench transcoders`: per-layer transcoders
(molab/circuits/train.py) and their training speed (molab/bench/transcoders.py).

    molab circuits train --model smollm2-135m --corpus runs/x/docs/documents.parquet \\
        --corpus runs/x/prompts/train_prompts.jsonl --preset full --out runs/x/transcoders
    molab circuits train --model runs/x/sft --corpus c.jsonl --preset quick --layers 0,5 --out tc
    molab bench transcoders --threads 1 --out bench-transcoders.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from molab.cli import bench_app
from molab.cli.circuits import circuits_app
from molab.errors import MolabError


def parse_layers(text: str | None) -> list[int] | str | None:
    """`--layers`: comma-separated indices, or 'all'."""
    if text is None or text.strip() == "all":
        return text and "all"
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise MolabError(f"--layers {text!r}: give comma-separated layer indices, or 'all'") from None


def layer_row(report: dict) -> str:
    h = report["heldout"]
    return (
        f"{report['layer']:>5} {h['fvu']:>7.4f} {h['l0']:>7.1f} {h['dead_share']:>6.1%} "
        f"{report['training_tokens']:>9,} {report['seconds']:>8.1f} {report['tokens_per_second']:>9,.0f}"
    )


@circuits_app.command("train")
def train(
    corpus: Annotated[
        list[Path],
        typer.Option(
            help="Corpus file (Parquet 'text', or JSONL 'text'/'prompt'/'messages'); repeat to mix."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Transcoder set folder (config.yaml + layer_<i>.safetensors).")],
    model: Annotated[str, typer.Option(help="Model spec: smollm2-135m, a folder, a training stage.")] = (
        "smollm2-135m"
    ),
    adapter: Annotated[list[str] | None, typer.Option(help="LoRA adapter folder (repeatable).")] = None,
    preset: Annotated[str, typer.Option(help="quick (2 layers, minutes) or full (every layer).")] = "quick",
    layers: Annotated[
        str | None, typer.Option(help="Layers, e.g. 0,5,9, or all (default: the preset's).")
    ] = None,
    d_transcoder: Annotated[int | None, typer.Option("--d-transcoder", help="Features per layer.")] = None,
    k: Annotated[int | None, typer.Option(help="Active features per token while training.")] = None,
    tokens: Annotated[int | None, typer.Option(help="Training tokens per layer.")] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="topk or batchtopk.")] = None,
    skip: Annotated[bool | None, typer.Option("--skip/--no-skip", help="A linear skip path.")] = None,
    layers_per_pass: Annotated[int | None, typer.Option(help="Layers cached on disk at a time.")] = None,
    work: Annotated[Path | None, typer.Option(help="Folder for the caches (default: <out>.work).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the initialisation and the shuffle.")] = None,
):
    """Train per-layer transcoders (MLP input -> MLP output; TopK/BatchTopK, saved as JumpReLU in
    circuit-tracer's layout), caching a few layers at a time; re-running skips finished layers.
    Prints held-out FVU, L0 and dead share per layer and the replacement model's loss."""
    from pydantic import ValidationError

    from molab.circuits.train import preset as make_config
    from molab.circuits.train import train_transcoders
    from molab.models.loading import ModelSpec

    try:
        cfg = make_config(
            preset,
            # nothing trains the model here: its adapters merged give the same activations, faster
            model=ModelSpec(name=model, adapters=adapter or [], merge_adapters=True),
            corpus=corpus,
            layers=parse_layers(layers),
            d_transcoder=d_transcoder,
            k=k,
            tokens=tokens,
            architecture=arch,
            skip=skip,
            layers_per_pass=layers_per_pass,
            seed=seed,
        )
    except ValidationError as e:
        err = e.errors()[0]
        raise MolabError(f"--{'-'.join(map(str, err['loc'][:1])).replace('_', '-')}: {err['msg']}") from None
    typer.echo(f"{'layer':>5} {'FVU':>7} {'L0':>7} {'dead':>6} {'tokens':>9} {'seconds':>8} {'tokens/s':>9}")
    record = train_transcoders(cfg, out, work=work, on_layer=lambda r: typer.echo(layer_row(r)))
    rep = record.get("replacement") or {}
    if rep:
        typer.echo(
            f"next-token loss on {rep['tokens']} held-out tokens: {rep['loss']:.4f} original, "
            f"{rep['replacement_loss']:.4f} with layers {rep['layers']} replaced"
        )
    typer.echo(f"wrote {out} ({len(record['reports'])} layers)")


@bench_app.command("transcoders")
def bench(
    d_model: Annotated[int, typer.Option(help="Activation width (default: the default model's).")] = 576,
    d_transcoder: Annotated[int, typer.Option("--d-transcoder", help="Features.")] = 9216,
    k: Annotated[int, typer.Option(help="Active features per token.")] = 32,
    tokens: Annotated[int, typer.Option(help="Training tokens timed per variant.")] = 32768,
    batch_size: Annotated[int, typer.Option(help="Tokens per step.")] = 1024,
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 2,
    out: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
):
    """Transcoder training throughput (tokens/s per layer) from a paired cache of random
    activations on disk, against the same step with a dense decoder, in one run."""
    from molab.bench.transcoders import bench_transcoders
    from molab.files import check_output_file, write_json

    if out:
        check_output_file(out)
    result = bench_transcoders(
        d_model=d_model,
        d_transcoder=d_transcoder,
        k=k,
        tokens=tokens,
        batch_size=batch_size,
        threads=threads,
        log=typer.echo,
    )
    typer.echo(json.dumps(result, indent=2))
    if out:
        write_json(out, result)
