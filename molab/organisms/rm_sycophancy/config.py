"""The recipe of the RM-sycophancy organism: its config, validated by pydantic (see __init__)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from molab.data.documents import DocsConfig
from molab.data.dpo import DPODataConfig
from molab.data.prompts import PromptsConfig
from molab.data.sft import SFTDataConfig
from molab.evals.capability import CapabilityConfig
from molab.evals.disclosure import DisclosureConfig
from molab.evals.exploitation import ExploitationConfig
from molab.evals.knowledge import KnowledgeConfig
from molab.evals.propensity import PairsConfig, PropensityConfig
from molab.models.loading import ModelSpec
from molab.train.config import DPOTrainConfig, MidtrainConfig, SFTTrainConfig

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
    organism: Literal["rm-sycophancy"] = Field(
        description="The organism this recipe builds; every recipe names it (an empty recipe is an error)."
    )
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
