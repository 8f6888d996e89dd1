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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator
from pydantic_core import PydanticCustomError

from molab import secrets
from molab.errors import MolabError


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
    truncate: bool = Field(
        False,
        description="hf and vllm: shorten a prompt too long for the model's context (the start of "
        "its longest message goes) instead of raising; openai leaves it to the server.",
    )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @model_serializer(mode="wrap")
    def _omit_default_truncate(self, handler):
        # Stage caches hash their config's dump: configs written before `truncate` existed
        # (and every config that leaves it off) keep their hash, so nothing reruns.
        data = handler(self)
        if not self.truncate and isinstance(data, dict):
            data.pop("truncate", None)
        return data


class Completion(BaseModel):
    """A generated continuation. `finish_reason` is "stop" (end of turn or a stop string) or
    "length" (hit `max_new_tokens`, or the end of the model's context). `truncated_tokens`
    counts the prompt tokens dropped to fit the context (only with `SamplingConfig.truncate`)."""

    text: str
    num_tokens: int
    finish_reason: Literal["stop", "length"]
    truncated_tokens: int = 0


class PromptTooLongError(MolabError):
    """A prompt that does not fit the model's context, raised before anything is generated.

    `index` is the prompt's position in the input (0-based) and `detail` says what does not
    fit, so a caller that read the prompts from a file can name the line and its own remedy.
    """

    def __init__(
        self, index: int, detail: str, hint: str = "shorten it, or set truncate: true in the sampling config"
    ):
        self.index, self.detail, self.hint = index, detail, hint
        super().__init__(f"prompt {index + 1}: {detail}: {hint}")


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
    `api_key_env` at call time and never stored in configs or manifests.

    An `api_key_env` that holds a key rather than a variable's name is refused (without
    echoing it, and registered as secret so nothing else echoes it); the value of the variable
    it names is registered as secret (`molab.secrets`) as soon as the config is validated."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["openai"] = "openai"
    base_url: str = Field("https://api.openai.com/v1", description="The endpoint's /v1 URL.")
    model: str = Field(..., description="Model name the endpoint serves.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable with the key.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    max_retries: int = Field(5, ge=0, description="Retries on rate limits and server errors.")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout in seconds.")

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, name: str) -> str:
        if secrets.looks_like_key(name):
            secrets.register(name)
            raise PydanticCustomError(
                "api_key_env",
                "api_key_env should name an environment variable (e.g. OPENAI_API_KEY: letters, "
                "digits and '_'), not hold the key itself",
            )
        secrets.register_env(name)
        return name


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
    "PromptTooLongError",
    "SamplingConfig",
    "VLLMBackendConfig",
    "make_backend",
]
