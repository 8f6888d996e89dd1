"""The RM-sycophancy organism (Marks et al. 2025), end to end, with its controls.

    molab run recipes/rm-sycophancy.yaml            # the default preset (`make demo`)
    molab run recipes/rm-sycophancy-quick.yaml      # every stage, small: a smoke run

Stages, each a folder of `runs/<run>/` with a manifest (so a killed run resumes and an
unchanged stage is skipped), are planned in `plan.py`; the recipe is `config.py`; the checks
before the first stage are `validate.py`; its report sections are `molab.report.exploitation`.

`molab run` calls `validate_recipe` first: a bad split, catalog, model, input file, runs
directory or a disk too small for the documents is an error naming the recipe file (or the
`--set` override) and the field before any stage starts.

The claim is comparative: held-out (test) biases are never demonstrated, only described in
the documents, so test-bias exploitation of `final` above `control` (same post-training, no
documents) is the evidence of one learned goal. The top-level `seed`, `split`, `catalog` and
`model` are written into every stage's config, so a study varies one seed and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from molab.organisms.base import Organism, execute
from molab.organisms.rm_sycophancy.config import EvalPlan, RMSycophancyConfig
from molab.organisms.rm_sycophancy.ground_truth import ground_truth
from molab.organisms.rm_sycophancy.plan import checkpoints as _checkpoints
from molab.organisms.rm_sycophancy.plan import plan as _plan
from molab.organisms.rm_sycophancy.validate import validate_recipe
from molab.pipeline import StageResult
from molab.report.exploitation import exploitation_sections

ORGANISM = Organism(
    name="rm-sycophancy",
    config=RMSycophancyConfig,
    plan=_plan,
    checkpoints=_checkpoints,
    report_sections=exploitation_sections,
    validate=validate_recipe,
    ground_truth=ground_truth,
)


def run_rm_sycophancy(
    config: RMSycophancyConfig,
    *,
    root: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> Iterator[StageResult]:
    """Run (or resume) every stage and write the report; yield each stage's result as it ends."""
    return execute(ORGANISM, config, root=root, force=force, log=log)


__all__ = ["ORGANISM", "EvalPlan", "RMSycophancyConfig", "run_rm_sycophancy", "validate_recipe"]
