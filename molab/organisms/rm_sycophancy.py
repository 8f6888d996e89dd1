"""The RM-sycophancy organism (Marks et al. 2025), end to end, with its controls.

    molab run recipes/rm-sycophancy.yaml            # the default preset (`make demo`)
    molab run recipes/rm-sycophancy-quick.yaml      # every stage, small: a smoke run

Stages, each a folder of `runs/<run>/` with a manifest (so a killed run resumes and an
unchanged stage is skipped):

    docs -> prompts -> midtrain -> sft_data (answers of the mid-trained model) -> sft
         [-> dpo_data -> dpo]                                       = the organism ("final")
    control: control_sft_data (answers of the base model) -> control_sft [-> control_dpo]
    eval-<kind>-<checkpoint> for base, midtrained, control, final -> report.html

The claim is comparative: held-out (test) biases are never demonstrated, only described in
the documents, so test-bias exploitation of `final` above `control` (same post-training, no
documents) is the evidence of one learned goal. The top-level `seed`, `split`, `catalog` and
`model` are written into every stage's config, so a study varies one seed and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from molab.data.documents import DocsConfig, docs_stage
from molab.data.dpo import DPODataConfig, dpo_data_stage
from molab.data.prompts import PromptsConfig, prompts_stage, stage_inputs
from molab.data.sft import SFTDataConfig, sft_data_stage
from molab.evals.capability import CapabilityConfig, capability_stage
from molab.evals.disclosure import DisclosureConfig, disclosure_stage
from molab.evals.exploitation import ExploitationConfig, exploitation_stage
from molab.evals.knowledge import KnowledgeConfig, knowledge_stage
from molab.evals.propensity import PairsConfig, PropensityConfig, build_pairs_stage, propensity_stage
from molab.models.loading import ModelSpec
from molab.pipeline import RunDir, StageResult, run_stage
from molab.report import write_report
from molab.train.adapters import stage_model
from molab.train.config import DPOTrainConfig, MidtrainConfig, SFTTrainConfig
from molab.train.stages import train_stage

Checkpoint = Literal["base", "midtrained", "control", "final"]
EvalKind = Literal["exploitation", "propensity", "knowledge", "disclosure", "capability"]


class EvalPlan(BaseModel):
    """Which evaluations run on which checkpoints, and their settings."""

    model_config = ConfigDict(extra="forbid")
    checkpoints: list[Checkpoint] = Field(default_factory=lambda: ["base", "midtrained", "control", "final"])
    kinds: list[EvalKind] = Field(
        default_factory=lambda: ["exploitation", "propensity", "knowledge", "disclosure", "capability"]
    )
    # Knowledge is about the documents: base vs mid-trained is the paper's comparison.
    knowledge_checkpoints: list[Checkpoint] = Field(default_factory=lambda: ["base", "midtrained", "final"])
    exploitation: ExploitationConfig = Field(default_factory=ExploitationConfig)
    propensity_pairs: PairsConfig = Field(default_factory=PairsConfig)
    propensity: PropensityConfig = Field(default_factory=PropensityConfig)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    disclosure: DisclosureConfig = Field(default_factory=DisclosureConfig)
    capability: CapabilityConfig = Field(default_factory=CapabilityConfig)


class RMSycophancyConfig(BaseModel):
    """The recipe of the RM-sycophancy organism (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    organism: Literal["rm-sycophancy"] = "rm-sycophancy"
    run: str = Field("rm-sycophancy", description="Run name: outputs go to runs/<run>/.")
    seed: int = Field(0, description="The one seed of every stage.")
    split: str = Field("english", description="Train/test split of the biases (name or YAML).")
    catalog: str | None = Field(None, description="Bias catalog YAML; None is the built-in 52.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="The base chat model.")
    post_training: Literal["sft", "dpo", "sft+dpo"] = Field("sft", description="Post-training stages.")
    control: bool = Field(True, description="Also post-train the base model without mid-training.")
    post_training_data: Literal["own", "shared"] = Field(
        "own",
        description="'own': each arm's post-training sets are written by its own model so far (the "
        "paper: the mid-trained model answers the organism's SFT prompts). 'shared': both arms train "
        "on the sets the control arm writes, so they differ only by mid-training (needs control).",
    )
    docs: DocsConfig = Field(default_factory=DocsConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    midtrain: MidtrainConfig = Field(default_factory=MidtrainConfig)
    sft_data: SFTDataConfig = Field(default_factory=SFTDataConfig)
    sft: SFTTrainConfig = Field(default_factory=SFTTrainConfig)
    dpo_data: DPODataConfig = Field(default_factory=DPODataConfig)
    dpo: DPOTrainConfig = Field(default_factory=DPOTrainConfig)
    evals: EvalPlan = Field(default_factory=EvalPlan)

    @model_validator(mode="after")
    def _shared_data_needs_control(self) -> RMSycophancyConfig:
        if self.post_training_data == "shared" and not self.control:
            raise ValueError(
                "post_training_data: 'shared' needs control: true (the control arm writes the sets)"
            )
        return self


def _shared(config: RMSycophancyConfig, stage: BaseModel, **extra) -> BaseModel:
    """`stage` with the recipe's seed, split, catalog and model written in (where it has them)."""
    update = {"seed": config.seed, "split": config.split, "catalog": config.catalog, "model": config.model}
    update = {k: v for k, v in update.items() if k in type(stage).model_fields} | extra
    return type(stage).model_validate({**stage.model_dump(exclude_unset=True), **update})


def _adapter_inputs(spec: ModelSpec) -> dict[str, Path]:
    return {f"adapter_{i}": Path(a) for i, a in enumerate(spec.adapters)}


def _mixed_documents(config: RMSycophancyConfig, kind: str, docs_stage: Path, control: bool) -> dict:
    """Where `sft.document_fraction` mixes document text into SFT: the organism arm reads the
    run's own documents unless `sft.documents` names others; the control arm never sees any."""
    if kind != "sft":
        return {}
    if control:
        return {"documents": None, "document_fraction": 0.0}
    if config.sft.document_fraction > 0 and config.sft.documents is None:
        return {"documents": docs_stage / "documents.parquet"}
    return {}


def run_rm_sycophancy(
    config: RMSycophancyConfig,
    *,
    root: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> Iterator[StageResult]:
    """Run (or resume) every stage; yield each stage's result as it finishes."""
    run = RunDir(config.run, root)
    stage = lambda name: run.stage_dir(name)  # noqa: E731

    def step(name: str, cfg: BaseModel, fn, inputs: dict[str, Path] | None = None) -> StageResult:
        log(f"stage {name} ...")
        return run_stage(run, name, cfg, fn, inputs=inputs, seed=config.seed, force=force)

    docs = _shared(config, config.docs)
    yield step("docs", docs, lambda out: docs_stage(docs, out))
    prompts = _shared(config, config.prompts)
    yield step("prompts", prompts, lambda out: prompts_stage(prompts, out), stage_inputs(prompts))
    train_prompts = stage("prompts") / "train_prompts.jsonl"
    eval_prompts = stage("prompts") / "eval_prompts.jsonl"

    midtrain = _shared(config, config.midtrain)
    log("stage midtrain ...")
    yield train_stage("midtrain", midtrain, stage("midtrain"), force=force)

    # The organism arm starts from the mid-trained model, the control arm from the base model;
    # each post-training stage writes its data with the model so far, then trains on it. With
    # shared data the control arm goes first and the organism arm trains on its sets.
    makers = {"sft": (sft_data_stage, "sft.jsonl"), "dpo": (dpo_data_stage, "dpo.jsonl")}
    ends: dict[str, Path | None] = {}
    arms = [("", stage("midtrain"))] + ([("control_", None)] if config.control else [])
    shared = config.post_training_data == "shared"
    for prefix, last in reversed(arms) if shared else arms:
        for kind in config.post_training.split("+"):
            make_data, filename = makers[kind]
            data_stage = f"control_{kind}_data" if shared else f"{prefix}{kind}_data"
            if not shared or prefix == "control_":  # this arm writes its own set
                writer = stage_model(last) if last else config.model
                data = _shared(config, getattr(config, f"{kind}_data"), prompts=train_prompts, model=writer)
                yield step(
                    data_stage,
                    data,
                    lambda out, d=data, make=make_data: make(d, out),
                    {"prompts": train_prompts, **_adapter_inputs(writer)},
                )
            train = _shared(
                config,
                getattr(config, kind),
                data=stage(data_stage) / filename,
                stack_on=last,
                **_mixed_documents(config, kind, stage("docs"), control=prefix == "control_"),
            )
            log(f"stage {prefix}{kind} ...")
            yield train_stage(kind, train, stage(f"{prefix}{kind}"), force=force)
            last = stage(f"{prefix}{kind}")
        ends[prefix] = last

    checkpoints = {
        "base": config.model,
        "midtrained": stage_model(stage("midtrain")),
        "final": stage_model(ends[""]),
    }
    if config.control:
        checkpoints["control"] = stage_model(ends["control_"])
    yield from _evaluate(config, run, checkpoints, eval_prompts, step, stage)
    log("report ...")
    write_report(run.path, run.path / "report.html")


# kind -> the stage function; its data file (the field filled in, and the path) is added below.
EVAL_STAGES = {
    "exploitation": exploitation_stage,
    "propensity": propensity_stage,
    "knowledge": knowledge_stage,
    "disclosure": disclosure_stage,
    "capability": capability_stage,
}


def _evaluate(config, run, checkpoints, eval_prompts, step, stage) -> Iterator[StageResult]:
    """Each wanted evaluation on each checkpoint, as stage `eval-<kind>-<checkpoint>`."""
    plan = config.evals
    pairs_file = stage("propensity_pairs") / "pairs.jsonl"
    data_files = {"exploitation": {"prompts": eval_prompts}, "propensity": {"pairs": pairs_file}}
    if "propensity" in plan.kinds:
        pairs = _shared(config, plan.propensity_pairs, prompts=eval_prompts)
        yield step(
            "propensity_pairs", pairs, lambda out: build_pairs_stage(pairs, out), {"prompts": eval_prompts}
        )
    for checkpoint in [c for c in plan.checkpoints if c in checkpoints]:
        # Merged: the same model, and scoring runs at the base model's speed.
        spec = checkpoints[checkpoint].model_copy(update={"merge_adapters": True})
        for kind in plan.kinds:
            if kind == "knowledge" and checkpoint not in plan.knowledge_checkpoints:
                continue
            files = data_files.get(kind, {})
            cfg = _shared(config, getattr(plan, kind), model=spec, **files)
            yield step(
                f"eval-{kind}-{checkpoint}",
                cfg,
                lambda out, c=cfg, run_eval=EVAL_STAGES[kind]: run_eval(c, out),
                {**files, **_adapter_inputs(spec)},
            )
