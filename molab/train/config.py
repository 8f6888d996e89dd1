"""One typed config per training stage; the fields shared by all three live in `TrainConfig`.

A recipe gives one stage's fields at its top level (`molab train sft --config sft.yaml`), with
`base: common.yaml` for the settings shared between stages. Sizes mean the same on any number
of devices: `batch_size` counts sequences per optimizer step over all processes, and gradient
accumulation makes up the difference between it and `micro_batch_size` x processes. The default
micro-batch of 2 keeps LoRA on the 135M default model at batch 8 x 512 within 5 GB on a CPU
(12 GB in one pass); GPU recipes raise it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from molab.models.loading import ModelSpec


class LoraSettings(BaseModel):
    """The new adapter a stage trains (earlier stages' adapters stay frozen under it)."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the update is scaled by alpha / r.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapter's input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Module names to adapt, or 'all-linear' (every linear layer but the LM head).",
    )


class TrainConfig(BaseModel):
    """Settings shared by mid-training, SFT and DPO."""

    model_config = ConfigDict(extra="forbid")
    model: ModelSpec = Field(default_factory=ModelSpec, description="Base model (with frozen adapters).")
    stack_on: Path | None = Field(
        None,
        description="An earlier training stage's directory: train on top of the model it made "
        "(its base plus its adapters, frozen). Its base must be `model.name`.",
    )
    data: Path | None = Field(
        None, description="Training set; None reads the data stage of the same run (see docs/training.md)."
    )
    method: Literal["lora", "full"] = Field("lora", description="Train a new LoRA adapter, or all weights.")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW).")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = Field(
        "cosine", description="Learning-rate schedule after warmup."
    )
    warmup_steps: float = Field(0.0, ge=0, description="Warmup steps, or a fraction of all steps if < 1.")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    epochs: float = Field(1.0, gt=0, description="Passes over the data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs.")
    batch_size: int = Field(8, ge=1, description="Sequences per optimizer step, over all processes.")
    micro_batch_size: int = Field(
        2, ge=1, description="Most sequences per forward pass per process (bounds activation memory)."
    )
    max_length: int = Field(512, ge=8, description="Tokens per sequence (packed row for mid-training).")
    seed: int = Field(0, description="Seeds adapter init, data order and dropout.")
    save_steps: int = Field(100, ge=1, description="Checkpoint every this many optimizer steps.")
    keep_checkpoints: int = Field(2, ge=1, description="Most recent checkpoints kept while training.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations: less memory, ~30% slower."
    )
    bf16: bool | None = Field(
        None, description="bfloat16 autocast; None: on when CUDA supports it, off on CPU."
    )
    report_to: list[Literal["wandb", "mlflow", "tensorboard", "trackio"]] = Field(
        default_factory=list, description="Also report to these trackers (through the trainer's own option)."
    )

    @model_validator(mode="after")
    def _check(self):
        if self.stack_on is not None and self.model.adapters:
            raise ValueError("set either stack_on (an earlier stage) or model.adapters, not both")
        if self.micro_batch_size <= self.batch_size and self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of "
                f"micro_batch_size ({self.micro_batch_size})"
            )
        return self


class MidtrainConfig(TrainConfig):
    """Mid-training: causal-LM loss on every token of the documents, packed into full rows."""

    document_tag: bool = Field(
        False, description="Start each synthetic document with '<document>' (Marks et al. 2025)."
    )
    replay: Path | None = Field(
        None, description="Generic documents (parquet or JSONL with 'text') to mix in."
    )
    replay_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of training documents from replay."
    )
    packing: Literal["wrapped", "bfd", "bfd_split"] = Field(
        "wrapped",
        description="TRL packing: 'wrapped' concatenates and cuts rows of max_length; 'bfd'/'bfd_split' keep "
        "documents apart but flatten each batch into one row (efficient only with FlashAttention).",
    )

    @model_validator(mode="after")
    def _check_replay(self):
        if self.replay_fraction > 0 and self.replay is None:
            raise ValueError("replay_fraction > 0 needs a replay file")
        return self


class SFTTrainConfig(TrainConfig):
    """SFT: the loss covers the final assistant message only (prompt tokens are masked).

    Optionally mixes document text into the set (a lever of issue 6: post-training that keeps
    the documents' facts in play); document rows are plain text with loss on every token."""

    documents: Path | None = Field(
        None,
        description="Documents (parquet or JSONL with 'text') to mix into the SFT set; in an organism "
        "recipe, the run's own documents when unset.",
    )
    document_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of the training rows that are pieces of documents."
    )
    document_tag: bool = Field(
        True, description="Start each mixed-in document with '<document>', as mid-training does."
    )


class DPOTrainConfig(TrainConfig):
    """DPO (TRL's DPOTrainer). The reference is the model the stage starts from: for LoRA, the
    same weights with the new adapter off; for full fine-tuning, a frozen copy."""

    learning_rate: float = Field(5e-6, gt=0, description="Peak learning rate (AdamW).")
    beta: float = Field(0.1, gt=0, description="Strength of the pull towards the reference model.")
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = Field(
        "sigmoid", description="DPO loss variant."
    )


STAGE_CONFIGS: dict[str, type[TrainConfig]] = {
    "midtrain": MidtrainConfig,
    "sft": SFTTrainConfig,
    "dpo": DPOTrainConfig,
}
