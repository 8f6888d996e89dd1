"""The log-likelihood a model gives a continuation after a context, without generating.

Evals that ask what a model *prefers* rather than what it *says* use this: the knowledge quiz
(which option is likeliest), the propensity probe (a biased answer against a plain one) and
perplexity. One forward pass per batch, deterministic, any Hugging Face causal LM (a
`PeftModel` with stacked adapters included).

A batch is laid out so that every continuation starts at the same column: contexts are
left-padded and continuations right-padded, and position ids come from the attention mask, so
padding changes no score. Only the continuation columns go through the LM head
(`logits_to_keep`), because over a 49k-token vocabulary the logits are most of the memory:
`max_batch_tokens` bounds the padded tokens per forward pass, `max_logit_tokens` the
continuation positions (2048 x 49k float32 logits are 400 MB). Sequences are sorted by length
first (length bucketing) and scores come back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from molab.errors import MolabError
from molab.models.generation import Prompt
from molab.models.generation.prompts import END_OF_TURN_TOKENS, prompt_token_ids
from molab.models.loading import ModelSpec, load_model


@dataclass(frozen=True)
class Score:
    """Log-probabilities (natural log) of one continuation's tokens given its context."""

    token_logprobs: tuple[float, ...]

    @property
    def logprob(self) -> float:
        """Total: the log-probability of the whole continuation."""
        return float(sum(self.token_logprobs))

    @property
    def num_tokens(self) -> int:
        return len(self.token_logprobs)

    @property
    def mean_logprob(self) -> float:
        """Per token: comparable across continuations of different lengths."""
        return self.logprob / self.num_tokens


def score_ids(
    model,
    contexts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    pad_id: int = 0,
    max_batch_tokens: int = 8192,
    max_logit_tokens: int = 2048,
) -> list[Score]:
    """Score token-id continuations given token-id contexts (both non-empty), in input order."""
    if len(contexts) != len(continuations):
        raise MolabError(f"{len(contexts)} contexts for {len(continuations)} continuations")
    for i, (ctx, cont) in enumerate(zip(contexts, continuations)):
        if not ctx or not cont:
            raise MolabError(f"item {i}: the {'context' if not ctx else 'continuation'} has no tokens")
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max((len(c) + len(x) for c, x in zip(contexts, continuations)), default=0)
    if limit is not None and longest > limit:
        raise MolabError(f"a context plus continuation of {longest} tokens exceeds the model's {limit}")
    order = sorted(range(len(contexts)), key=lambda i: (len(contexts[i]) + len(continuations[i]), i))
    scores: list[Score | None] = [None] * len(contexts)
    for batch in _batches(order, contexts, continuations, max_batch_tokens, max_logit_tokens):
        batch_scores = _score_batch(
            model, [contexts[i] for i in batch], [continuations[i] for i in batch], pad_id
        )
        for i, s in zip(batch, batch_scores):
            scores[i] = s
    return scores  # type: ignore[return-value]


def _batches(order: list[int], contexts, continuations, max_tokens: int, max_logits: int) -> list[list[int]]:
    """Consecutive runs of `order` whose padded size (rows x (longest context + longest
    continuation)) and logit rows (rows x longest continuation) stay within the budgets; a
    single over-long item gets a batch of its own."""
    batches: list[list[int]] = []
    batch: list[int] = []
    width_ctx = width_cont = 0
    for i in order:
        ctx, cont = max(width_ctx, len(contexts[i])), max(width_cont, len(continuations[i]))
        rows = len(batch) + 1
        if batch and (rows * (ctx + cont) > max_tokens or rows * cont > max_logits):
            batches.append(batch)
            batch, ctx, cont = [], len(contexts[i]), len(continuations[i])
        batch.append(i)
        width_ctx, width_cont = ctx, cont
    if batch:
        batches.append(batch)
    return batches


def _score_batch(model, contexts, continuations, pad_id: int) -> list[Score]:
    device = next(model.parameters()).device
    c_len = max(len(c) for c in contexts)
    x_len = max(len(x) for x in continuations)
    rows, masks = [], []
    for ctx, cont in zip(contexts, continuations):
        left, right = c_len - len(ctx), x_len - len(cont)
        rows.append([pad_id] * left + list(ctx) + list(cont) + [pad_id] * right)
        masks.append([0] * left + [1] * (len(ctx) + len(cont)) + [0] * right)
    ids = torch.tensor(rows, device=device)  # (B, C + X)
    mask = torch.tensor(masks, device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    # The logit at column t predicts the token at t + 1: continuation tokens sit at columns
    # c_len .. c_len + x_len - 1, so their predictions come from c_len - 1 .. c_len + x_len - 2.
    keep = torch.arange(c_len - 1, c_len + x_len - 1, device=device)
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (B, X, V)
        targets = ids[:, c_len:]  # (B, X)
        picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()  # (B, X)
    return [Score(tuple(picked[b, : len(cont)].tolist())) for b, cont in enumerate(continuations)]


def end_of_turn_id(tokenizer) -> int:
    """The token that closes an assistant turn: the chat format's end-of-turn token, else EOS."""
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in vocab:
            return vocab[token]
    if tokenizer.eos_token_id is None:
        raise MolabError("the tokenizer has neither an end-of-turn token nor an EOS token")
    return int(tokenizer.eos_token_id)


def score_continuations(
    model,
    tokenizer,
    contexts: Sequence[Prompt | str],
    continuations: Sequence[str],
    *,
    end_turn: bool = False,
    max_batch_tokens: int = 8192,
) -> list[Score]:
    """Score text `continuations` after `contexts`: a `Prompt` (a chat rendered with the chat
    template up to the assistant's turn, plus its prefill; or raw text) or a string (raw text).
    The continuation is tokenized on its own, as the model would have generated it. With
    `end_turn` the end-of-turn token is scored too, so a continuation counts as a complete
    answer (a model that would go on talking gives it less)."""
    prompts = [Prompt(text=c) if isinstance(c, str) else c for c in contexts]
    context_ids = [prompt_token_ids(tokenizer, p) for p in prompts]
    tail = [end_of_turn_id(tokenizer)] if end_turn else []
    continuation_ids = [list(tokenizer(x, add_special_tokens=False).input_ids) + tail for x in continuations]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return score_ids(model, context_ids, continuation_ids, pad_id=pad, max_batch_tokens=max_batch_tokens)


Scorer = Callable[[Sequence[Prompt | str], Sequence[str]], list[Score]]


def model_scorer(spec: ModelSpec, *, end_turn: bool = False, max_batch_tokens: int = 8192) -> Scorer:
    """Load the model `spec` names (adapters stacked, not merged) and return a function that
    scores continuations with it (see `score_continuations`)."""
    loaded = load_model(spec)

    def score(contexts: Sequence[Prompt | str], continuations: Sequence[str]) -> list[Score]:
        return score_continuations(
            loaded.model,
            loaded.tokenizer,
            contexts,
            continuations,
            end_turn=end_turn,
            max_batch_tokens=max_batch_tokens,
        )

    return score
