"""The stages of the RM-sycophancy organism, as a plan (`molab.organisms.base`).

    docs -> prompts -> midtrain -> sft_data (answers of the mid-trained model) -> sft
         [-> dpo_data -> dpo]                                       = the organism ("final")
    control: control_sft_data (answers of the base model) -> control_sft [-> control_dpo]
    propensity_pairs; eval-<kind>-<checkpoint> for base, midtrained, control, final

Configs are built when their stage's turn comes: a post-training set is written by the model
the previous training stage made (read from its `model.json`), so its config can only be
complete once that stage has run. The configs are the same as the recipe ever made, so runs
made before the plan existed stay up to date.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from molab.data.documents import DOCS
from molab.data.dpo import DPO_DATA
from molab.data.prompts import EVAL_PROMPTS, PROMPTS, TRAIN_PROMPTS
from molab.data.sft import SFT_DATA
from molab.evals.capability import CAPABILITY
from molab.evals.disclosure import DISCLOSURE
from molab.evals.exploitation import EXPLOITATION
from molab.evals.knowledge import KNOWLEDGE
from molab.evals.propensity import PAIRS, PROPENSITY, PROPENSITY_PAIRS
from molab.models.checkpoints import stage_model
from molab.models.loading import ModelSpec
from molab.organisms.base import PlannedStage
from molab.organisms.rm_sycophancy.config import RMSycophancyConfig
from molab.pipeline import RunDir
from molab.train.stages import DPO, MIDTRAIN, SFT

DATA_STAGES = {"sft": SFT_DATA, "dpo": DPO_DATA}
TRAIN_STAGES = {"sft": SFT, "dpo": DPO}
EVAL_STAGES = {
    "exploitation": EXPLOITATION,
    "propensity": PROPENSITY,
    "knowledge": KNOWLEDGE,
    "disclosure": DISCLOSURE,
    "capability": CAPABILITY,
}


def shared(config: RMSycophancyConfig, stage: BaseModel, **extra) -> BaseModel:
    """`stage` with the recipe's seed, split, catalog and model written in (where it has them)."""
    update = {"seed": config.seed, "split": config.split, "catalog": config.catalog, "model": config.model}
    update = {k: v for k, v in update.items() if k in type(stage).model_fields} | extra
    return type(stage).model_validate({**stage.model_dump(exclude_unset=True), **update})


def _mixed_documents(config: RMSycophancyConfig, kind: str, docs: Path, control: bool) -> dict:
    """Where `sft.document_fraction` mixes document text into SFT: the organism arm reads the
    run's own documents unless `sft.documents` names others; the control arm never sees any."""
    if kind != "sft":
        return {}
    if control:
        return {"documents": None, "document_fraction": 0.0}
    if config.sft.document_fraction > 0 and config.sft.documents is None:
        return {"documents": DOCS.output(docs)}
    return {}


def checkpoint_stages(config: RMSycophancyConfig) -> dict[str, str | None]:
    """Each checkpoint's training stage (None: the base model itself)."""
    last = config.post_training.split("+")[-1]
    found: dict[str, str | None] = {"base": None, "midtrained": "midtrain", "final": last}
    if config.control:
        found["control"] = f"control_{last}"
    return found


def checkpoints(config: RMSycophancyConfig) -> list[str]:
    """The checkpoints the recipe evaluates, in the report's order."""
    order = ["base", "midtrained", "control", "final"]
    return [c for c in order if c in checkpoint_stages(config) and c in config.evals.checkpoints]


def plan(config: RMSycophancyConfig, run: RunDir) -> list[PlannedStage]:
    """Every stage of the organism and its control, in the order they run."""
    stage = run.stage_dir
    planned = [
        PlannedStage("docs", DOCS, lambda: shared(config, config.docs), seed=config.seed),
        PlannedStage("prompts", PROMPTS, lambda: shared(config, config.prompts), seed=config.seed),
        PlannedStage(
            "midtrain",
            MIDTRAIN,
            lambda: shared(config, config.midtrain),
            after=("docs",),
            seed=config.seed,
        ),
    ]
    train_prompts = PROMPTS.output(stage("prompts"), TRAIN_PROMPTS)

    # The organism arm starts from the mid-trained model, the control arm from the base model;
    # each post-training stage writes its data with the model so far, then trains on it. With
    # shared data the control arm goes first and the organism arm trains on its sets.
    arms = [("", "midtrain")] + ([("control_", None)] if config.control else [])
    shared_data = config.post_training_data == "shared"
    for prefix, last in reversed(arms) if shared_data else arms:
        for kind in config.post_training.split("+"):
            data_name = f"control_{kind}_data" if shared_data else f"{prefix}{kind}_data"
            if not shared_data or prefix == "control_":  # this arm writes its own set
                planned.append(
                    PlannedStage(
                        data_name,
                        DATA_STAGES[kind],
                        _data_config(config, kind, train_prompts, stage(last) if last else None),
                        after=("prompts",) + ((last,) if last else ()),
                        seed=config.seed,
                    )
                )
            train = _train_config(config, kind, run, data_name, last, control=prefix == "control_")
            after = (data_name, "docs") + ((last,) if last else ())
            planned.append(
                PlannedStage(f"{prefix}{kind}", TRAIN_STAGES[kind], train, after=after, seed=config.seed)
            )
            last = f"{prefix}{kind}"
    return planned + _evaluations(config, run)


def _data_config(config, kind: str, prompts: Path, writer_stage: Path | None) -> Callable[[], BaseModel]:
    def make() -> BaseModel:
        writer = stage_model(writer_stage) if writer_stage else config.model
        return shared(config, getattr(config, f"{kind}_data"), prompts=prompts, model=writer)

    return make


def _train_config(config, kind: str, run: RunDir, data_name: str, last: str | None, control: bool):
    data = DATA_STAGES[kind].output(run.stage_dir(data_name))
    stack_on = run.stage_dir(last) if last else None
    mixed = _mixed_documents(config, kind, run.stage_dir("docs"), control=control)
    return lambda: shared(config, getattr(config, kind), data=data, stack_on=stack_on, **mixed)


def _evaluations(config: RMSycophancyConfig, run: RunDir) -> list[PlannedStage]:
    """Each wanted evaluation on each checkpoint, as stage `eval-<kind>-<checkpoint>`."""
    evals = config.evals
    eval_prompts = PROMPTS.output(run.stage_dir("prompts"), EVAL_PROMPTS)
    pairs_file = PROPENSITY_PAIRS.output(run.stage_dir("propensity_pairs"), PAIRS)
    data_files = {"exploitation": {"prompts": eval_prompts}, "propensity": {"pairs": pairs_file}}
    data_stages = {"exploitation": ("prompts",), "propensity": ("propensity_pairs",)}
    planned = []
    if "propensity" in evals.kinds:
        pairs = lambda: shared(config, evals.propensity_pairs, prompts=eval_prompts)  # noqa: E731
        planned.append(
            PlannedStage("propensity_pairs", PROPENSITY_PAIRS, pairs, after=("prompts",), seed=config.seed)
        )
    trained = checkpoint_stages(config)
    for checkpoint in [c for c in evals.checkpoints if c in trained]:
        made_by = trained[checkpoint]
        for kind in evals.kinds:
            if kind == "knowledge" and checkpoint not in evals.knowledge_checkpoints:
                continue
            after = data_stages.get(kind, ()) + ((made_by,) if made_by else ())
            make = _eval_config(
                config, kind, run.stage_dir(made_by) if made_by else None, data_files.get(kind, {})
            )
            planned.append(
                PlannedStage(
                    f"eval-{kind}-{checkpoint}", EVAL_STAGES[kind], make, after=after, seed=config.seed
                )
            )
    return planned


def _eval_config(config, kind: str, made_by: Path | None, files: dict) -> Callable[[], BaseModel]:
    def make() -> BaseModel:
        spec: ModelSpec = stage_model(made_by) if made_by else config.model
        # Merged: the same model, and scoring runs at the base model's speed.
        spec = spec.model_copy(update={"merge_adapters": True})
        return shared(config, getattr(config.evals, kind), model=spec, **files)

    return make
