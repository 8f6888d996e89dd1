"""A run's checkpoints: the model a training stage made, as a model spec.

A training stage writes `model.json` beside its weights: the full stack it stands for (base
model name, adapter directories in order, or its own full weights) as a `ModelSpec`. Reading
that belongs with loading, not with training: an evaluation, the report or an audit loads a
run's model without importing the trainer. A spec may also *name* a stage (`ModelSpec(name=
"runs/x/sft")`: a directory holding `model.json`), resolved when it is loaded (`resolve_spec`),
so that a recipe can plan its stages before any of them has run.
"""

from __future__ import annotations

import json
from pathlib import Path

from molab.errors import MolabError
from molab.models.loading import ModelSpec

MODEL_FILE = "model.json"  # in a training stage: the spec of the model it made
ADAPTER_DIR = "adapter"  # a LoRA stage's new adapter
FULL_MODEL_DIR = "model"  # a full fine-tune's weights


def is_stage(name: str | Path) -> bool:
    """Whether `name` is a training stage's directory (it holds `model.json`)."""
    return (Path(name).expanduser() / MODEL_FILE).is_file()


def stage_model(stage_dir: str | Path) -> ModelSpec:
    """The model a completed training stage made (base plus adapters), from its `model.json`."""
    path = Path(stage_dir) / MODEL_FILE
    try:
        return ModelSpec.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise MolabError(f"{path} is missing: {stage_dir} is not a completed training stage") from None
    except (OSError, ValueError) as e:
        raise MolabError(f"{path} is corrupt ({e.__class__.__name__}): re-run that stage") from None


def resolve_spec(spec: ModelSpec) -> ModelSpec:
    """`spec` with a stage directory as its name replaced by the model that stage made; the
    spec's own adapters stack on top, and its loading options (device, dtype, merge) stay."""
    if not is_stage(spec.name):
        return spec
    made = stage_model(spec.name)
    return spec.model_copy(update={"name": made.name, "adapters": [*made.adapters, *spec.adapters]})
