"""Turning a `Prompt` into model input, shared by the local backends (hf and vllm).

A chat prompt is rendered with the tokenizer's chat template, ending with the header that
opens the assistant's turn; a raw text prompt is used as it is. The prefill is appended in
both cases, so generation continues the assistant's answer from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from molab.errors import MolabError
from molab.models.generation import Prompt

# End-of-turn tokens of common chat formats (ChatML, Llama 3, Gemma): generation stops at them.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>")


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """The text the model continues: chat template (or raw text), then the prefill."""
    if prompt.messages is None:
        return (prompt.text or "") + prompt.prefill
    if not getattr(tokenizer, "chat_template", None):
        raise MolabError(
            f"the tokenizer of {getattr(tokenizer, 'name_or_path', 'this model')} has no chat "
            "template: give raw 'text' prompts, or use an instruct model"
        )
    rendered = tokenizer.apply_chat_template(
        [m.model_dump() for m in prompt.messages], add_generation_prompt=True, tokenize=False
    )
    return rendered + prompt.prefill


def prompt_token_ids(tokenizer, prompt: Prompt) -> list[int]:
    """`render_prompt` tokenized. A chat template already writes its special tokens (a BOS
    included), so only raw text prompts get the tokenizer's own special tokens added."""
    text = render_prompt(tokenizer, prompt)
    return list(tokenizer(text, add_special_tokens=prompt.messages is None).input_ids)


def stop_token_ids(tokenizer, model_dir_or_generation_config: Any = None) -> list[int]:
    """Token ids that end generation, sorted: the tokenizer's EOS, the `eos_token_id` of the
    generation config (a model directory, a generation_config.json path, a dict or a
    `GenerationConfig`; an int or a list), and the end-of-turn tokens in the vocabulary."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    ids.update(_generation_config_eos(model_dir_or_generation_config))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return sorted(ids)


def _generation_config_eos(source: Any) -> list[int]:
    if source is None:
        return []
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            path = path / "generation_config.json"
        if not path.is_file():
            return []
        try:
            source = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise MolabError(f"cannot read {path}: {e}") from e
    eos = source.get("eos_token_id") if isinstance(source, dict) else getattr(source, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]
