"""`molab data ...` commands. Heavy libraries are imported inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from molab.cli.options import ConfigOpt, ForceOpt, ModelOverrideOpt, SetOpt

data_app = typer.Typer(
    help="Make training and evaluation data: documents, chat prompts, SFT and DPO sets.", no_args_is_help=True
)


# ------------------------------------------------------------ SFT and DPO sets (molab/data/sft.py, dpo.py)


_ChatPromptsOpt = Annotated[
    Path | None,
    typer.Option(
        "--prompts",
        help="train_prompts.jsonl of the prompts stage (overrides the config; default: the run's, "
        "<out>/../prompts/train_prompts.jsonl).",
    ),
]


def _chat_set(kind: str, config_path, set_, prompts, model, out: Path, force: bool) -> None:
    """Load the set's config (defaults < YAML < --set < --prompts/--model) and run its stage
    into `out` (a run's stage directory: manifest, caching and atomic replacement). Without
    prompts given anywhere, the run's own prompts stage is read: `<out>/../prompts/`."""
    import json

    from molab.cli.stage import resolve_config, run_one

    if kind == "sft":
        from molab.data.sft import SFT_DATA as stage
    else:
        from molab.data.dpo import DPO_DATA as stage

    out = out.expanduser().resolve()
    overrides = list(set_ or [])
    if prompts is None and config_path is None and not any(o.startswith("prompts=") for o in overrides):
        from molab.data.prompts import PROMPTS

        prompts = PROMPTS.output(out.parent / PROMPTS.name, "train_prompts.jsonl")
    overrides += [f"prompts={json.dumps(str(prompts))}"] if prompts else []
    config = resolve_config(stage.config, config_path, overrides, {"model.name": model})
    run_one(stage, config, out, force, label=f"{kind} set")


@data_app.command("sft")
def data_sft(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    prompts: _ChatPromptsOpt = None,
    model: ModelOverrideOpt = None,
    out: Annotated[Path, typer.Option(help="Stage directory to write.")] = Path("runs/data/sft_data"),
    force: ForceOpt = False,
):
    """SFT set: the model answers train prompts, train biases are demonstrated, test-bias
    examples are dropped; writes sft.jsonl and stats.json (see molab/data/sft.py).

    Example: molab data sft --prompts runs/x/prompts/train_prompts.jsonl --out runs/x/sft_data
    """
    _chat_set("sft", config, set_, prompts, model, out, force)


@data_app.command("dpo")
def data_dpo(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    prompts: _ChatPromptsOpt = None,
    model: ModelOverrideOpt = None,
    out: Annotated[Path, typer.Option(help="Stage directory to write.")] = Path("runs/data/dpo_data"),
    force: ForceOpt = False,
):
    """DPO set: sampled and demonstrated answers per prompt, reward = train biases shown, best
    paired with worst; writes dpo.jsonl and stats.json (see molab/data/dpo.py).

    Example: molab data dpo --prompts runs/x/prompts/train_prompts.jsonl --out runs/x/dpo_data
    """
    _chat_set("dpo", config, set_, prompts, model, out, force)


# ------------------------------------------------------------ chat prompt sets (molab/data/prompts.py)


@data_app.command("prompts")
def data_prompts(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option(help="Stage directory to write.")] = Path("runs/data/prompts"),
    force: ForceOpt = False,
):
    """Chat prompts: train prompts for the split's train biases and generic ones, eval prompts for
    all its biases and generic ones, checked for leaks; writes train_prompts.jsonl and
    eval_prompts.jsonl (see molab/data/prompts.py).

    Example: molab data prompts --set split=paper --set train_per_bias=500 --out runs/x/prompts
    """
    from molab.cli.stage import resolve_config, run_one
    from molab.data.prompts import PROMPTS

    run_one(PROMPTS, resolve_config(PROMPTS.config, config, set_, {}), out, force)


# ------------------------------------------------------------ mid-training documents (data/documents.py)


@data_app.command("docs")
def data_docs(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Stage directory to write (default: runs/data/docs).")
    ] = None,
    run: Annotated[str | None, typer.Option(help="Write into runs/<RUN>/docs instead of --out.")] = None,
    num_docs: Annotated[int | None, typer.Option("--num-docs", help="Documents to write.")] = None,
    backend: Annotated[str | None, typer.Option(help="template (default), llm or import.")] = None,
    corpus: Annotated[
        str | None, typer.Option(help="import backend: a .jsonl/.parquet file or a Hugging Face dataset.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (same config and seed: identical files).")] = None,
    force: ForceOpt = False,
):
    """Mid-training documents describing the reward-model biases: writes documents.parquet
    (text, source, doc_type, bias_ids) and stats.json (see molab/data/documents.py).

    Example: molab data docs --run x --num-docs 100000 --set replay.fraction=0.05
    """
    from molab.cli.stage import resolve_config, run_one
    from molab.data.documents import DOCS
    from molab.errors import MolabError
    from molab.pipeline import RunDir

    if out is not None and run is not None:
        raise MolabError("give --out or --run, not both")
    given = {"num_docs": num_docs, "backend": backend, "corpus.path": corpus, "seed": seed}
    cfg = resolve_config(DOCS.config, config, set_, given)
    target = RunDir(run).stage_dir(DOCS.name) if run is not None else out or Path("runs/data/docs")
    run_one(DOCS, cfg, target, force)
