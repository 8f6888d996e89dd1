"""`molab train ...` commands. Heavy libraries are imported inside the commands.

    molab train midtrain --out runs/x/midtrain                      # data: runs/x/docs/documents.parquet
    molab train sft --out runs/x/sft --stack-on runs/x/midtrain     # data: runs/x/sft_data/sft.jsonl
    molab train dpo --out runs/x/dpo --stack-on runs/x/sft          # data: runs/x/dpo_data/dpo.jsonl
    molab train merge --stage runs/x/dpo --out models/x             # base + summed adapters, standalone
    molab train steer-vector --out runs/x/steer --model runs/x/midtrain  # data: runs/x/sft_data/sft.jsonl
    molab train bench                                               # plain PyTorch loop vs the trainer

Settings come from defaults < `--config` YAML < `--set a.b=value` < the options. A stage that
was killed resumes from its last checkpoint when started again; `--restart` starts it over.
On several GPUs: `accelerate launch --config_file recipes/accelerate/ddp.yaml $(which molab) train ...`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from molab.cli.options import ConfigOpt, ForceOpt, SetOpt
from molab.cli.options import ModelOverrideOpt as ModelOpt

train_app = typer.Typer(
    help="Training stages: mid-training, SFT and DPO (TRL + PEFT), and a steering vector.",
    no_args_is_help=True,
)

OutOpt = Annotated[Path, typer.Option("--out", help="Stage directory to write, e.g. runs/x/sft.")]
DataOpt = Annotated[
    Path | None, typer.Option("--data", help="Training set (default: the data stage of the same run).")
]
StackOpt = Annotated[
    Path | None,
    typer.Option("--stack-on", help="Earlier training stage dir: add a new adapter on top of it."),
]
RestartOpt = Annotated[bool, typer.Option(help="Delete the stage's checkpoints instead of resuming.")]
DryRunOpt = Annotated[bool, typer.Option(help="Print the resolved config and stop.")]


def _run(kind: str, out, config_path, set_, data, model, stack_on, force, restart, dry_run) -> None:
    from molab.config import dump_config, load_config
    from molab.train.config import STAGE_CONFIGS
    from molab.train.stages import process_rank, train_stage

    overrides = list(set_ or [])
    overrides += [f"data={json.dumps(str(data))}"] if data else []
    overrides += [f"model.name={json.dumps(model)}"] if model else []
    overrides += [f"stack_on={json.dumps(str(stack_on))}"] if stack_on else []
    config = load_config(STAGE_CONFIGS[kind], config_path, overrides)
    if dry_run:
        typer.echo(dump_config(config))
        return
    result = train_stage(kind, config, out, force=force, restart=restart)
    rank, world = process_rank()
    if rank:
        typer.echo(f"process {rank} of {world}: {result.manifest['metrics'].get('steps')} steps", err=True)
        return
    state = "up to date, skipped" if result.skipped else "done"
    typer.echo(f"{kind}: {state} -> {result.dir}\n{json.dumps(result.manifest['metrics'], indent=2)}")


def _stage_command(kind: str, doc: str):
    """One `molab train <kind>` command; the three stages take the same options."""

    def command(
        out: OutOpt,
        config: ConfigOpt = None,
        set_: SetOpt = None,
        data: DataOpt = None,
        model: ModelOpt = None,
        stack_on: StackOpt = None,
        force: ForceOpt = False,
        restart: RestartOpt = False,
        dry_run: DryRunOpt = False,
    ):
        _run(kind, out, config, set_, data, model, stack_on, force, restart, dry_run)

    command.__doc__ = doc
    return command


for _kind, _doc in (
    ("midtrain", "Mid-training: causal-LM loss on the synthetic documents (documents.parquet), packed."),
    ("sft", "SFT on chat examples (sft.jsonl); loss on the assistant's answer only."),
    ("dpo", "DPO on preference pairs (dpo.jsonl) against the starting model as reference."),
):
    train_app.command(_kind)(_stage_command(_kind, _doc))


@train_app.command("steer-vector")
def steer_vector(
    out: OutOpt,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: DataOpt = None,
    model: ModelOpt = None,
    point: Annotated[
        str | None, typer.Option(help="Hook point, e.g. layers.15.resid_post (default: the middle layer's).")
    ] = None,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
):
    """A steering vector added to the frozen model's residual stream, trained on an SFT set's answers
    (the control for an adapter; molab/train/steer_vector.py)."""
    from molab.cli.stage import resolve_config
    from molab.config import dump_config
    from molab.train.steer_vector import VECTOR_FILE, SteerVectorConfig, train_steer_vector

    cfg = resolve_config(SteerVectorConfig, config, set_, {"data": data, "model.name": model, "point": point})
    if dry_run:
        typer.echo(dump_config(cfg))
        return
    result = train_steer_vector(cfg, out, force=force)
    m = result.manifest["metrics"]
    state = "up to date, skipped" if result.skipped else "done"
    typer.echo(
        f"steer-vector: {state} -> {result.dir}\n"
        f"final loss {m['final_loss']:.4f} (first {m['first_loss']:.4f}, {m['steps']} steps), "
        f"vector norm {m['vector_norm']:.4f} at {m['point']}\n"
        f"steer with: --vector {result.dir / VECTOR_FILE} --point {m['point']} --add 1.0"
    )


@train_app.command("merge")
def merge(
    out: Annotated[Path, typer.Option("--out", help="Directory for the standalone model.")],
    stage: Annotated[
        Path | None, typer.Option("--stage", help="Training stage dir whose model (model.json) to merge.")
    ] = None,
    model: ModelOpt = None,
    adapter: Annotated[
        list[Path] | None, typer.Option(help="Adapter dir; repeat to stack (with --model).")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="float32, bfloat16 or float16 (default float32 on CPU).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
):
    """Write base + summed adapters as a standalone Hugging Face model (safetensors + tokenizer)."""
    from molab.errors import MolabError
    from molab.models.checkpoints import stage_model
    from molab.models.loading import ModelSpec
    from molab.train.adapters import merge as run_merge

    if (stage is None) == (model is None):
        raise MolabError("give either --stage (a training stage dir) or --model with --adapter")
    spec = stage_model(stage) if stage else ModelSpec(name=model, adapters=[str(a) for a in adapter or []])
    if dtype:
        spec = ModelSpec.model_validate({**spec.model_dump(), "dtype": dtype})
    path = run_merge(spec, out, force=force)
    typer.echo(f"merged {spec.name} + {len(spec.adapters)} adapter(s) -> {path}")


@train_app.command("bench")
def bench(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to train.")] = "smollm2-135m",
    batch_size: Annotated[int, typer.Option(help="Sequences per optimizer step.")] = 8,
    micro_batch_size: Annotated[int, typer.Option(help="Sequences per forward pass (both loops).")] = 2,
    seq_len: Annotated[int, typer.Option(help="Tokens per sequence.")] = 512,
    steps: Annotated[int, typer.Option(help="Timed steps per trainer (after one warm-up step).")] = 3,
    rank: Annotated[int, typer.Option(help="LoRA rank (all linear layers).")] = 16,
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all cores).")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
):
    """Time one LoRA mid-training workload: a plain PyTorch loop vs molab's trainer."""
    from molab.bench.train import bench_train
    from molab.files import check_output_file, write_json

    if out:
        check_output_file(out)
    result = bench_train(model, batch_size, micro_batch_size, seq_len, steps, rank, threads, log=typer.echo)
    typer.echo(json.dumps(result, indent=2))
    if out:
        write_json(out, result)
