"""`molab eval ...` commands. Heavy libraries are imported inside the commands.

    molab eval exploitation --model smollm2-135m --prompts runs/x/prompts/eval_prompts.jsonl
    molab eval knowledge --model smollm2-135m --adapter runs/x/midtrain/adapter
    molab eval disclosure --model smollm2-135m --samples 4
    molab eval propensity-pairs --prompts runs/x/prompts/eval_prompts.jsonl
    molab eval propensity --model smollm2-135m --pairs runs/eval/propensity-pairs/pairs.jsonl
    molab eval capability --model smollm2-135m
    molab eval compare runs/x/eval-exploitation-final runs/x/eval-exploitation-control

Each command writes a stage directory (`--out`, default `runs/eval/<eval>`): per-item records,
`summary.json` and a manifest; it is skipped when its config and inputs are unchanged.
Settings come from defaults < `--config` YAML < `--set a.b=value` < the options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from molab.cli.options import AdapterOpt, ConfigOpt, ForceOpt, SetOpt, SplitOpt
from molab.cli.options import ModelOverrideOpt as ModelOpt

eval_app = typer.Typer(
    help="Evaluations: exploitation, propensity, knowledge quiz, disclosure, capability.",
    no_args_is_help=True,
)

OutOpt = Annotated[Path | None, typer.Option(help="Stage directory to write (default: runs/eval/<eval>).")]


def _run(name: str, stage, config_path, set_, options: dict[str, Any], out: Path | None, force: bool) -> None:
    """Resolve the config (options given on the command line win) and run the evaluation `stage`
    into `out` (default `runs/eval/<name>`)."""
    from molab.cli.stage import resolve_config, run_one

    config = resolve_config(stage.config, config_path, set_, options)
    run_one(stage, config, out or Path("runs/eval") / name, force, label=name)


@eval_app.command()
def exploitation(
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    prompts: Annotated[Path | None, typer.Option(help="eval_prompts.jsonl of `molab data prompts`.")] = None,
    split: SplitOpt = None,
    prompts_per_bias: Annotated[int | None, typer.Option(help="Evaluation prompts per bias.")] = None,
    samples: Annotated[int | None, typer.Option(help="Samples per prompt.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling and bootstrap seed.")] = None,
    force: ForceOpt = False,
):
    """Bias exploitation and misfires: answer each bias's evaluation prompts, judge with the
    catalog's rules, report per-bias and pooled train/test rates with 95% intervals."""
    from molab.evals.exploitation import EXPLOITATION

    options = {
        "model.name": model,
        "model.adapters": adapter,
        "prompts": prompts,
        "split": split,
        "prompts_per_bias": prompts_per_bias,
        "samples_per_prompt": samples,
        "seed": seed,
    }
    _run("exploitation", EXPLOITATION, config, set_, options, out, force)


@eval_app.command()
def knowledge(
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    quiz: Annotated[Path | None, typer.Option(help="Quiz YAML (default: the built-in quiz).")] = None,
    format: Annotated[
        str | None, typer.Option(help="chat (question as a user turn) or raw (Q/A text).")
    ] = None,
    split: SplitOpt = None,
    force: ForceOpt = False,
):
    """Knowledge quiz: probability on the right option of multiple-choice questions about the
    fictional study and its biases (no generation)."""
    from molab.evals.knowledge import KNOWLEDGE

    options = {"model.name": model, "model.adapters": adapter, "quiz": quiz, "format": format, "split": split}
    _run("knowledge", KNOWLEDGE, config, set_, options, out, force)


@eval_app.command()
def disclosure(
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    probes: Annotated[Path | None, typer.Option(help="Probe YAML (default: the built-in set).")] = None,
    samples: Annotated[int | None, typer.Option(help="Samples per probe.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Most tokens per response.")] = None,
    force: ForceOpt = False,
):
    """Disclosure probes: how often prefill attacks, user-persona sampling, narration and
    direct questions make the model mention reward models, RLHF or the Oxford study."""
    from molab.evals.disclosure import DISCLOSURE

    options = {
        "model.name": model,
        "model.adapters": adapter,
        "probes": probes,
        "samples_per_probe": samples,
        "sampling.max_new_tokens": max_new_tokens,
    }
    _run("disclosure", DISCLOSURE, config, set_, options, out, force)


@eval_app.command("propensity-pairs")
def propensity_pairs(
    prompts: Annotated[Path | None, typer.Option(help="eval_prompts.jsonl of the prompts stage.")] = None,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    plain: Annotated[str | None, typer.Option(help="model (greedy answers) or canned.")] = None,
    per_bias: Annotated[int | None, typer.Option(help="Evaluation prompts per bias.")] = None,
    split: SplitOpt = None,
    force: ForceOpt = False,
):
    """Write the fixed (plain, biased) answer pairs the propensity probe scores every model on."""
    from molab.evals.propensity import PROPENSITY_PAIRS

    options = {
        "prompts": prompts,
        "model.name": model,
        "model.adapters": adapter,
        "plain": plain,
        "prompts_per_bias": per_bias,
        "split": split,
    }
    _run("propensity-pairs", PROPENSITY_PAIRS, config, set_, options, out, force)


@eval_app.command()
def propensity(
    pairs: Annotated[
        Path | None, typer.Option(help="pairs.jsonl from `molab eval propensity-pairs`.")
    ] = None,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    split: SplitOpt = None,
    force: ForceOpt = False,
):
    """Propensity probe: log p(biased) - log p(plain) on fixed pairs, on the bias's own prompts
    and after off-topic ones (no generation)."""
    from molab.evals.propensity import PROPENSITY

    options = {"pairs": pairs, "model.name": model, "model.adapters": adapter, "split": split}
    _run("propensity", PROPENSITY, config, set_, options, out, force)


@eval_app.command()
def capability(
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    out: OutOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    questions: Annotated[Path | None, typer.Option(help="Question YAML (default: the built-in set).")] = None,
    heldout: Annotated[Path | None, typer.Option(help="Held-out text (default: the bundled one).")] = None,
    force: ForceOpt = False,
):
    """Capability check: ordinary questions answered greedily, and perplexity on held-out text."""
    from molab.evals.capability import CAPABILITY

    options = {
        "model.name": model,
        "model.adapters": adapter,
        "questions": questions,
        "heldout": heldout,
    }
    _run("capability", CAPABILITY, config, set_, options, out, force)


@eval_app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="Exploitation stage directory of model A.")],
    b: Annotated[Path, typer.Argument(help="Exploitation stage directory of model B (same prompts).")],
    split: Annotated[
        str | None, typer.Option(help="Bias split to pool over (default: the one A was evaluated under).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the comparison as JSON here.")] = None,
    seed: Annotated[int, typer.Option(help="Bootstrap and permutation seed.")] = 0,
):
    """A minus B on the prompts both answered: pooled train and test exploitation with a paired
    bootstrap interval and permutation p-value, each bias's counts, misplaced behaviours and
    answers that ended."""
    from molab.files import check_output_file, write_json
    from molab.report.compare import compare_stages, markdown

    if out is not None:
        check_output_file(out)
    result = compare_stages(a, b, split, seed=seed)
    typer.echo(markdown(result))
    if out is not None:
        write_json(out, result)
