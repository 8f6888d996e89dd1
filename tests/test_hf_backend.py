"""The hf backend on a tiny random Llama: the fast decoder against the HF forward, batching
independence, stopping, prefill, and the generic path against `model.generate`."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama

from molab.errors import MolabError
from molab.models.generation import HFBackendConfig, Prompt, SamplingConfig
from molab.models.generation.hf_backend import HFBackend
from molab.models.generation.llama_decode import LlamaDecoder, supports

QUESTIONS = [
    "Hi",
    "What is the capital of France?",
    "Write a long and detailed essay about the history of the printing press in Europe.",
    "Count to three.",
    "Why?",
]
GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=12)
SAMPLED = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=12, seed=7)


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(tokenizer)


def backend(model, tokenizer, batch_size=64, fast=True, stop_ids=None):
    b = HFBackend(model, tokenizer, HFBackendConfig(batch_size=batch_size), stop_ids=stop_ids)
    assert b.fast  # a plain Llama takes the fast path
    b.fast = fast
    return b


def prompts():
    return [Prompt.chat(q) for q in QUESTIONS]


@pytest.mark.parametrize("onednn", [True, False], ids=["packed-onednn", "plain-linear"])
def test_decoder_matches_hf_forward(model, tokenizer, onednn, monkeypatch):
    """Prefill two prompts of different lengths, decode 5 teacher-forced tokens, and compare
    every step's logits with the HF forward over the whole sequence (with the CPU's packed
    weights, and with the plain linears GPUs use)."""
    from molab.models.generation import llama_decode

    if not onednn:
        monkeypatch.setattr(llama_decode, "_ONEDNN", [False])
    ids = [tokenizer(q).input_ids for q in ("short", "a much longer prompt with several more tokens")]
    follow = torch.randint(0, len(tokenizer), (2, 5))
    dec = LlamaDecoder(model)
    dec.allocate(slots=3, max_len=8)  # too small on purpose: grow() must keep the contents
    dec.grow(max(map(len, ids)) + 5, live=0)
    got = [dec.prefill(0, ids)]
    for step in range(5):
        got.append(dec.decode(follow[:, step]))
    for row, prompt in enumerate(ids):
        full = torch.tensor([prompt + follow[row].tolist()])
        with torch.no_grad():
            want = model(full).logits[0, len(prompt) - 1 :]
        for step in range(6):
            torch.testing.assert_close(got[step][row], want[step], atol=1e-4, rtol=1e-4)


def test_move_keeps_a_slot_decoding_identically(model, tokenizer):
    ids = [tokenizer(q).input_ids for q in ("one", "two three four")]
    a, b = LlamaDecoder(model), LlamaDecoder(model)
    a.allocate(2, 16)
    b.allocate(2, 16)
    a.prefill(0, ids)
    b.prefill(0, ids[1:])  # b holds prompt 1 in slot 0 from the start
    a.move(1, 0)  # a moves prompt 1 from slot 1 into slot 0
    tok = torch.tensor([5])
    torch.testing.assert_close(a.decode(tok), b.decode(tok), atol=1e-5, rtol=1e-5)


def test_fast_and_generic_paths_match_model_generate_greedy(model, tokenizer):
    fast = backend(model, tokenizer).generate(prompts(), GREEDY, progress=False)
    generic = backend(model, tokenizer, fast=False).generate(prompts(), GREEDY, progress=False)
    ids = backend(model, tokenizer).encode(prompts())
    for p, f, g in zip(ids, fast, generic):
        out = model.generate(
            torch.tensor([p]),
            attention_mask=torch.ones(1, len(p), dtype=torch.long),
            max_new_tokens=GREEDY.max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
        )
        want = tokenizer.decode(out[0, len(p) :], skip_special_tokens=True)
        assert f.text == want and g.text == want


@pytest.mark.parametrize("batch_size", [1, 2, 64])
def test_sampling_does_not_depend_on_batching_or_path(model, tokenizer, batch_size):
    reference = backend(model, tokenizer).generate(prompts(), SAMPLED, progress=False)
    fast = backend(model, tokenizer, batch_size).generate(prompts(), SAMPLED, progress=False)
    generic = backend(model, tokenizer, batch_size, fast=False).generate(prompts(), SAMPLED, progress=False)
    assert [c.text for c in fast] == [c.text for c in reference]
    assert [c.text for c in generic] == [c.text for c in reference]


def test_seed_changes_samples_and_order_follows_input(model, tokenizer):
    b = backend(model, tokenizer, batch_size=2)
    first = b.generate(prompts(), SAMPLED, progress=False)
    again = b.generate(prompts(), SAMPLED, progress=False)
    other = b.generate(prompts(), SAMPLED.model_copy(update={"seed": 8}), progress=False)
    assert [c.text for c in first] == [c.text for c in again]
    assert [c.text for c in first] != [c.text for c in other]
    reversed_run = b.generate(prompts()[::-1], SAMPLED, progress=False)
    # Seeds follow input positions, so compare greedy instead for order.
    g = b.generate(prompts(), GREEDY, progress=False)
    g_rev = b.generate(prompts()[::-1], GREEDY, progress=False)
    assert [c.text for c in g_rev] == [c.text for c in g][::-1]
    assert len(reversed_run) == len(QUESTIONS)


def test_stops_at_end_of_turn_and_at_max_tokens(model, tokenizer):
    b = backend(model, tokenizer)
    plain = b.generate(prompts(), GREEDY, progress=False)
    assert all(c.finish_reason == "length" and c.num_tokens == GREEDY.max_new_tokens for c in plain)
    # Declare prompt 0's first greedy token an end-of-turn token: it stops there, others go on.
    first = b.encode(prompts()[:1])[0]
    with torch.no_grad():
        stop = int(model(torch.tensor([first])).logits[0, -1].argmax())
    for fast in (True, False):
        stopped = backend(model, tokenizer, fast=fast, stop_ids={stop}).generate(
            prompts(), GREEDY, progress=False
        )
        assert (stopped[0].finish_reason, stopped[0].num_tokens, stopped[0].text) == ("stop", 1, "")
        assert [c.text for c in stopped[1:]] == [c.text for c in plain[1:]] or any(
            c.finish_reason == "stop" for c in stopped[1:]
        )


def test_stop_strings_truncate(model, tokenizer):
    b = backend(model, tokenizer)
    text = b.generate(prompts()[:1], GREEDY, progress=False)[0].text
    # A stop string that first occurs past the start of the greedy answer.
    i = next(i for i in range(2, len(text) - 2) if text[i].isalpha() and text[i] not in text[:i])
    cut = text[i]
    got = b.generate(prompts()[:1], GREEDY.model_copy(update={"stop": [cut]}), progress=False)[0]
    assert got.finish_reason == "stop"
    assert cut not in got.text and text.startswith(got.text)


def test_prefill_continues_the_answer(model, tokenizer):
    b = backend(model, tokenizer)
    chat = Prompt.chat("Name a colour.", prefill="My favourite colour is")
    from molab.models.generation.prompts import render_prompt

    raw = Prompt(text=render_prompt(tokenizer, chat))
    with_prefill, as_raw = b.generate([chat, raw], GREEDY, progress=False)
    assert with_prefill.text == as_raw.text
    assert not with_prefill.text.startswith("My favourite colour is")


def test_empty_prompt_list_is_an_error(model, tokenizer):
    with pytest.raises(MolabError, match="no prompts"):
        backend(model, tokenizer).generate([], GREEDY)


def test_unsupported_architectures_use_the_generic_path(model):
    from peft import LoraConfig, get_peft_model

    assert supports(model)
    peft_model = get_peft_model(tiny_llama_copy(model), LoraConfig(r=2, target_modules=["q_proj"]))
    assert not supports(peft_model)


def tiny_llama_copy(model):
    import copy

    return copy.deepcopy(model)
