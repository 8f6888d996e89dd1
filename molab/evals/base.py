"""What every evaluation stage shares: how it declares its inputs.

An evaluation reads the model's adapters, the data files its config names (prompts, pairs, a
quiz, probes, questions, held-out text) and, when it judges by the catalog's rules, the fields
of a custom catalog it uses. Declaring that once here keeps the recipe and the command line
hashing the same inputs (they used to disagree, and a recipe skipped stale evaluations).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from molab.catalog import catalog_inputs
from molab.pipeline import Input, Stage


def eval_inputs(files: tuple[str, ...], catalog_fields: tuple[str, ...] = ()) -> Callable:
    """An `inputs` function for `Stage`: adapters, the config's `files` fields that are set, and
    the catalog's `catalog_fields` (nothing of the catalog when empty)."""

    def inputs(config, stage_dir: Path) -> dict[str, Input]:
        found: dict[str, Input] = {f"adapter_{i}": Path(a) for i, a in enumerate(config.model.adapters)}
        found |= {f: Path(getattr(config, f)) for f in files if getattr(config, f, None) is not None}
        if catalog_fields:
            found |= catalog_inputs(config, catalog_fields)
        elif (split := getattr(config, "split", None)) and Path(split).is_file():
            found["split"] = Path(split)
        return found

    return inputs


def eval_stage(name: str, config: type, outputs: tuple[str, ...], run: Callable, **inputs) -> Stage:
    """The `Stage` of evaluation `name` whose function is `run(config, out_dir)`."""
    return Stage(name, config, outputs, lambda c, out, _: run(c, out), eval_inputs(**inputs))
