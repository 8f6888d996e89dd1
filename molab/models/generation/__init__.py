"""One interface for every way molab generates text.

A backend takes a list of `Prompt`s (a chat conversation, a raw text prompt, or a
conversation plus an assistant prefill) and a `SamplingConfig`, and returns one `Completion`
per prompt, in input order. Under a fixed seed the output is reproducible: the local
backends draw each prompt's random numbers from a generator seeded by (seed, prompt index),
so a completion does not depend on which other prompts shared its batch.

Backends, chosen by name in configs (`BackendConfig.kind`):
- `hf`: batched generation with transformers on CPU or GPU (`hf_backend.py`), the default.
- `vllm`: vLLM on GPU, with LoRA adapters (`vllm_backend.py`), an optional extra.
- `openai`: any OpenAI-compatible HTTP endpoint (`openai_backend.py`), for judges and
  document generators.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Message(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class Prompt(BaseModel):
    """What to continue: `messages` (rendered with the model's chat template) or raw `text`.

    `prefill` starts the assistant's answer: generation continues from it, and the returned
    completion does not repeat it.
    """

    model_config = ConfigDict(extra="forbid")
    messages: list[Message] | None = None
    text: str | None = None
    prefill: str = ""

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Prompt:
        if (self.messages is None) == (self.text is None):
            raise ValueError("give exactly one of 'messages' (a chat) or 'text' (a raw prompt)")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' is empty")
        return self

    @classmethod
    def chat(cls, user: str, system: str | None = None, prefill: str = "") -> Prompt:
        """A single-turn chat prompt."""
        msgs = ([Message(role="system", content=system)] if system else []) + [
            Message(role="user", content=user)
        ]
        return cls(messages=msgs, prefill=prefill)


class SamplingConfig(BaseModel):
    """How to sample. `temperature: 0` means greedy decoding."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(256, ge=1, description="Most tokens generated per prompt.")
    temperature: float = Field(1.0, ge=0.0, description="Softmax temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, description="Keep only the k most likely tokens; 0 keeps all.")
    seed: int = Field(0, description="Seed; equal seeds give equal outputs.")
    stop: list[str] = Field(default_factory=list, description="Extra stop strings.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Completion(BaseModel):
    """A generated continuation. `finish_reason` is "stop" (end of turn or a stop string) or
    "length" (hit `max_new_tokens`)."""

    text: str
    num_tokens: int
    finish_reason: Literal["stop", "length"]


class HFBackendConfig(BaseModel):
    """Batched transformers generation (CPU or GPU)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["hf"] = "hf"
    batch_size: int = Field(64, ge=1, description="Most sequences decoded at once.")


class VLLMBackendConfig(BaseModel):
    """vLLM generation on GPU (install the `vllm` extra)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["vllm"] = "vllm"
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    max_model_len: int | None = Field(None, description="Context length; None uses the model's.")
    max_lora_rank: int = Field(256, ge=1, description="Largest LoRA rank among the adapters.")


class OpenAIBackendConfig(BaseModel):
    """Any OpenAI-compatible endpoint. The key is read from the environment variable named by
    `api_key_env` at call time and never stored in configs or manifests."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["openai"] = "openai"
    base_url: str = Field("https://api.openai.com/v1", description="The endpoint's /v1 URL.")
    model: str = Field(..., description="Model name the endpoint serves.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable with the key.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    max_retries: int = Field(5, ge=0, description="Retries on rate limits and server errors.")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout in seconds.")


BackendConfig = Annotated[
    HFBackendConfig | VLLMBackendConfig | OpenAIBackendConfig, Field(discriminator="kind")
]


class GenerationBackend(ABC):
    """Turns prompts into completions, in input order."""

    @abstractmethod
    def generate(
        self, prompts: Sequence[Prompt], sampling: SamplingConfig, *, progress: bool = True
    ) -> list[Completion]:
        """Generate one completion per prompt; raise MolabError on an empty prompt list."""


def make_backend(config: HFBackendConfig | VLLMBackendConfig | OpenAIBackendConfig, model=None):
    """Build the backend `config` names. `model` is a `ModelSpec` for `hf` and `vllm`
    (ignored by `openai`, which names its model in its config)."""
    if config.kind == "hf":
        from molab.models.generation.hf_backend import HFBackend

        return HFBackend.from_spec(model, config)
    if config.kind == "vllm":
        from molab.models.generation.vllm_backend import VLLMBackend

        return VLLMBackend(model, config)
    from molab.models.generation.openai_backend import OpenAIBackend

    return OpenAIBackend(config)


__all__ = [
    "BackendConfig",
    "Completion",
    "GenerationBackend",
    "HFBackendConfig",
    "Message",
    "OpenAIBackendConfig",
    "Prompt",
    "SamplingConfig",
    "VLLMBackendConfig",
    "make_backend",
]
