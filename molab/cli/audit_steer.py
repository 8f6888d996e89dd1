"""`molab audit steer ...`: steer or ablate SAE features (or raw directions) and measure the
change (molab/audit/steer.py).

    molab audit steer eval --eval exploitation --model M --sae runs/x/sae --feature 123 --scale 2.0 \\
        --set prompts=runs/x/prompts/eval_prompts.jsonl --out runs/x/steer-f123
    molab audit steer score --model M --sae runs/x/sae --feature 123 --alpha 0.5 \\
        --prompt "Give me a soup recipe." --completion " Add some chocolate."

`eval` writes the stages `unsteered` (or takes `--baseline`), `steered` and `control-f<c>`
into the run folder `--out`, then prints steered minus unsteered: for exploitation the paired
difference with its interval and permutation p (`molab.report.compare`), for the other
evaluations their summary numbers side by side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from molab.cli.audit import audit_app
from molab.cli.options import AdapterOpt, ConfigOpt, ForceOpt, SetOpt
from molab.cli.options import ModelOverrideOpt as ModelOpt
from molab.errors import MolabError

steer_app = typer.Typer(
    help="Steer or ablate SAE features or directions while a model generates or scores, and measure "
    "the change.",
    no_args_is_help=True,
)
audit_app.add_typer(steer_app, name="steer")

SaeOpt = Annotated[
    Path | None, typer.Option("--sae", help="SAE directory (cfg.json + sae_weights.safetensors).")
]
FeatureOpt = Annotated[
    list[int] | None, typer.Option("--feature", help="SAE feature index; repeat for a set.")
]
ControlsOpt = Annotated[
    int, typer.Option("--control-features", help="Also measure N random features of the same scale.")
]
ControlCacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--control-cache",
        help="Activation cache of the SAE's point: match controls on mean f(x)*|W_dec[f]| there "
        "(default: on decoder norm).",
    ),
]
ControlSeedOpt = Annotated[int, typer.Option("--control-seed", help="Seed of the control draw.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _intervention(sae, features, scale, add, ablate, vector, point):
    """The Intervention the options ask for (exactly one of --scale, --add, --ablate)."""
    from pydantic import ValidationError

    from molab.audit.steer import Intervention

    ops = [(op, v) for op, v in (("scale", scale), ("add", add), ("ablate", ablate or None)) if v is not None]
    if len(ops) != 1:
        raise MolabError("give exactly one of --scale A (x 1+A), --add C or --ablate")
    ((op, amount),) = ops
    try:
        return Intervention(
            op=op,
            amount=0.0 if op == "ablate" else amount,
            sae=sae,
            features=features or [],
            vector=vector,
            point=point,
        )
    except ValidationError as e:
        raise MolabError(f"steering options: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def _controls(sae: Path | None, features: list[int], n: int, cache: Path | None, seed: int) -> list[int]:
    """`n` random features of the scale of `features` (see `molab.audit.steer.control_features`)."""
    if not n:
        return []
    if sae is None:
        raise MolabError("--control-features needs an SAE (--sae with --feature)")
    from molab.audit.sae import load_sae
    from molab.audit.steer import check_sae, control_features, feature_scales
    from molab.models.activations import ActivationCache

    loaded = load_sae(sae)
    check_sae(loaded, features, where=f"the SAE at {sae}")
    scales = feature_scales(loaded, ActivationCache(cache) if cache else None)
    return control_features(scales, features, n, seed=seed)


def _evaluations() -> dict:
    """Evaluation name -> (its Stage, run_on(config, out_dir, Steerable)): each runs on the
    steered model's backend or scorer."""
    from molab.evals.disclosure import DISCLOSURE, disclosure_stage
    from molab.evals.exploitation import EXPLOITATION, exploitation_stage
    from molab.evals.knowledge import KNOWLEDGE, knowledge_stage
    from molab.evals.propensity import PROPENSITY, propensity_stage

    return {
        "exploitation": (EXPLOITATION, lambda c, out, m: exploitation_stage(c, out, backend=m.backend())),
        "disclosure": (DISCLOSURE, lambda c, out, m: disclosure_stage(c, out, backend=m.backend())),
        "knowledge": (
            KNOWLEDGE,
            lambda c, out, m: knowledge_stage(c, out, scorer=m.scorer(max_batch_tokens=c.max_batch_tokens)),
        ),
        "propensity": (
            PROPENSITY,
            lambda c, out, m: propensity_stage(
                c, out, scorer=m.scorer(end_turn=c.end_turn, max_batch_tokens=c.max_batch_tokens)
            ),
        ),
    }


@steer_app.command("eval")
def eval_(
    eval_name: Annotated[
        str, typer.Option("--eval", help="exploitation, disclosure, knowledge or propensity.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Run folder for the unsteered, steered and control stages.")
    ],
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    baseline: Annotated[
        Path | None,
        typer.Option(help="A finished unsteered stage of this evaluation to reuse (its config is used)."),
    ] = None,
    sae: SaeOpt = None,
    feature: FeatureOpt = None,
    scale: Annotated[float | None, typer.Option(help="Scale the features (or direction) by 1 + A.")] = None,
    add: Annotated[float | None, typer.Option(help="Add C x the decoder rows (or direction).")] = None,
    ablate: Annotated[bool, typer.Option("--ablate", help="Set the features (or direction) to 0.")] = False,
    vector: Annotated[
        Path | None, typer.Option(help="A direction: .safetensors (one tensor) or .npy.")
    ] = None,
    point: Annotated[
        str | None, typer.Option(help="Hook point of --vector, e.g. layers.15.resid_post.")
    ] = None,
    control_features: ControlsOpt = 0,
    control_cache: ControlCacheOpt = None,
    control_seed: ControlSeedOpt = 0,
    json_: JsonOpt = False,
    force: ForceOpt = False,
):
    """Run an evaluation unsteered and steered (and on control features) and print the change."""
    from molab.audit.steer import baseline_config, side_by_side, steer_stages
    from molab.cli.stage import resolve_config

    evaluations = _evaluations()
    if eval_name not in evaluations:
        raise MolabError(
            f"--eval {eval_name}: steering measures {', '.join(evaluations)} (capability scores perplexity "
            "with a second copy of the model, out of the intervention's reach)"
        )
    stage, run_on = evaluations[eval_name]
    intervention = _intervention(sae, feature, scale, add, ablate, vector, point)
    if baseline is not None:
        if model or adapter or config or set_:
            raise MolabError("--baseline brings its own config: drop --model, --adapter, --config and --set")
        cfg = baseline_config(stage, baseline)
    else:
        cfg = resolve_config(stage.config, config, set_, {"model.name": model, "model.adapters": adapter})
    controls = _controls(sae, feature or [], control_features, control_cache, control_seed)
    results = steer_stages(
        stage, run_on, cfg, intervention, out, baseline=baseline, controls=controls, force=force
    )
    report: dict = {
        "eval": eval_name,
        "intervention": intervention.label(),
        "unsteered": str(results.unsteered.dir),
        "steered": str(results.steered.dir),
        "controls": {c: str(r.dir) for c, r in results.controls.items()},
    }
    if eval_name == "exploitation":
        from molab.report.compare import compare_stages, markdown

        diff = compare_stages(results.steered.dir, results.unsteered.dir, seed=cfg.seed)
        report["comparison"] = diff
        report["control_comparisons"] = {
            c: compare_stages(r.dir, results.unsteered.dir, seed=cfg.seed)["difference"]
            for c, r in results.controls.items()
        }
        text = [f"{intervention.label()}: A = steered, B = unsteered", markdown(diff)]
        text += _control_lines(report["control_comparisons"])
    else:
        before = results.unsteered.manifest["metrics"]
        report["comparison"] = side_by_side(before, results.steered.manifest["metrics"])
        report["control_comparisons"] = {
            c: side_by_side(before, r.manifest["metrics"]) for c, r in results.controls.items()
        }
        text = [f"{intervention.label()}:", "| metric | unsteered | steered | change |", "|---|---|---|---|"]
        text += [
            f"| {k} | {v['unsteered']:.4g} | {v['steered']:.4g} | {v['diff']:+.4g} |"
            for k, v in report["comparison"].items()
        ]
        for c, rows in report["control_comparisons"].items():
            text.append(f"control f{c}: " + ", ".join(f"{k} {v['diff']:+.4g}" for k, v in rows.items()))
    typer.echo(json.dumps(report, indent=2, default=str) if json_ else "\n".join(text))


def _control_lines(comparisons: dict) -> list[str]:
    from molab.report.formatting import difference, pvalue

    lines = []
    for c, groups in comparisons.items():
        parts = [f"{g} {difference(r)} (p {pvalue(r['p_value'])})" for g, r in groups.items()]
        lines.append(f"control f{c} - unsteered: " + "; ".join(parts))
    return lines


@steer_app.command("score")
def score(
    sae: Annotated[Path, typer.Option("--sae", help="SAE directory (cfg.json + sae_weights.safetensors).")],
    feature: Annotated[list[int], typer.Option("--feature", help="SAE feature index; repeat for a set.")],
    prompt: Annotated[str, typer.Option(help="The user message (rendered with the chat template).")],
    completion: Annotated[str, typer.Option(help="The assistant text C whose log-probability is compared.")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model spec (name, dir or stage dir).")
    ] = "smollm2-135m",
    adapter: AdapterOpt = None,
    alpha: Annotated[float, typer.Option(help="Scale the features by 1 + alpha against 1 - alpha.")] = 0.5,
    system: Annotated[str | None, typer.Option(help="A system message before the prompt.")] = None,
    control_features: ControlsOpt = 0,
    control_cache: ControlCacheOpt = None,
    control_seed: ControlSeedOpt = 0,
    json_: JsonOpt = False,
):
    """Steering-effect score SE = log p(C | features x (1+alpha)) - log p(C | features x (1-alpha)),
    summed over the completion's tokens; with controls, the same for random features of the same
    scale, and how many of them move C at least as much."""
    from molab.audit.sae import load_sae
    from molab.audit.steer import Steerable, check_sae, steering_effect
    from molab.models.generation import Prompt
    from molab.models.loading import ModelSpec

    check_sae(load_sae(sae), feature, where=f"the SAE at {sae}")  # before the model loads
    controls = _controls(sae, feature, control_features, control_cache, control_seed)
    target = Steerable(ModelSpec(name=model, adapters=[str(a) for a in adapter or []]))
    the_prompt = Prompt.chat(prompt, system)
    effect = steering_effect(target, sae, feature, alpha, the_prompt, completion)
    result = effect.record()
    if controls:
        others = [steering_effect(target, sae, [c], alpha, the_prompt, completion) for c in controls]
        result["controls"] = [o.record() for o in others]
        result["controls_at_least_as_large"] = sum(abs(o.se) >= abs(effect.se) for o in others)
    if json_:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(
        f"SE = {effect.se:+.4f} (features {', '.join(map(str, feature))}, alpha {alpha:g}, "
        f"{effect.tokens} tokens)\nlog p(C | x{1 + alpha:g}) = {effect.logp_up:.4f}\n"
        f"log p(C | x{1 - alpha:g}) = {effect.logp_down:.4f}"
    )
    for o in result.get("controls", []):
        typer.echo(f"control f{o['features'][0]}: SE = {o['se']:+.4f}")
    if controls:
        typer.echo(
            f"controls with |SE| at least as large: {result['controls_at_least_as_large']}/{len(controls)}"
        )
