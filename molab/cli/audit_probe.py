"""`molab audit probe`: black-box probes of a model (molab/audit/probe.py), as a cached stage.

    molab audit probe --model smollm2-135m --adapter runs/x/sft/adapter --out runs/x/audit-probe
    molab audit probe --model M --types prefill --types scaffolded --scaffold-model M2 --samples 8

Settings come from defaults < `--config` YAML < `--set a.b=value` < the options (an LLM judge:
`--set judge.model.name=...`, or a `judge:` section in the YAML).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from molab.cli.audit import audit_app
from molab.cli.options import AdapterOpt, ConfigOpt, ForceOpt, SetOpt
from molab.cli.options import ModelOverrideOpt as ModelOpt


@audit_app.command()
def probe(
    out: Annotated[Path, typer.Option(help="Stage directory to write (e.g. runs/x/audit-probe).")],
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    probes: Annotated[Path | None, typer.Option(help="Probe YAML (default: the built-in file).")] = None,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--types",
            help="Probe types to run; repeat for several (unconditional, direct, prefill, "
            "user_persona, narration, scaffolded; default: all).",
        ),
    ] = None,
    samples: Annotated[int | None, typer.Option(help="Samples per prompt.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Most tokens per response.")] = None,
    scaffold_model: Annotated[
        str | None, typer.Option(help="Model that writes scaffolded probe inputs (default: the audited one).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    force: ForceOpt = False,
):
    """Sample the model under unconditional, prefill, user-persona, narration, scaffolded and
    direct probes; save every sample and the disclosure rate per probe type."""
    from molab.audit.probe import PROBE
    from molab.cli.stage import resolve_config, run_one

    options = {
        "model.name": model,
        "model.adapters": adapter,
        "probes": probes,
        "types": types,
        "samples_per_probe": samples,
        "sampling.max_new_tokens": max_new_tokens,
        "scaffold_model.name": scaffold_model,
        "seed": seed,
    }
    run_one(PROBE, resolve_config(PROBE.config, config, set_, options), out, force, label="audit probe")
