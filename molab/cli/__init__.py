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


def _read_prompts(path: Path) -> tuple[list, list[dict], list[int]]:
    """Prompts from a JSONL file. Each line holds `messages`, `text` or `prompt` (a user
    message, with optional `system`), and optionally `prefill`; other fields pass through.
    Also returns each prompt's line number in the file (blank lines are skipped)."""
    from pydantic import ValidationError

    from molab.files import iter_jsonl
    from molab.models.generation import Prompt

    numbered = list(iter_jsonl(path))
    if not numbered:
        raise MolabError(f"{path} holds no prompts: write one JSON object per line")
    lines, rows = [n for n, _ in numbered], [row for _, row in numbered]
    prompts = []
    for n, row in zip(lines, rows):
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
    return prompts, rows, lines


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
    truncate: Annotated[
        bool,
        typer.Option(
            help="hf/vllm: shorten prompts too long for the model's context (the start of the "
            "longest message goes) instead of stopping with an error."
        ),
    ] = False,
):
    """Generate one completion per prompt (JSONL in, JSONL out, in input order).

    Each input line is {"prompt": "..."} (a user message; optional "system"), {"messages":
    [{"role": ..., "content": ...}, ...]} or {"text": "..."} (raw, no chat template), with an
    optional "prefill" that starts the answer. Output lines repeat the input fields and add
    "completion", "num_tokens", "finish_reason" and "truncated_tokens" (prompt tokens dropped
    by --truncate). With the hf and vllm backends a prompt that does not fit the model's
    context stops the command before anything is generated, naming its line (or is shortened
    with --truncate), and an answer that would run past the context ends there with
    finish_reason "length".
    """
    from molab.files import check_output_file, write_jsonl
    from molab.models.generation import (
        HFBackendConfig,
        OpenAIBackendConfig,
        PromptTooLongError,
        SamplingConfig,
        VLLMBackendConfig,
        make_backend,
    )
    from molab.models.loading import ModelSpec

    items, rows, lines = _read_prompts(prompts)
    # The output location is checked before the model loads, not after all the generation.
    out_label = "--out" if out is not None else "the output"
    out = out or prompts.with_suffix(".completions.jsonl")
    if out.exists() and out.samefile(prompts):
        raise MolabError(f"{out_label} {out} is the prompts file itself: give another output path")
    check_output_file(out, out_label)
    sampling = SamplingConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        truncate=truncate,
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
    try:
        completions = make_backend(config, spec).generate(items, sampling)
    except PromptTooLongError as e:
        hint = e.hint if truncate else "shorten it or pass --truncate"
        raise MolabError(f"{prompts}, line {lines[e.index]}: {e.detail}: {hint}") from e
    write_jsonl(
        out,
        (
            {
                **row,
                "completion": c.text,
                "num_tokens": c.num_tokens,
                "finish_reason": c.finish_reason,
                "truncated_tokens": c.truncated_tokens,
            }
            for row, c in zip(rows, completions)
        ),
    )
    typer.echo(f"wrote {len(completions)} completions to {out}")


@app.command()
def models():
    """List the model specs molab knows and what is converted in the cache ($MOLAB_CACHE)."""
    from rich.console import Console
    from rich.table import Table

    from molab.models.default_model import CACHE_MARKER, cache_is_valid, cache_root
    from molab.models.loading import known_specs

    table = Table("spec", "what", "cached")
    models_dir = cache_root() / "models"
    for name, what in known_specs().items():
        path = models_dir / name
        if cache_is_valid(path):
            state = str(path)
        elif not path.exists():
            state = "no"
        elif (path / CACHE_MARKER).is_file():
            state = "corrupt (rebuilt on next use)"
        else:
            state = f"{path} is not molab's cache: move it or set MOLAB_CACHE"
        table.add_row(name, what, state)
    table.add_row("<directory>", "any local Hugging Face causal LM directory", "-")
    table.add_row("<org/name>", "a Hugging Face hub id (needs the hub; offline use a directory)", "-")
    Console().print(table)


@app.command("run")
def run_recipe(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe, e.g. recipes/rm-sycophancy.yaml.")],
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option(help="Re-run stages even when up to date.")] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Print the resolved recipe, check it as a run would, and stop.")
    ] = False,
    runs_dir: Annotated[
        Path | None,
        typer.Option(
            "--runs-dir",
            help="Where runs go: RUNS_DIR/<run>/ holds the stages and report.html "
            "(default: $MOLAB_RUNS if set, else ./runs).",
            show_default=False,
        ),
    ] = None,
):
    """Run an organism recipe end to end (cached, resumable) and write its report.

    Before the first stage, the recipe is checked (split, catalog, model, input files, the runs
    directory, disk space for the documents); a problem is one error naming the file and field."""
    import os

    from molab.config import dump_config, load_config, recipe_value
    from molab.organisms.base import REGISTRY, execute, get_organism
    from molab.organisms.base import dry_run as plan_states

    name = recipe_value(recipe, "organism", set_ or [])
    if name is None:
        raise MolabError(
            f"{recipe}: field 'organism': Field required (add `organism: rm-sycophancy`; known "
            f"organisms: {', '.join(sorted(REGISTRY))})"
        )
    organism = get_organism(str(name))
    config = load_config(organism.config, recipe, set_ or [])
    root = runs_dir if runs_dir is not None else Path(os.environ.get("MOLAB_RUNS") or "runs")
    if dry_run:
        typer.echo(dump_config(config))
    if organism.validate is not None:
        organism.validate(config, recipe, root, overrides=set_ or [])
    if dry_run:
        typer.echo("plan:")
        for stage, state in plan_states(organism, config, root=root):
            typer.echo(f"  {stage}: {state}")
        return
    for result in execute(organism, config, root=root, force=force, log=typer.echo):
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
    from molab.organisms.base import get_organism, organism_of
    from molab.report import write_report

    if out is not None:
        from molab.files import check_output_file

        check_output_file(out)
    # A run without run.json predates organisms being recorded: only the RM organism existed.
    organism = organism_of(run_dir) or get_organism("rm-sycophancy")
    path = write_report(run_dir, out, sections=organism.report_sections(run_dir))
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
    from molab.bench.generate import bench_generate as run
    from molab.files import check_output_file, write_json

    if out:
        check_output_file(out)
    result = run(model, prompts, max_new_tokens, batch_size, seed, greedy_check, log=typer.echo)
    typer.echo(json.dumps(result.as_dict(), indent=2))
    if out:
        write_json(out, result.as_dict())


def _register_subcommands() -> None:
    """Command groups live in their own modules (molab/cli/<group>.py)."""
    from molab.cli.activations import activations_app  # also adds `molab bench activations`
    from molab.cli.audit import audit_app
    from molab.cli.catalog import catalog_app
    from molab.cli.circuits import circuits_app
    from molab.cli.data import data_app
    from molab.cli.eval import eval_app
    from molab.cli.study import study_app
    from molab.cli.train import bench as train_bench
    from molab.cli.train import train_app

    app.add_typer(catalog_app, name="catalog")
    app.add_typer(audit_app, name="audit")
    app.add_typer(circuits_app, name="circuits")
    app.add_typer(data_app, name="data")
    app.add_typer(train_app, name="train")
    app.add_typer(eval_app, name="eval")
    app.add_typer(study_app, name="study")
    app.add_typer(activations_app, name="activations")
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
    from molab.bench.eval import bench_eval as run
    from molab.files import check_output_file, write_json

    if out:
        check_output_file(out)
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
    from molab.bench.docs import bench_docs as run
    from molab.files import check_output_file, write_json

    if out:
        check_output_file(out)
    result = run(num_docs, seed)
    typer.echo(json.dumps(result, indent=2))
    if out:
        write_json(out, result)


def main() -> None:
    """Entry point: user errors become one line on stderr (tracebacks only with --debug).

    Secret values (`molab.secrets`) are masked in that line, in every log record and in the
    traceback Python prints for --debug or for a bug."""
    from molab import secrets

    secrets.install()
    try:
        app()
    except MolabError as e:
        if _state["debug"]:
            raise
        typer.echo(f"error: {secrets.redact_text(e)}", err=True)
        sys.exit(1)
    except (OSError, ValueError, RuntimeError) as e:
        if _state["debug"]:
            raise
        from pydantic import ValidationError

        if isinstance(e, ValidationError) and e.errors():
            # Its first problem, without the input value pydantic would print (maybe a key).
            first = e.errors()[0]
            line = f"{e.title}: field '{'.'.join(map(str, first['loc']))}': {first['msg']}"
        else:
            line = f"{e.__class__.__name__}: {e} (run with --debug for the traceback)"
        typer.echo(f"error: {secrets.redact_text(line)}", err=True)
        sys.exit(1)
    finally:
        secrets.install()  # app() swaps in typer's excepthook: put the masking one back
