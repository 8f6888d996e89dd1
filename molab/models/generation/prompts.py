"""Turning a `Prompt` into model input, shared by the local backends (hf and vllm).

A chat prompt is rendered with the tokenizer's chat template, ending with the header that
opens the assistant's turn; a raw text prompt is used as it is. The prefill is appended in
both cases, so generation continues the assistant's answer from it.

Context: every prompt is checked against the model's context before anything is generated
(`fit_to_context`). The contract, for a context of C positions and a prompt of P tokens:

- P >= C (no room for a single new token) is a `PromptTooLongError` naming the prompt, its
  token count and C, unless the caller asked for truncation (`SamplingConfig.truncate`);
- otherwise the answer gets at most min(max_new_tokens, C - P) tokens, so prompt plus answer
  never exceed the context; an answer cut short by the context ends with finish_reason
  "length", like one that reached max_new_tokens. Capping rather than rejecting keeps a long
  evaluation running when one prompt is near the limit, and bounds memory by C per sequence;
- with truncation, a prompt longer than C - min(max_new_tokens, C // 2) tokens is shortened to
  that length (room for the whole answer, but never less than half the context for the
  prompt) by `truncate_prompt`, and the dropped count is reported per completion.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from molab.errors import MolabError
from molab.models.generation import Message, Prompt, PromptTooLongError, SamplingConfig

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


# Config fields that hold a model's trained context, by architecture family.
POSITION_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def model_context(config: Any, tokenizer: Any = None) -> int | None:
    """The positions the model was trained on: its config's `max_position_embeddings` (or an
    older name for it), else the tokenizer's `model_max_length` when that is a real limit
    (transformers writes about 1e30 when a tokenizer sets none); None when neither says."""
    configs = [config]
    if callable(getattr(config, "get_text_config", None)):
        configs.append(config.get_text_config())
    for cfg in configs:
        for name in POSITION_FIELDS:
            value = getattr(cfg, name, None)
            if isinstance(value, int) and value > 0:
                return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10_000_000 else None


class Fitted(NamedTuple):
    """Prompts checked against the context: token ids (shortened where asked), the tokens
    dropped from each, and the most new tokens each may get."""

    ids: list[list[int]]
    truncated: list[int]
    budgets: list[int]


def fit_to_context(
    tokenizer,
    prompts: Sequence[Prompt] | None,
    ids: list[list[int]],
    sampling: SamplingConfig,
    context: int | None,
    model_name: str,
) -> Fitted:
    """Apply the module's context contract to every prompt, before anything is generated.

    `prompts` are the prompts `ids` were rendered from; None when the caller has only token
    ids, and then truncation keeps the last tokens (there is no template to keep whole).
    Raises `PromptTooLongError` for the first prompt that does not fit (and counts the rest).
    """
    n = sampling.max_new_tokens
    if context is None:  # the model does not say: nothing to check against
        return Fitted(ids, [0] * len(ids), [n] * len(ids))
    what = f"{model_name}'s context is {context:,}"
    if not sampling.truncate:
        too_long = [i for i, p in enumerate(ids) if len(p) >= context]
        if too_long:
            first = too_long[0]
            more = f" ({len(too_long)} prompts are too long)" if len(too_long) > 1 else ""
            raise PromptTooLongError(first, f"the prompt is {len(ids[first]):,} tokens; {what}{more}")
        return Fitted(ids, [0] * len(ids), [min(n, context - len(p)) for p in ids])
    keep = context - max(1, min(n, context // 2))
    out, dropped = [], []
    for i, p in enumerate(ids):
        if len(p) > keep:
            if prompts is None:
                short = p[-keep:]
            else:
                try:
                    short = truncate_prompt(tokenizer, prompts[i], keep)
                except MolabError as e:
                    raise PromptTooLongError(i, f"{e}; {what}", "shorten its prefill") from None
            dropped.append(len(p) - len(short))
            p = short
        else:
            dropped.append(0)
        out.append(p)
    return Fitted(out, dropped, [min(n, context - len(p)) for p in out])


def truncate_prompt(tokenizer, prompt: Prompt, limit: int) -> list[int]:
    """Token ids of `prompt` shortened to at most `limit` tokens by dropping the start of its
    longest message's content (of the text, for a raw prompt); the next longest follows when
    emptying one is not enough.

    Why not drop the first tokens of the rendered prompt: that cuts the chat template's
    opening (the BOS, the system turn, the first role header), and the model would continue a
    conversation that starts mid-sentence with no frame. Cutting inside the content keeps the
    template, the other messages and the prefill whole, and keeps the end of the long message,
    which is usually where its question sits ("... Summarise the text above."). The cut falls
    on a token boundary of the content, found by re-tokenizing, so the result fits exactly.
    Raises MolabError when even empty messages do not fit (a long prefill or template).
    """
    ids = prompt_token_ids(tokenizer, prompt)
    while len(ids) > limit:
        fields = _contents(prompt)
        where = max(range(len(fields)), key=lambda k: len(fields[k]))
        if not fields[where]:
            raise MolabError(
                f"the prompt cannot be cut to {limit:,} tokens: with its messages emptied, the chat "
                f"template and prefill alone are {len(ids):,}"
            )
        cut = _drop_first_tokens(tokenizer, fields[where], len(ids) - limit)
        fields[where] = cut if len(cut) < len(fields[where]) else fields[where][1:]  # always progress
        prompt = _with_contents(prompt, fields)
        ids = prompt_token_ids(tokenizer, prompt)
    return ids


def _contents(prompt: Prompt) -> list[str]:
    return [m.content for m in prompt.messages] if prompt.messages is not None else [prompt.text or ""]


def _with_contents(prompt: Prompt, contents: list[str]) -> Prompt:
    if prompt.messages is None:
        return prompt.model_copy(update={"text": contents[0]})
    messages = [Message(role=m.role, content=c) for m, c in zip(prompt.messages, contents)]
    return prompt.model_copy(update={"messages": messages})


def _drop_first_tokens(tokenizer, text: str, n: int) -> str:
    """`text` without its first `n` tokens (at least one), cut at a token boundary."""
    n = max(1, n)
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True).offset_mapping
        return text[offsets[n][0] :] if n < len(offsets) else ""
    tokens = tokenizer(text, add_special_tokens=False).input_ids
    return tokenizer.decode(tokens[n:]) if n < len(tokens) else ""


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
