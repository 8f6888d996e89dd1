"""Generation with vLLM on a CUDA GPU (the optional `vllm` extra).

The model spec's base model is served by vLLM's offline engine (`vllm.LLM`). One LoRA adapter
is applied per request with a `LoRARequest`. vLLM applies only one LoRA per request, so a
stack of several adapters must be merged first (`merge_adapters: true`): they are merged on
CPU with transformers and PEFT, saved once under the cache (`<cache>/merged/<hash>`), and
the merged model is served.

Prompts are rendered and tokenized here with the model's own tokenizer (`prompts.py`, shared
with the hf backend), so both backends see the same tokens. Each prompt i is sampled with seed
`sampling.seed + i`, so its completion does not depend on the rest of the batch.

Prompts are checked against vLLM's `max_model_len` before any request is made, with the same
contract as the hf backend (`prompts.fit_to_context`): a prompt that leaves no room for an
answer is an error naming it, or is truncated when the sampling config asks, and each
request's `max_tokens` is capped so that prompt plus answer fit.

vLLM runs its own forward, where the Python hooks of `molab.models.hooks` never run: while an
`intervene` context is open on any model in this process, `generate` refuses rather than
return unsteered text (vLLM serves its own copy of the weights, so which in-memory model an
edit was meant for cannot be told).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from molab.errors import MolabError
from molab.models import hooks
from molab.models.generation import (
    Completion,
    GenerationBackend,
    Prompt,
    SamplingConfig,
    VLLMBackendConfig,
)
from molab.models.generation.prompts import fit_to_context, prompt_token_ids, stop_token_ids
from molab.models.loading import ModelSpec, load_tokenizer, resolve_model_dir

INSTALL_HINT = "the vllm backend needs vLLM: pip install 'molab[vllm]' on a CUDA machine"


class VLLMBackend(GenerationBackend):
    """A `ModelSpec` served by vLLM; LoRA adapters per request, or merged."""

    def __init__(self, spec: ModelSpec, config: VLLMBackendConfig):
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError as e:
            raise MolabError(INSTALL_HINT) from e
        spec = spec or ModelSpec()
        self.spec, self.config = spec, config
        self._SamplingParams = vllm.SamplingParams

        base_dir = resolve_model_dir(spec.name, spec.revision)
        self.tokenizer = load_tokenizer(base_dir, spec.trust_remote_code)
        self.stop_ids = stop_token_ids(self.tokenizer, base_dir)

        model_dir, self.lora_request = base_dir, None
        if len(spec.adapters) > 1 and not spec.merge_adapters:
            raise MolabError(
                f"the model spec stacks {len(spec.adapters)} LoRA adapters, but vLLM applies one LoRA "
                "per request: set merge_adapters: true to merge them into the weights first"
            )
        if spec.adapters and spec.merge_adapters:
            model_dir = merged_model_dir(spec)
        elif spec.adapters:
            adapter = Path(spec.adapters[0])
            if not (adapter / "adapter_config.json").is_file():
                raise MolabError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
            self.lora_request = LoRARequest("adapter_0", 1, str(adapter.resolve()))

        kwargs = dict(
            model=str(model_dir),
            tokenizer=str(base_dir),
            dtype=spec.dtype or "auto",
            trust_remote_code=spec.trust_remote_code,
            gpu_memory_utilization=config.gpu_memory_utilization,
            max_model_len=config.max_model_len,
        )
        if self.lora_request is not None:
            kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=config.max_lora_rank)
        try:
            self.llm = vllm.LLM(**kwargs)
        except (OSError, ValueError, RuntimeError) as e:
            raise MolabError(f"vLLM cannot load {model_dir}: {e.__class__.__name__}: {e}") from e
        self.context = _max_model_len(self.llm) or config.max_model_len

    def generate(
        self, prompts: Sequence[Prompt], sampling: SamplingConfig, *, progress: bool = True
    ) -> list[Completion]:
        if not prompts:
            raise MolabError("no prompts to generate from (the prompt list is empty)")
        edited = hooks.edited_models()
        if edited:
            raise MolabError(
                f"the vllm backend cannot apply activation edits (intervene is open on {', '.join(edited)}): "
                "vLLM runs its own forward, where Python hooks never run; generate with the hf backend"
            )
        ids = [prompt_token_ids(self.tokenizer, p) for p in prompts]
        fitted = fit_to_context(self.tokenizer, prompts, ids, sampling, self.context, self.spec.name)
        inputs = [{"prompt_token_ids": p} for p in fitted.ids]
        params = [self._sampling_params(sampling, i, fitted.budgets[i]) for i in range(len(prompts))]
        outputs = self.llm.generate(inputs, params, use_tqdm=progress, lora_request=self.lora_request)
        completions = []
        for out, cut in zip(outputs, fitted.truncated):
            best = out.outputs[0]
            completions.append(
                Completion(
                    text=best.text,
                    num_tokens=len(best.token_ids),
                    finish_reason="length" if best.finish_reason == "length" else "stop",
                    truncated_tokens=cut,
                )
            )
        return completions

    def _sampling_params(self, sampling: SamplingConfig, i: int, max_tokens: int | None = None):
        return self._SamplingParams(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            # vLLM: -1 disables top-k in every version (newer ones also take 0).
            top_k=sampling.top_k or -1,
            max_tokens=max_tokens or sampling.max_new_tokens,
            stop=list(sampling.stop) or None,
            stop_token_ids=self.stop_ids,
            seed=sampling.seed + i,
        )


def _max_model_len(llm) -> int | None:
    """The context vLLM settled on (the model's, or `max_model_len`); None if not exposed."""
    try:
        return int(llm.llm_engine.model_config.max_model_len)
    except (AttributeError, TypeError, ValueError):
        return None


def merged_model_dir(spec: ModelSpec) -> Path:
    """The spec's base with its adapters merged in, saved once under the cache and reused.

    The cache key hashes the spec and each adapter's weights, so retraining an adapter in place
    makes a new merge rather than serving a stale one.
    """
    from molab.files import atomic_path, sha256_file
    from molab.models.default_model import cache_root
    from molab.models.loading import load_model

    key = spec.model_dump(mode="json", exclude={"device"})
    key["adapter_sha256"] = []
    for adapter in spec.adapters:
        weights = Path(adapter) / "adapter_model.safetensors"
        key["adapter_sha256"].append(sha256_file(weights) if weights.is_file() else None)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    out = cache_root() / "merged" / digest
    if (out / "config.json").is_file():
        return out
    merged = load_model(spec.model_copy(update={"device": "cpu", "merge_adapters": True}))
    with atomic_path(out) as tmp:
        merged.model.save_pretrained(tmp, safe_serialization=True)
        merged.tokenizer.save_pretrained(tmp)
        (tmp / "molab-merged.json").write_text(json.dumps(key, indent=2))
    return out
