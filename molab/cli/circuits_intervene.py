"""`molab circuits intervene`: ablate, scale, set or swap transcoder features (or a graph's
supernode) in the real model and show what changes (molab/circuits/intervene.py).

    molab circuits intervene --transcoders runs/tc --prompt "The capital of Texas is" --ablate 12:345@5
    molab circuits intervene --transcoders runs/tc --graph g.json --supernode Texas --supernode-scale -2
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from molab.cli.circuits import circuits_app
from molab.errors import MolabError

POS_HELP = "POS: prompt positions from 0, 'gen' for every generated token; none: every position."


@circuits_app.command("intervene")
def intervene(
    transcoders: Annotated[
        Path, typer.Option(help="Transcoder set folder (config.yaml + layer_<i>.safetensors).")
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model spec (name, dir or stage dir).")
    ] = "smollm2-135m",
    prompt: Annotated[
        str | None, typer.Option(help="The prompt (default: the graph's, with --graph).")
    ] = None,
    ablate: Annotated[
        list[str] | None, typer.Option(help=f"LAYER:FEATURE[@POS,...] to 0 (repeatable). {POS_HELP}")
    ] = None,
    scale: Annotated[
        list[str] | None, typer.Option(help="LAYER:FEATURE:FACTOR[@POS,...] (repeatable).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="LAYER:FEATURE:VALUE[@POS,...] (repeatable).")
    ] = None,
    swap: Annotated[
        list[str] | None,
        typer.Option(help="LAYER:FROM:TO[:VALUE][@POS,...]: FROM to 0, TO to FROM's activation or VALUE."),
    ] = None,
    graph: Annotated[
        Path | None, typer.Option(help="Graph JSON (molab circuits graph): supernodes, prompt, targets.")
    ] = None,
    supernode: Annotated[
        list[str] | None, typer.Option(help="A supernode's label in --graph (repeatable).")
    ] = None,
    supernode_scale: Annotated[
        float, typer.Option(help="Factor for the supernodes' features (0: ablate; -1: flip).")
    ] = 0.0,
    watch: Annotated[
        list[str] | None, typer.Option(help="A token whose probability to show (repeatable).")
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Top next tokens shown before and after.")] = 10,
    max_new_tokens: Annotated[
        int, typer.Option(min=1, help="Tokens of text generated before and after.")
    ] = 20,
    temperature: Annotated[float, typer.Option(min=0.0, help="0: greedy; else seeded sampling.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    backend: Annotated[
        str,
        typer.Option(
            help="Text generation: hf (molab's hf backend, its fast decoder on Llama-family models) or "
            "generate (transformers' model.generate); vllm and openai cannot apply edits."
        ),
    ] = "hf",
    out: Annotated[Path | None, typer.Option(help="Also write the record as JSON here.")] = None,
):
    """Edit features through the real model: next-token probabilities and text before and after."""
    from molab.circuits.intervene import (
        check_edits,
        check_generator,
        check_graph_prompt,
        compare,
        parse_edit,
        read_graph,
        supernode_edits,
        text_generator,
    )
    from molab.circuits.targets import prompt_ids
    from molab.circuits.transcoder import load_transcoders
    from molab.files import check_output_file, write_json
    from molab.models.generation import SamplingConfig
    from molab.models.generation.prompts import stop_token_ids
    from molab.models.loading import ModelSpec, load_model

    if out:
        check_output_file(out)
    check_generator(backend)
    edits = [
        parse_edit(t, mode)
        for mode, given in (("ablate", ablate), ("scale", scale), ("set", set_), ("swap", swap))
        for t in given or []
    ]
    if supernode and graph is None:
        raise MolabError("--supernode needs --graph: the graph JSON that holds it")
    if not edits and not supernode:
        raise MolabError("nothing to change: give --ablate, --scale, --set, --swap or --supernode")
    tset = load_transcoders(transcoders)
    check_edits(edits, tset, None, str(transcoders))
    loaded = load_model(ModelSpec(name=model, merge_adapters=True))
    tset.check_model(loaded.model, transcoders)
    info = read_graph(graph, loaded.spec.name) if graph else None
    prompt = prompt if prompt is not None else info.prompt if info else None
    if prompt is None:
        raise MolabError("give --prompt, or --graph to use the graph's prompt")
    for label in supernode or []:
        mode = "ablate" if supernode_scale == 0 else "scale"
        edits += supernode_edits(info, label, mode, None if mode == "ablate" else supernode_scale)
    tok = loaded.tokenizer
    ids = prompt_ids(tok, prompt)
    if supernode:
        check_graph_prompt(info, [tok.decode([t]) for t in ids.tolist()])
    check_edits(edits, tset, len(ids), str(transcoders))
    watched = list(info.logit_tokens) if info else []
    for text in watch or []:
        found = tok(text, add_special_tokens=False)["input_ids"]
        if len(found) != 1:
            raise MolabError(f"--watch {text!r} is {len(found)} tokens: give one token")
        watched += found
    tset.to(next(loaded.model.parameters()).device)
    generate = text_generator(backend, loaded.model, tok, stop_token_ids(tok, loaded.model_dir))
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    record = compare(loaded.model, tok, tset, ids, edits, generate, sampling, top_k=top_k, watch=watched)
    record |= {"model": loaded.spec.name, "transcoders": str(transcoders), "backend": backend}
    for e in record["edits"]:
        typer.echo(f"edit: {e['label']}")
    typer.echo(f"{'token':>16}  {'before':>8}  {'after':>8}  {'change':>8}  rank")
    for r in record["probabilities"]:
        mark = "  *" if r["watched"] else ""
        typer.echo(
            f"{json.dumps(r['token']):>16}  {r['before']:8.4f}  {r['after']:8.4f}  {r['change']:+8.4f}  "
            f"{r['rank_before']}->{r['rank_after']}{mark}"
        )
    typer.echo(f"KL(before || after) = {record['kl_divergence']:.4f}" + ("   (* watched)" if watched else ""))
    typer.echo(f"before: {record['text_before']!r}")
    typer.echo(f"after:  {record['text_after']!r}")
    if out:
        write_json(out, record)
        typer.echo(f"wrote {out}")
