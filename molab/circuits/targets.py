"""What an attribution graph is computed for: the prompt's token ids and the logit targets.

Why these rules: they are circuit-tracer's ("Circuit Tracing", Ameisen et al. 2025;
`circuit_tracer/replacement_model` `ensure_tokenized`, `utils/salient_logits.py`,
`attribution/targets.py`), so the same prompt gives the same nodes in both tools:

- the prompt is tokenized without special tokens and a special token (BOS, else PAD, else EOS,
  else the first special id) is put in front unless the first token already is one; the first
  position draws unusually large activations and its features are zeroed in the graph;
- logit targets: the most probable next tokens, in order of probability, until their
  cumulative probability reaches `desired_logit_prob`, at most `max_n_logits`; or the tokens a
  user names (each must be one token; a string of digits that is no single token is read as a
  vocabulary id);
- a target's direction is its unembedding row minus the mean unembedding row, so its value is
  the logit minus the mean logit (softmax is unchanged by that shift).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from molab.errors import MolabError


def prompt_ids(tokenizer, prompt: str | list[int]) -> torch.Tensor:
    """The prompt's token ids [n_pos] (long), led by a special token."""
    if isinstance(prompt, str):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    else:
        ids = [int(i) for i in prompt]
    if not ids:
        raise MolabError("the prompt is empty: a graph needs at least one token")
    special = list(getattr(tokenizer, "all_special_ids", []) or [])
    if ids[0] not in special:
        candidates = [tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, *special]
        lead = next((c for c in candidates if c is not None), None)
        if lead is not None:
            ids = [lead, *ids]
    return torch.tensor(ids, dtype=torch.long)


@dataclass
class LogitTargets:
    tokens: torch.Tensor  # [n_logits] long: vocabulary ids
    probs: torch.Tensor  # [n_logits] float32: the model's next-token probabilities
    directions: torch.Tensor  # [n_logits, d_model]: de-meaned unembedding rows


def unembedding(model) -> torch.Tensor:
    """The unembedding matrix [vocab, d_model] (the LM head's weight)."""
    return model.get_output_embeddings().weight.detach()


def named_token_ids(tokenizer, names: list[str], vocab_size: int) -> list[int]:
    """Vocabulary ids of the target tokens a user names; one line for a name that is not one token."""
    ids = []
    for name in names:
        encoded = tokenizer.encode(name, add_special_tokens=False)
        if len(encoded) == 1:
            ids.append(encoded[0])
        elif name.strip().isdigit() and int(name) < vocab_size:
            ids.append(int(name))
        else:
            raise MolabError(
                f"target {name!r} is {len(encoded)} tokens, not one: name a single token (or its id)"
            )
    return ids


@torch.no_grad()
def logit_targets(
    model,
    tokenizer,
    last_logits: torch.Tensor,  # [vocab] at the last position
    *,
    max_n_logits: int,
    desired_logit_prob: float,
    names: list[str] | None = None,
) -> LogitTargets:
    probs = torch.softmax(last_logits.float(), dim=-1)
    if names:
        tokens = torch.tensor(named_token_ids(tokenizer, names, len(probs)), dtype=torch.long)
        top_p = probs[tokens]
    else:
        top_p, tokens = probs.topk(min(max_n_logits, len(probs)))
        cutoff = int(torch.searchsorted(top_p.cumsum(0), desired_logit_prob)) + 1
        top_p, tokens = top_p[:cutoff], tokens[:cutoff]
    w_u = unembedding(model)
    directions = w_u[tokens] - w_u.mean(0, keepdim=True)
    return LogitTargets(tokens=tokens, probs=top_p.float(), directions=directions)
