"""Stacked LoRA adapters: the model a stage starts from, the adapter it adds, the merge.

As in the open replication of Marks et al. 2025, each stage trains a new adapter over the
frozen earlier ones and the final model is the base plus the sum of the adapters' updates.
A stage starts from base + earlier adapters merged in memory (the same function, and what
makes the new adapter's "off" state the right DPO reference); it saves only its new adapter,
and writes `model.json`: the full stack (base name, adapter directories in order) as a
`ModelSpec`, which `load_model`, later stages (`stack_on`) and `molab train merge` read.
"""

from __future__ import annotations

from pathlib import Path

from molab.errors import MolabError
from molab.files import atomic_path, check_writable_dir, write_json
from molab.models.checkpoints import ADAPTER_DIR, FULL_MODEL_DIR, MODEL_FILE, stage_model
from molab.models.loading import (
    ModelSpec,
    attach_adapters,
    load_tokenizer,
    load_weights,
    pick_device,
    resolve_model_dir,
)


def _portable_name(name: str) -> str:
    """A model name that still resolves from another working directory."""
    return str(Path(name).expanduser().resolve()) if Path(name).expanduser().exists() else name


def start_spec(model: ModelSpec, stack_on: Path | None) -> ModelSpec:
    """The base and frozen adapters a stage starts from: `model`, or the model `stack_on` made,
    which must have been trained on the same base."""
    if stack_on is None:
        adapters = [str(Path(a).expanduser().resolve()) for a in model.adapters]
        return model.model_copy(update={"name": _portable_name(model.name), "adapters": adapters})
    earlier = stage_model(stack_on)
    if not earlier.adapters:
        raise MolabError(
            f"{stack_on} is a full fine-tune, not an adapter stack: "
            f"train on it with model.name: {earlier.name}"
        )
    theirs, ours = resolve_model_dir(earlier.name), resolve_model_dir(model.name)
    if theirs.resolve() != ours.resolve():
        raise MolabError(
            f"{stack_on}: that stage was trained on {earlier.name}, not on model.name {model.name}: "
            "stack only on stages of the same base model"
        )
    return model.model_copy(update={"name": earlier.name, "adapters": earlier.adapters})


def training_dtype(spec: ModelSpec, method: str):
    """Weights' dtype: the spec's, else float32 on CPU and for full fine-tuning (bf16 autocast
    on top), bfloat16 for a LoRA base on GPU (frozen weights need no float32 master copy)."""
    import torch

    if spec.dtype is not None:
        return getattr(torch, spec.dtype)
    if pick_device(spec.device) == "cpu" or method == "full":
        return torch.float32
    return torch.bfloat16


def load_start_model(spec: ModelSpec, method: str):
    """(model, tokenizer, model_dir): the base with `spec.adapters` merged into its weights, on
    the CPU (the trainer places it); every weight trainable for `method` 'full'."""
    model_dir = resolve_model_dir(spec.name, spec.revision)
    tokenizer = load_tokenizer(model_dir, spec.trust_remote_code)
    model = load_weights(model_dir, training_dtype(spec, method), spec.trust_remote_code)
    model = stack_frozen(model, spec.adapters)
    if method == "full":
        model.requires_grad_(True)  # PEFT leaves merged weights frozen; a full fine-tune trains them
    return model, tokenizer, model_dir


def stack_frozen(model, adapters: list[str]):
    """`model` with `adapters` added into its weights; an adapter made for another model is a
    MolabError."""
    try:
        return attach_adapters(model, adapters, merge=True)
    except (RuntimeError, ValueError, KeyError) as e:
        detail = " ".join(str(e).split())[:300]
        raise MolabError(
            f"cannot stack adapters {', '.join(adapters)} on {model.name_or_path}: "
            f"made for another model? ({e.__class__.__name__}: {detail})"
        ) from None


def lora_config(settings):
    """PEFT's LoraConfig for a stage's `LoraSettings`."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def write_stage_model(out_dir: Path, final_dir: Path, start: ModelSpec, method: str) -> ModelSpec:
    """Write `model.json` into `out_dir` (the stage's temporary directory, renamed later to
    `final_dir`): the start model plus this stage's adapter, or its full weights."""
    if method == "lora":
        spec = ModelSpec(
            name=start.name,
            adapters=[*start.adapters, str(final_dir / ADAPTER_DIR)],
            trust_remote_code=start.trust_remote_code,
            revision=start.revision,
        )
    else:
        spec = ModelSpec(name=str(final_dir / FULL_MODEL_DIR), trust_remote_code=start.trust_remote_code)
    identity = {"name", "adapters", "trust_remote_code", "revision"}  # not where or how to load it
    write_json(out_dir / MODEL_FILE, spec.model_dump(mode="json", include=identity))
    return spec


MERGE_MARKER = "molab-merge.json"  # in a merged model directory: what was merged


def merge(spec: ModelSpec, out: Path, force: bool = False) -> Path:
    """Write base + summed adapters of `spec` as a standalone model directory (safetensors and
    tokenizer) at `out`, atomically. An existing non-empty `out` is replaced only with `force`,
    and only if an earlier merge wrote it (its `molab-merge.json`): never a folder of the user's."""
    from molab.models.loading import load_model

    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise MolabError(f"--out {out} is a file: give a directory for the merged model")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MERGE_MARKER).is_file():
            raise MolabError(f"{out} exists and was not written by `molab train merge`: choose another --out")
        if not force:
            raise MolabError(
                f"{out} holds an earlier merge: pass --force to replace it, or choose another --out"
            )
    check_writable_dir(out.parent, f"--out {out}")
    if not spec.adapters:
        raise MolabError(f"{spec.name}: nothing to merge (no adapters): it is already a standalone model")
    base = load_model(spec.model_copy(update={"adapters": [], "merge_adapters": False}))
    model = stack_frozen(base.model, spec.adapters)
    with atomic_path(out, replace_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        base.tokenizer.save_pretrained(tmp)
        write_json(tmp / MERGE_MARKER, spec.model_dump(mode="json", include={"name", "adapters", "dtype"}))
    return out
