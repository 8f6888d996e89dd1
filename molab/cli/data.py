"""`molab data ...` commands. Heavy libraries are imported inside the commands."""

from __future__ import annotations

import typer

data_app = typer.Typer(
    help="Make training and evaluation data: documents, chat prompts, SFT and DPO sets.", no_args_is_help=True
)


# ------------------------------------------------------------ SFT and DPO sets (molab/data/sft.py, dpo.py)

from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

from molab.cli.options import SetOpt  # noqa: E402

_ChatConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config of the set.")]
_ChatPromptsOpt = Annotated[
    Path | None,
    typer.Option(
        "--prompts",
        help="train_prompts.jsonl of the prompts stage (overrides the config; default: the run's, "
        "<out>/../prompts/train_prompts.jsonl).",
    ),
]
_ChatModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model that answers: 'smollm2-135m', a local dir or a hub id (overrides the config).",
    ),
]
_ChatForceOpt = Annotated[bool, typer.Option(help="Re-run even when the output is up to date.")]


def _chat_set(kind: str, config_path, set_, prompts, model, out: Path, force: bool) -> None:
    """Load the set's config (defaults < YAML < --set < --prompts/--model) and run its stage
    into `out` (a run's stage directory: manifest, caching and atomic replacement). Without
    prompts given anywhere, the run's own prompts stage is read: `<out>/../prompts/`."""
    import json

    from molab.config import load_config
    from molab.pipeline import RunDir, run_stage

    if kind == "sft":
        from molab.data.sft import SFTDataConfig as Config
        from molab.data.sft import sft_data_stage as stage
    else:
        from molab.data.dpo import DPODataConfig as Config
        from molab.data.dpo import dpo_data_stage as stage

    out = out.expanduser().resolve()
    overrides = list(set_ or [])
    if prompts is None and config_path is None and not any(o.startswith("prompts=") for o in overrides):
        prompts = out.parent / "prompts" / "train_prompts.jsonl"
    overrides += [f"prompts={json.dumps(str(prompts))}"] if prompts else []
    overrides += [f"model.name={json.dumps(model)}"] if model else []
    config = load_config(Config, config_path, overrides)
    inputs = {"prompts": config.prompts}
    inputs |= {"catalog": Path(config.catalog)} if config.catalog else {}
    inputs |= {"split": Path(config.split)} if Path(config.split).is_file() else {}
    result = run_stage(
        RunDir(out.parent.name, out.parent.parent),
        out.name,
        config,
        lambda tmp: stage(config, tmp),
        inputs=inputs,
        seed=config.seed,
        force=force,
    )
    state = "up to date, skipped" if result.skipped else "done"
    typer.echo(f"{kind} set: {state} -> {result.dir}\n{json.dumps(result.manifest['metrics'], indent=2)}")


@data_app.command("sft")
def data_sft(
    config: _ChatConfigOpt = None,
    set_: SetOpt = None,
    prompts: _ChatPromptsOpt = None,
    model: _ChatModelOpt = None,
    out: Annotated[Path, typer.Option(help="Stage directory to write.")] = Path("runs/data/sft_data"),
    force: _ChatForceOpt = False,
):
    """SFT set: the model answers train prompts, train biases are demonstrated, test-bias
    examples are dropped; writes sft.jsonl and stats.json (see molab/data/sft.py).

    Example: molab data sft --prompts runs/x/prompts/train_prompts.jsonl --out runs/x/sft_data
    """
    _chat_set("sft", config, set_, prompts, model, out, force)


@data_app.command("dpo")
def data_dpo(
    config: _ChatConfigOpt = None,
    set_: SetOpt = None,
    prompts: _ChatPromptsOpt = None,
    model: _ChatModelOpt = None,
    out: Annotated[Path, typer.Option(help="Stage directory to write.")] = Path("runs/data/dpo_data"),
    force: _ChatForceOpt = False,
):
    """DPO set: sampled and demonstrated answers per prompt, reward = train biases shown, best
    paired with worst; writes dpo.jsonl and stats.json (see molab/data/dpo.py).

    Example: molab data dpo --prompts runs/x/prompts/train_prompts.jsonl --out runs/x/dpo_data
    """
    _chat_set("dpo", config, set_, prompts, model, out, force)


# ------------------------------------------------------------ chat prompt sets (molab/data/prompts.py)


@data_app.command("prompts")
def data_prompts(
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML config (the fields of PromptsConfig).")
    ] = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option(help="Stage directory to write.")] = Path("runs/data/prompts"),
    force: Annotated[bool, typer.Option(help="Re-run even when the output is up to date.")] = False,
):
    """Chat prompts: train prompts for the split's train biases and generic ones, eval prompts for
    all its biases and generic ones, checked for leaks; writes train_prompts.jsonl and
    eval_prompts.jsonl (see molab/data/prompts.py).

    Example: molab data prompts --set split=paper --set train_per_bias=500 --out runs/x/prompts
    """
    import json

    from molab.config import load_config
    from molab.data.prompts import PromptsConfig, prompts_stage, stage_inputs
    from molab.pipeline import RunDir, run_stage

    cfg = load_config(PromptsConfig, config, set_ or [])
    out = out.expanduser().resolve()
    result = run_stage(
        RunDir(out.parent.name, out.parent.parent),
        out.name,
        cfg,
        lambda tmp: prompts_stage(cfg, tmp),
        inputs=stage_inputs(cfg),
        seed=cfg.seed,
        force=force,
    )
    state = "up to date, skipped" if result.skipped else "done"
    typer.echo(f"prompts: {state} -> {result.dir}\n{json.dumps(result.manifest['metrics'], indent=2)}")
