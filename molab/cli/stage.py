"""Running one declared stage from the command line (`molab data ...`, `molab eval ...`).

Every such command resolves its config the same way (defaults < `--config` YAML < `--set
a.b=value` < the command's own options, when given) and runs the stage into `--out` (a run's
stage directory: manifest, caching, lock, atomic replacement); the stage itself says what it
reads, so the command line hashes the same inputs a recipe does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def resolve_config(config_cls, config_path: Path | None, set_: list[str] | None, options: dict[str, Any]):
    """The config: `options` that are not None override `--set`, which overrides the YAML."""
    from molab.config import load_config

    overrides = list(set_ or [])
    for key, value in options.items():
        if value is not None:
            value = [str(v) for v in value] if isinstance(value, list) else value
            overrides.append(f"{key}={json.dumps(str(value) if isinstance(value, Path) else value)}")
    return load_config(config_cls, config_path, overrides)


def run_one(stage, config, out: Path, force: bool, label: str | None = None) -> None:
    """Run `stage` with `config` into the stage directory `out` and print its metrics."""
    from molab.pipeline import RunDir, run_stage

    run, name = RunDir.of_stage(out)
    result = run_stage(run, name, stage, config, force=force)
    state = "up to date, skipped" if result.skipped else "done"
    typer.echo(
        f"{label or stage.name}: {state} -> {result.dir}\n{json.dumps(result.manifest['metrics'], indent=2)}"
    )
