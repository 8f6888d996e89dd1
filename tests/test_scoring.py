"""Log-likelihood scoring: equal to a direct log-softmax on the tiny model whatever the
batching and padding, exact on a hand-made model, and through stacked LoRA adapters."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_llama

from molab.errors import MolabError
from molab.evals.scoring import Score, end_of_turn_id, model_scorer, score_continuations, score_ids
from molab.models.generation import Prompt
from molab.models.generation.prompts import prompt_token_ids
from molab.models.loading import ModelSpec, load_model

CONTEXTS = [
    Prompt.chat("What is the capital of France?"),
    Prompt.chat("Write a haiku about rain, please, and make it sad.", system="You are terse."),
    Prompt(text="Once upon a time"),
    "The quick brown fox",
]
CONTINUATIONS = [
    "Paris.",
    "Grey clouds weep softly\non the silent stone.",
    " there was a",
    " jumps over the lazy dog",
]


def direct_scores(model, tokenizer, contexts, continuations, end_turn=False) -> list[list[float]]:
    """Each item alone, unpadded: log-softmax of one forward pass over context + continuation."""
    out = []
    for ctx, cont in zip(contexts, continuations):
        prompt = Prompt(text=ctx) if isinstance(ctx, str) else ctx
        c_ids = prompt_token_ids(tokenizer, prompt)
        x_ids = tokenizer(cont, add_special_tokens=False).input_ids + (
            [end_of_turn_id(tokenizer)] if end_turn else []
        )
        ids = torch.tensor([c_ids + x_ids])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].float(), -1)
        out.append([logprobs[len(c_ids) + j - 1, t].item() for j, t in enumerate(x_ids)])
    return out


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(tokenizer, seed=3)


@pytest.mark.parametrize("max_batch_tokens", [1, 64, 100_000])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_scores_equal_a_direct_forward_pass(model, tokenizer, max_batch_tokens, padding_side, monkeypatch):
    monkeypatch.setattr(tokenizer, "padding_side", padding_side)
    got = score_continuations(model, tokenizer, CONTEXTS, CONTINUATIONS, max_batch_tokens=max_batch_tokens)
    want = direct_scores(model, tokenizer, CONTEXTS, CONTINUATIONS)
    for g, w in zip(got, want):
        assert g.num_tokens == len(w)
        assert g.token_logprobs == pytest.approx(w, abs=1e-4)
        assert g.logprob == pytest.approx(sum(w), abs=1e-3)
        assert g.mean_logprob == pytest.approx(sum(w) / len(w), abs=1e-4)


def test_the_logit_budget_changes_batches_not_scores(model):
    contexts, continuations = [[5, 6, 7], [8], [9, 10]], [[11, 12, 13, 14], [15, 16], [17]]
    whole = score_ids(model, contexts, continuations)
    split = score_ids(model, contexts, continuations, max_logit_tokens=3)
    for w, s in zip(whole, split):
        assert s.token_logprobs == pytest.approx(w.token_logprobs, abs=1e-4)


def test_end_turn_scores_the_end_of_turn_token(model, tokenizer):
    plain = score_continuations(model, tokenizer, CONTEXTS[:2], CONTINUATIONS[:2])
    ended = score_continuations(model, tokenizer, CONTEXTS[:2], CONTINUATIONS[:2], end_turn=True)
    want = direct_scores(model, tokenizer, CONTEXTS[:2], CONTINUATIONS[:2], end_turn=True)
    assert tokenizer.convert_ids_to_tokens(end_of_turn_id(tokenizer)) == "<|im_end|>"
    for p, e, w in zip(plain, ended, want):
        assert e.num_tokens == p.num_tokens + 1
        assert e.token_logprobs[:-1] == pytest.approx(p.token_logprobs, abs=1e-4)
        assert e.token_logprobs == pytest.approx(w, abs=1e-4)


def test_hand_made_model_gives_exact_log_probabilities(tokenizer):
    """An LM head with zero weights and a bias makes every position's distribution the
    softmax of the bias: log p(t) = bias[t] - logsumexp(bias), whatever the context."""
    model = tiny_llama(tokenizer, tie_word_embeddings=False)
    vocab = model.config.vocab_size
    head = torch.nn.Linear(model.config.hidden_size, vocab, bias=True)
    torch.nn.init.zeros_(head.weight)
    bias = torch.zeros(vocab)
    bias[[11, 12, 13]] = torch.tensor([5.0, 2.0, -1.0])
    head.bias.data = bias
    model.lm_head = head
    norm = torch.logsumexp(bias, 0).item()
    scores = score_ids(model, [[1, 2, 3], [4]], [[11, 12], [13, 99, 11]], pad_id=0)
    assert scores[0].token_logprobs == pytest.approx([5.0 - norm, 2.0 - norm], abs=1e-4)
    assert scores[1].logprob == pytest.approx(-1.0 - norm + (0.0 - norm) + 5.0 - norm, abs=1e-3)


def test_stacked_adapters_score_like_the_merged_model(tokenizer, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    adapters = []
    for i in range(2):
        torch.manual_seed(10 + i)
        base = load_model(ModelSpec(name=str(tiny_model_dir))).model
        config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
        peft = get_peft_model(base, config)
        path = tmp_path / f"adapter{i}"
        peft.save_pretrained(path)
        adapters.append(str(path))
    spec = ModelSpec(name=str(tiny_model_dir), adapters=adapters)
    got = model_scorer(spec)(CONTEXTS, CONTINUATIONS)
    merged = load_model(spec.model_copy(update={"merge_adapters": True})).model
    base = load_model(ModelSpec(name=str(tiny_model_dir))).model
    want = direct_scores(merged, tokenizer, CONTEXTS, CONTINUATIONS)
    without = direct_scores(base, tokenizer, CONTEXTS, CONTINUATIONS)
    for g, w, b in zip(got, want, without):
        assert g.token_logprobs == pytest.approx(w, abs=1e-3)
        assert not math.isclose(g.logprob, sum(b), abs_tol=1e-2)  # the adapters changed something


def test_bad_inputs_are_molab_errors(model, tokenizer):
    with pytest.raises(MolabError, match="continuation has no tokens"):
        score_continuations(model, tokenizer, ["Hello"], [""])
    with pytest.raises(MolabError, match="context has no tokens"):
        score_ids(model, [[]], [[1]])
    with pytest.raises(MolabError, match="exceeds the model's 1024"):
        score_ids(model, [[1] * 1000], [[2] * 30])
    with pytest.raises(MolabError, match="2 contexts for 1"):
        score_ids(model, [[1], [2]], [[3]])


def test_score_properties():
    s = Score((-1.0, -2.0, -3.0))
    assert (s.logprob, s.num_tokens, s.mean_logprob) == (-6.0, 3, -2.0)
