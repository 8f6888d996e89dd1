"""What every evaluation stage shares: its base config, and how it declares its inputs.

Configs: `EvalConfig` (the model evaluated, the seed), `GeneratingEvalConfig` (plus the
generation backend and sampling, whose defaults each evaluation sets for itself), and
`BiasPromptSelection` (which of the prompts stage's evaluation prompts are used). The fields,
names and defaults are those each evaluation always had, so stage configs hash as before.

An evaluation reads the model's adapters, the data files its config names (prompts, pairs, a
quiz, probes, questions, held-out text) and, when it judges by the catalog's rules, the fields
of a custom catalog it uses. Declaring that once here keeps the recipe and the command line
hashing the same inputs (they used to disagree, and a recipe skipped stale evaluations).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from molab.files import entries_fingerprint
from molab.models.generation import BackendConfig, HFBackendConfig, SamplingConfig
from molab.models.loading import ModelSpec
from molab.pipeline import Input, Stage


class EvalConfig(BaseModel):
    """The model an evaluation scores, and its seed (sampling and bootstrap intervals)."""

    model_config = ConfigDict(extra="forbid")
    model: ModelSpec = Field(default_factory=ModelSpec)
    seed: int = Field(0, description="Sampling and bootstrap seed.")


class GeneratingEvalConfig(EvalConfig):
    """An evaluation that generates answers: the backend, and sampling (each sets its default)."""

    backend: BackendConfig = Field(default_factory=HFBackendConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


class BiasPromptSelection(BaseModel):
    """Which evaluation prompts (from `molab data prompts`) an evaluation uses, per bias."""

    prompts: Path | None = Field(
        None, description="eval_prompts.jsonl from `molab data prompts` (a recipe fills it in)."
    )
    split: str = "english"
    catalog: str | None = None
    prompts_per_bias: int = Field(20, ge=1, description="The first N evaluation prompts of each bias.")
    test_prompts_per_bias: int | None = Field(
        None,
        ge=1,
        description="Evaluation prompts per test bias (default: prompts_per_bias). A split holds few "
        "test biases and their pooled rate is the headline, so that is where samples buy the most.",
    )


def eval_inputs(files: tuple[str, ...], catalog_fields: tuple[str, ...] = ()) -> Callable:
    """An `inputs` function for `Stage`: adapters, the config's `files` fields that are set, and
    the catalog's `catalog_fields` (nothing of the catalog when empty)."""

    def inputs(config, stage_dir: Path) -> dict[str, Input]:
        found: dict[str, Input] = {f"adapter_{i}": Path(a) for i, a in enumerate(config.model.adapters)}
        found |= {f: Path(getattr(config, f)) for f in files if getattr(config, f, None) is not None}
        if catalog_fields and getattr(config, "catalog", None):
            found["catalog"] = _catalog_fingerprint(config.catalog, catalog_fields)
        if (split := getattr(config, "split", None)) and Path(split).is_file():
            found["split"] = Path(split)
        return found

    return inputs


def eval_stage(name: str, config: type, outputs: tuple[str, ...], run: Callable, **inputs) -> Stage:
    """The `Stage` of evaluation `name` whose function is `run(config, out_dir)`."""
    return Stage(name, config, outputs, lambda c, out, _: run(c, out), eval_inputs(**inputs))


def _catalog_fingerprint(path: str, fields: tuple[str, ...]):
    """The catalog fields an evaluation judges by (as `molab.catalog.custom.catalog_fingerprint`,
    which this floor may not import: generic tools such as audits build on evaluations)."""
    return entries_fingerprint(path, "catalog", "biases", fields, ("include_builtin", "builtin"))
