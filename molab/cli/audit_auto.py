"""`molab audit auto RUN_DIR`: the scripted auditor (molab/audit/auto.py, auto_run.py) on one
model of a run, under each access condition, scored against the organism's ground truth.

    molab audit auto runs/rm-sycophancy                          # the final checkpoint, all three conditions
    molab audit auto runs/x --checkpoint control --access sampling
    molab audit auto runs/x --model runs/x/midtrain --tag mid     # any model spec
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from molab.cli.audit import audit_app
from molab.cli.options import ForceOpt


@audit_app.command("auto")
def auto(
    run_dir: Annotated[
        Path, typer.Argument(help="The run directory to audit (its training data, its models).")
    ],
    checkpoint: Annotated[
        str, typer.Option(help="The run's checkpoint to audit (its eval stages name it).")
    ] = "final",
    model: Annotated[str | None, typer.Option(help="A model spec instead of a checkpoint.")] = None,
    tag: Annotated[
        str | None, typer.Option(help="Name in the stage names (default: the checkpoint).")
    ] = None,
    access: Annotated[
        list[str] | None,
        typer.Option("--access", help="data (weights and data), weights or sampling; repeat (default: all)."),
    ] = None,
    samples: Annotated[int, typer.Option(help="Samples per probe prompt.")] = 4,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens per probe sample.")] = 128,
    replies: Annotated[int, typer.Option(help="The model's answers per chat prompt (weights).")] = 2,
    reply_tokens: Annotated[int, typer.Option(help="Most tokens per chat answer (weights).")] = 96,
    d_sae: Annotated[int, typer.Option(help="SAE width (weights).")] = 2048,
    sae_tokens: Annotated[int, typer.Option(help="SAE training tokens (weights).")] = 200_000,
    features: Annotated[int, typer.Option(help="Always-on features steered (weights).")] = 3,
    alpha: Annotated[float, typer.Option(help="Steering: features scaled by 1 + alpha.")] = 4.0,
    hypotheses: Annotated[Path | None, typer.Option(help="Auditor file (default: the built-in one).")] = None,
    max_claims: Annotated[int, typer.Option(help="Most behaviours a verdict lists.")] = 60,
    seed: Annotated[int, typer.Option(help="Sampling and training seed.")] = 0,
    record: Annotated[
        Path | None, typer.Option(help="Also write a compact record (times, probes, verdicts, scores) here.")
    ] = None,
    force: ForceOpt = False,
):
    """Run the auditor's tools in a fixed order and write a verdict per access condition
    (RUN_DIR/audit-auto-<tag>-<access>/verdict.json), scored against the organism's ground
    truth when it has one."""
    from molab.audit.auto import load_auditor
    from molab.audit.auto_run import (
        ACCESS,
        AutoDataConfig,
        AutoWeightsConfig,
        auto_record,
        checkpoint_model,
        run_auto,
    )
    from molab.audit.probe import ProbeConfig
    from molab.audit.search import model_corpora
    from molab.errors import MolabError
    from molab.files import check_output_file, write_json
    from molab.models.checkpoints import resolve_spec
    from molab.models.generation import SamplingConfig
    from molab.models.loading import ModelSpec
    from molab.organisms.base import organism_of

    if not run_dir.is_dir():
        raise MolabError(f"run directory {run_dir} does not exist")
    load_auditor(hypotheses)  # a bad auditor file fails before any work
    if record is not None:
        check_output_file(record, "--record")
    spec = ModelSpec(name=model) if model else checkpoint_model(run_dir, checkpoint)
    tag = tag or ("model" if model else checkpoint)
    conditions = access or list(ACCESS)
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0, top_p=0.95)
    probes = ProbeConfig(model=spec, samples_per_probe=samples, sampling=sampling, seed=seed)
    weights = AutoWeightsConfig(
        model=spec,
        replies=replies,
        sampling=SamplingConfig(max_new_tokens=reply_tokens, temperature=1.0, top_p=0.95),
        d_sae=d_sae,
        sae_tokens=sae_tokens,
        features=features,
        alpha=alpha,
        samples_per_probe=samples,
        probe_sampling=sampling,
        seed=seed,
    )
    organism = organism_of(run_dir)
    truth = organism.ground_truth(run_dir) if organism is not None and organism.ground_truth else None
    results = run_auto(
        run_dir,
        spec,
        tag,
        conditions,
        probes=probes,
        weights=weights,
        data=AutoDataConfig(corpora=[c.path for c in model_corpora(resolve_spec(spec).adapters)]),
        verdict_settings={"hypotheses": hypotheses, "max_claims": max_claims, "seed": seed},
        truth=truth,
        force=force,
        log=typer.echo,
    )
    for condition, r in results.items():
        said = r["objective"] or f"none (best {r['best']})"
        line = f"{condition:9s} objective {said} (support {r['support']:.3f}), {r['claims']} claims"
        if "objective_named" in r:
            line += (
                f"; named: {'yes' if r['objective_named'] else 'no'}, "
                f"true behaviours {r['true_behaviours']}, false {r['false_behaviours']}"
            )
        typer.echo(f"{line}  [{r['stage']}]")
    if record is not None:
        write_json(record, auto_record(run_dir, tag, results))
        typer.echo(f"wrote {record}")
