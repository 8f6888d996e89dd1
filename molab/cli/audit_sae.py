"""`molab audit sae ...` and `molab bench sae`: sparse autoencoders on an activation cache
(molab/audit/sae.py, sae_train.py, features.py).

    molab audit sae train --cache runs/x/activations --point layers.15.resid_post --out runs/x/sae
    molab audit sae import ~/sparsify-out/layers.15 --out runs/x/sae-imported
    molab audit sae features --sae runs/x/sae --cache runs/x/activations --features 12,40 --out f.json
    molab audit sae features --sae runs/x/sae --cache runs/x/chat-acts --assistant --out a.json
    molab audit sae fires --sae runs/x/sae --cache runs/x/acts-chat --cache runs/x/acts-plain --features 7
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from molab.cli import bench_app
from molab.cli.audit import audit_app
from molab.errors import MolabError

sae_app = typer.Typer(
    help="Sparse autoencoders: train on an activation cache, import SAELens or sparsify checkpoints, "
    "view features.",
    no_args_is_help=True,
)
audit_app.add_typer(sae_app, name="sae")

CacheOpt = Annotated[
    Path, typer.Option("--cache", help="Activation cache directory (molab activations cache).")
]


@sae_app.command("train")
def train(
    cache: CacheOpt,
    out: Annotated[Path, typer.Option(help="SAE folder to write (cfg.json + sae_weights.safetensors).")],
    point: Annotated[
        str | None, typer.Option(help="Hook point, e.g. layers.15.resid_post (default: the middle layer's).")
    ] = None,
    arch: Annotated[str, typer.Option("--arch", help="topk or batchtopk.")] = "batchtopk",
    k: Annotated[int, typer.Option(help="Active latents per token.")] = 32,
    d_sae: Annotated[int, typer.Option("--d-sae", help="Number of latents.")] = 4096,
    tokens: Annotated[int | None, typer.Option(help="Training tokens (default: one pass).")] = None,
    batch_size: Annotated[int, typer.Option(help="Tokens per step.")] = 4096,
    heldout: Annotated[float, typer.Option(help="Share of shards held out for evaluation.")] = 0.1,
    b_dec_init: Annotated[str, typer.Option(help="mean or median (geometric).")] = "mean",
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and the shuffle.")] = 0,
):
    """Train a TopK or BatchTopK SAE on one point of the cache (streamed from disk), save it as a
    JumpReLU SAE in SAELens' layout, and print held-out FVU, L0, dead share and the model's loss
    with the SAE spliced in."""
    from pydantic import ValidationError

    from molab.audit.sae_train import SAETrainConfig, train_sae

    try:
        cfg = SAETrainConfig(
            cache=cache,
            point=point,
            architecture=arch,
            k=k,
            d_sae=d_sae,
            tokens=tokens,
            batch_size=batch_size,
            heldout=heldout,
            b_dec_init=b_dec_init,
            seed=seed,
        )
    except ValidationError as e:
        err = e.errors()[0]
        raise MolabError(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}") from None
    report = train_sae(cfg, out)
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "curve"}, indent=2))
    typer.echo(f"wrote {out}")


@sae_app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="SAELens folder, or a sparsify folder (one hook point).")],
    out: Annotated[Path, typer.Option(help="SAE folder to write.")],
    point: Annotated[
        str | None, typer.Option(help="Hook point, when the folder's name or cfg does not give it.")
    ] = None,
):
    """Convert an SAELens or EleutherAI sparsify SAE into molab's folder (SAELens layout)."""
    from molab.audit.sae import import_sae

    sae = import_sae(path, out, point)
    typer.echo(f"{sae.architecture} SAE, d_in {sae.d_in}, d_sae {sae.d_sae}, at {sae.hook_name}: wrote {out}")


@sae_app.command("features")
def features(
    sae: Annotated[Path, typer.Option(help="SAE folder.")],
    cache: CacheOpt,
    out: Annotated[Path, typer.Option(help="JSON file to write.")],
    features: Annotated[str | None, typer.Option(help="Comma-separated feature indices.")] = None,
    assistant: Annotated[
        bool, typer.Option(help="Rank features by the share of the cache's assistant tokens they fire on.")
    ] = False,
    top: Annotated[int, typer.Option(help="Ranked features viewed with --assistant.")] = 20,
    top_k: Annotated[int, typer.Option(help="Top-activating examples per feature.")] = 20,
):
    """Top-activating examples, activation histogram, logit effects and source shares of chosen
    features; with --assistant, the features that fire on most assistant-turn tokens."""
    from molab.audit.features import assistant_features, feature_views, unembedding
    from molab.audit.sae import load_sae
    from molab.files import check_output_file, write_json
    from molab.models.activations import ActivationCache
    from molab.models.loading import ModelSpec, load_model

    check_output_file(out)
    if not features and not assistant:
        raise MolabError("give --features 1,2,... or --assistant")
    try:
        chosen = [int(f) for f in features.split(",") if f.strip()] if features else []
    except ValueError:
        raise MolabError(f"--features {features!r}: give comma-separated integers") from None
    model = load_sae(sae)
    acts = ActivationCache(cache)
    result: dict = {"sae": str(sae), "cache": str(cache), "point": model.hook_name}
    if assistant:
        result["assistant"] = assistant_features(model, acts, top=top)
        chosen += [r["feature"] for r in result["assistant"]["ranked"] if r["feature"] not in chosen]
    spec = acts.index["model"]
    loaded = load_model(ModelSpec(name=spec["name"], adapters=spec["adapters"]))
    views = feature_views(
        model, acts, chosen, tokenizer=loaded.tokenizer, unembed=unembedding(loaded.model), top_k=top_k
    )
    result["features"] = views
    write_json(out, result)
    share = {r["feature"]: r["assistant_share"] for r in result.get("assistant", {}).get("ranked", [])}
    if assistant:
        a = result["assistant"]
        typer.echo(
            f"{a['above_min_share']} features fire on >{a['min_share']:.0%} of "
            f"{a['assistant_tokens']} assistant tokens"
        )
    typer.echo(f"{'feature':>8} {'freq':>8} {'asst':>6}  {'sources of top examples':<36} top example")
    for v in views:
        sources = ", ".join(f"{s} {p:.0%}" for s, p in v["source_shares"].items())
        ex = v["examples"][0] if v["examples"] else None
        shown = f"{ex['left']}[[{ex['token']}]]{ex['right']}".replace("\n", " ")[-60:] if ex else "-"
        asst = f"{share[v['feature']]:.0%}" if v["feature"] in share else ""
        typer.echo(f"{v['feature']:>8} {v['frequency']:>8.4f} {asst:>6}  {sources[:36]:<36} {shown}")
    typer.echo(f"wrote {out}")


@sae_app.command("fires")
def fires(
    sae: Annotated[Path, typer.Option(help="SAE folder.")],
    cache: Annotated[
        list[Path], typer.Option("--cache", help="Activation cache of a prompt set; repeat to compare.")
    ],
    features: Annotated[str, typer.Option(help="Comma-separated feature indices.")],
    out: Annotated[Path | None, typer.Option(help="Also write the counts as JSON here.")] = None,
):
    """On how many prompts of each cache the features fire (at any token), with 95% intervals:
    e.g. one prompt set cached with and without the chat format."""
    from molab.audit.features import document_firing
    from molab.audit.sae import load_sae
    from molab.files import check_output_file, write_json
    from molab.models.activations import ActivationCache

    if out:
        check_output_file(out)
    try:
        chosen = [int(f) for f in features.split(",") if f.strip()]
    except ValueError:
        raise MolabError(f"--features {features!r}: give comma-separated integers") from None
    if not chosen:
        raise MolabError("--features: give at least one feature index")
    model = load_sae(sae)
    counts = [document_firing(model, ActivationCache(c), chosen) for c in cache]
    typer.echo(f"{'feature':>8}  {'prompts fired':<22} {'tokens':>7}  cache")
    for c in counts:
        for f in c["features"]:
            lo, hi = f["ci"]
            shown = f"{f['documents']}/{f['of']} [{lo:.0%}, {hi:.0%}]"
            typer.echo(f"{f['feature']:>8}  {shown:<22} {f['token_share']:>7.2%}  {c['cache']}")
    if out:
        write_json(out, {"sae": str(sae), "point": model.hook_name, "caches": counts})
        typer.echo(f"wrote {out}")


@bench_app.command("sae")
def bench(
    d_model: Annotated[int, typer.Option(help="Activation width (default: the default model's).")] = 576,
    d_sae: Annotated[int, typer.Option("--d-sae", help="Number of latents.")] = 4096,
    k: Annotated[int, typer.Option(help="Active latents per token.")] = 32,
    tokens: Annotated[int, typer.Option(help="Training tokens timed.")] = 65536,
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 2,
    out: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
):
    """SAE training throughput (tokens/s) from a cache of random activations on disk."""
    from molab.bench.sae import bench_sae
    from molab.files import check_output_file, write_json

    if out:
        check_output_file(out)
    result = bench_sae(d_model=d_model, d_sae=d_sae, k=k, tokens=tokens, threads=threads, log=typer.echo)
    typer.echo(json.dumps(result, indent=2))
    if out:
        write_json(out, result)
