"""The `molab` command line. Heavy libraries are imported inside the commands, so `--help`
is instant.

    molab run recipes/rm-sycophancy.yaml           # the default organism, into runs/rm-sycophancy/
    molab generate --model smollm2-135m --prompts prompts.jsonl --out answers.jsonl
    molab models                                   # model specs and what is cached
    molab bench generate                           # molab's generator vs model.generate
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from molab.cli.options import ModelOpt, SetOpt
from molab.errors import MolabError

app = typer.Typer(
    help="molab: build, measure and audit model organisms of hidden objectives.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks; results are ratios against baselines measured in the same run.")
app.add_typer(bench_app, name="bench")
_state = {"debug": False}


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False):
    _state["debug"] = debug


def _read_prompts(path: Path) -> tuple[list, list[dict]]:
    """Prompts from a JSONL file. Each line holds `messages`, `text` or `prompt` (a user
    message, with optional `system`), and optionally `prefill`; other fields pass through."""
    from pydantic import ValidationError

    from molab.files import read_jsonl
    from molab.models.generation import Prompt

    rows = read_jsonl(path)
    if not rows:
        raise MolabError(f"{path} holds no prompts: write one JSON object per line")
    prompts = []
    for n, row in enumerate(rows, 1):
        try:
            if "prompt" in row:
                prompts.append(Prompt.chat(row["prompt"], row.get("system"), row.get("prefill", "")))
            else:
                fields = {k: row[k] for k in ("messages", "text", "prefill") if k in row}
                prompts.append(Prompt.model_validate(fields))
        except (ValidationError, TypeError) as e:
            msg = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
            raise MolabError(
                f"{path}, line {n}: {msg} (each line needs 'prompt', 'messages' or 'text')"
            ) from None
    return prompts, rows


@app.command()
def generate(
    prompts: Annotated[Path, typer.Option("--prompts", "-p", help="JSONL file of prompts.")],
    model: ModelOpt = "smollm2-135m",
    out: Annotated[
        Path | None, typer.Option(help="Output JSONL (default: <prompts>.completions.jsonl).")
    ] = None,
    backend: Annotated[str, typer.Option(help="hf, vllm or openai.")] = "hf",
    adapter: Annotated[list[str] | None, typer.Option(help="LoRA adapter dir; repeat to stack.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 for greedy decoding.")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Top-k sampling; 0 is off.")] = 0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    batch_size: Annotated[int, typer.Option(help="hf backend: sequences decoded at once.")] = 64,
    base_url: Annotated[str | None, typer.Option(help="openai backend: the endpoint's /v1 URL.")] = None,
    api_key_env: Annotated[
        str, typer.Option(help="openai backend: env var holding the key.")
    ] = "OPENAI_API_KEY",
):
    """Generate one completion per prompt (JSONL in, JSONL out, in input order).

    Each input line is {"prompt": "..."} (a user message; optional "system"), {"messages":
    [{"role": ..., "content": ...}, ...]} or {"text": "..."} (raw, no chat template), with an
    optional "prefill" that starts the answer. Output lines repeat the input fields and add
    "completion", "num_tokens" and "finish_reason".
    """
    from molab.files import write_jsonl
    from molab.models.generation import (
        HFBackendConfig,
        OpenAIBackendConfig,
        SamplingConfig,
        VLLMBackendConfig,
        make_backend,
    )
    from molab.models.loading import ModelSpec

    items, rows = _read_prompts(prompts)
    sampling = SamplingConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed
    )
    spec = ModelSpec(name=model, adapters=adapter or [])
    if backend == "hf":
        config: Any = HFBackendConfig(batch_size=batch_size)
    elif backend == "vllm":
        config = VLLMBackendConfig()
    elif backend == "openai":
        extra = {"base_url": base_url} if base_url else {}
        config = OpenAIBackendConfig(model=model, api_key_env=api_key_env, **extra)
    else:
        raise MolabError(f"unknown backend '{backend}': use hf, vllm or openai")
    completions = make_backend(config, spec).generate(items, sampling)
    out = out or prompts.with_suffix(".completions.jsonl")
    write_jsonl(
        out,
        (
            {**row, "completion": c.text, "num_tokens": c.num_tokens, "finish_reason": c.finish_reason}
            for row, c in zip(rows, completions)
        ),
    )
    typer.echo(f"wrote {len(completions)} completions to {out}")


@app.command()
def models():
    """List the model specs molab knows and what is converted in the cache ($MOLAB_CACHE)."""
    from rich.console import Console
    from rich.table import Table

    from molab.models.default_model import cache_is_valid, cache_root
    from molab.models.loading import known_specs

    table = Table("spec", "what", "cached")
    models_dir = cache_root() / "models"
    for name, what in known_specs().items():
        path = models_dir / name
        state = (
            str(path)
            if cache_is_valid(path)
            else ("corrupt (rebuilt on next use)" if path.exists() else "no")
        )
        table.add_row(name, what, state)
    table.add_row("<directory>", "any local Hugging Face causal LM directory", "-")
    table.add_row("<org/name>", "a Hugging Face hub id (needs the hub; offline use a directory)", "-")
    Console().print(table)


@app.command("run")
def run_recipe(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe, e.g. recipes/rm-sycophancy.yaml.")],
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option(help="Re-run stages even when up to date.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the resolved recipe and stop.")] = False,
):
    """Run an organism recipe end to end (cached, resumable) and write its report."""
    from molab.config import dump_config, load_config
    from molab.organisms.rm_sycophancy import RMSycophancyConfig, run_rm_sycophancy

    config = load_config(RMSycophancyConfig, recipe, set_ or [])
    if dry_run:
        typer.echo(dump_config(config))
        return
    for result in run_rm_sycophancy(config, force=force, log=typer.echo):
        state = "up to date, skipped" if result.skipped else f"done in {result.manifest['wall_time_s']:.0f} s"
        typer.echo(f"  {result.dir.name}: {state}")
    typer.echo(f"report: {(result.dir.parent / 'report.html').resolve()}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="The run directory, e.g. runs/demo.")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write the page (default RUN_DIR/report.html).")
    ] = None,
):
    """Write the run's self-contained HTML report (opens from disk, offline)."""
    from molab.report import write_report

    path = write_report(run_dir, out)
    typer.echo(f"report: {path.resolve()}")


@bench_app.command("generate")
def bench_generate(
    model: ModelOpt = "smollm2-135m",
    prompts: Annotated[int, typer.Option(help="Number of chat prompts.")] = 64,
    max_new_tokens: Annotated[int, typer.Option(help="New tokens per prompt.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Batch size of both generators.")] = 64,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    greedy_check: Annotated[bool, typer.Option(help="Also compare greedy outputs.")] = True,
    out: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
):
    """Time plain `model.generate` (one static batch) against molab's hf backend."""
    from molab.bench import bench_generate as run
    from molab.files import write_json

    result = run(model, prompts, max_new_tokens, batch_size, seed, greedy_check, log=typer.echo)
    typer.echo(json.dumps(result.as_dict(), indent=2))
    if out:
        write_json(out, result.as_dict())


def _register_subcommands() -> None:
    """Command groups live in their own modules (molab/cli/<group>.py)."""
    from molab.cli.catalog import catalog_app
    from molab.cli.data import data_app
    from molab.cli.eval import eval_app
    from molab.cli.study import study_app
    from molab.cli.train import bench as train_bench
    from molab.cli.train import train_app

    app.add_typer(catalog_app, name="catalog")
    app.add_typer(data_app, name="data")
    app.add_typer(train_app, name="train")
    app.add_typer(eval_app, name="eval")
    app.add_typer(study_app, name="study")
    bench_app.command("train")(train_bench)  # the same command as `molab train bench`


_register_subcommands()


@bench_app.command("eval")
def bench_eval(
    model: ModelOpt = "smollm2-135m",
    prompts_per_bias: Annotated[int, typer.Option(help="Evaluation prompts per bias.")] = 20,
    max_new_tokens: Annotated[int, typer.Option(help="Most new tokens per answer.")] = 200,
    baseline_prompts: Annotated[int, typer.Option(help="Prompts in plain generate's static batch.")] = 64,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
):
    """Time the exploitation evaluation of the english split (target: 15 minutes on 2 cores)."""
    from molab.evals.bench import bench_eval as run
    from molab.files import write_json

    result = run(model, prompts_per_bias, max_new_tokens, baseline_prompts, seed, log=typer.echo)
    typer.echo(json.dumps(result, indent=2))
    if out:
        write_json(out, result)


@bench_app.command("docs")
def bench_docs(
    num_docs: Annotated[int, typer.Option(help="Template documents to generate.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Generation seed.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")] = None,
):
    """Time the template documents stage (target: 100,000 documents within 2 minutes)."""
    from molab.data.bench_docs import bench_docs as run
    from molab.files import write_json

    result = run(num_docs, seed)
    typer.echo(json.dumps(result, indent=2))
    if out:
        write_json(out, result)


def main() -> None:
    """Entry point: user errors become one line on stderr (tracebacks only with --debug)."""
    try:
        app()
    except MolabError as e:
        if _state["debug"]:
            raise
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)
    except (OSError, ValueError, RuntimeError) as e:
        if _state["debug"]:
            raise
        typer.echo(f"error: {e.__class__.__name__}: {e} (run with --debug for the traceback)", err=True)
        sys.exit(1)
