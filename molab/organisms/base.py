"""What an organism is, and how `molab run` drives one chosen by its recipe's `organism:` field.

An organism (the RM-sycophancy model, a feedback-gaming one, ...) is a recipe config, a plan of
stages, the checkpoints it evaluates, and the sections it adds to the run's report. The plan is
data: each planned stage names its declared `Stage` and a function that builds its config when
its turn comes (a config may name an earlier stage's outputs, e.g. the model a training stage
made, which exist only once that stage has run). So `molab run --dry-run` can say, before
anything runs, which stages would run, which are up to date and which wait for others; and
running a plan is the same loop for every organism, under one lock per run.

Organisms register by name (`REGISTRY`: name -> "module:attribute"), imported only when chosen,
so `molab --help` stays instant and a broken organism cannot break the others.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from molab.errors import MolabError
from molab.files import read_text_file, write_json
from molab.pipeline import RunDir, Stage, StageResult, run_stage, stage_state
from molab.report import Section, write_report
from molab.report.collect import RUN_FILE

REGISTRY: dict[str, str] = {"rm-sycophancy": "molab.organisms.rm_sycophancy:ORGANISM"}


@dataclass(frozen=True)
class PlannedStage:
    """Stage `name` of a run: `stage` with the config `make_config()` builds when its turn comes,
    after the stages named in `after` (whose outputs that config may read)."""

    name: str
    stage: Stage
    make_config: Callable[[], BaseModel]
    after: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Organism:
    """An organism: its recipe config and what `molab run` and `molab report` need from it."""

    name: str
    config: type[BaseModel]
    plan: Callable[[Any, RunDir], list[PlannedStage]]
    # The checkpoints it evaluates, in the order the report shows them.
    checkpoints: Callable[[Any], list[str]]
    # Report sections from the run directory (e.g. the RM organism's exploitation tables).
    report_sections: Callable[[Path], list[Section]] = lambda run_dir: []
    # Checks of a recipe before any stage runs: (config, recipe path, runs root, --set overrides).
    validate: Callable[..., None] | None = None
    run_name: Callable[[Any], str] = field(default=lambda config: config.run)
    # Its ground truth from the run directory (a `molab.audit.verdict.GroundTruth`), to score an
    # audit's verdict in `molab audit report`; None for an organism without one.
    ground_truth: Callable[[Any], Any] | None = None


def get_organism(name: str) -> Organism:
    """The organism registered under `name` (imported now); a MolabError naming the known ones."""
    if name not in REGISTRY:
        raise MolabError(f"unknown organism {name!r}: known organisms are {', '.join(sorted(REGISTRY))}")
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def organism_of(run_dir: str | Path) -> Organism | None:
    """The organism that made `run_dir` (from its run.json), or None for a run without one."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        name = json.loads(read_text_file(path, "run record"))["organism"]
    except (ValueError, KeyError, TypeError):
        raise MolabError(f"{path} is corrupt: it should name the run's organism") from None
    return get_organism(name)


def execute(
    organism: Organism,
    config: BaseModel,
    *,
    root: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> Iterator[StageResult]:
    """Run (or resume) every planned stage in order; yield each result as it finishes. One
    process runs a run at a time: a second one stops at once, naming the first."""
    run = RunDir(organism.run_name(config), root)
    with run.lock():
        record = {"organism": organism.name, "checkpoints": organism.checkpoints(config)}
        write_json(run.path / RUN_FILE, record)
        for planned in organism.plan(config, run):
            log(f"stage {planned.name} ...")
            config_now = planned.make_config()
            yield run_stage(run, planned.name, planned.stage, config_now, seed=planned.seed, force=force)
        log("report ...")
        write_report(run.path, sections=organism.report_sections(run.path))


def dry_run(
    organism: Organism, config: BaseModel, *, root: str | Path | None = None
) -> list[tuple[str, str]]:
    """(stage, what `execute` would do) for every planned stage: 'up to date', 'to run', or
    'waits for <stage>' when an earlier stage it reads from has to run first."""
    run = RunDir(organism.run_name(config), root)
    states: dict[str, str] = {}
    for planned in organism.plan(config, run):
        blocked = [a for a in planned.after if states.get(a, "up to date") != "up to date"]
        if blocked:
            states[planned.name] = f"waits for {blocked[0]}"
        else:
            config_now = planned.make_config()
            states[planned.name] = stage_state(
                run, planned.name, planned.stage, config_now, seed=planned.seed
            )
    return list(states.items())
