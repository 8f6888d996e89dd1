"""The hf backend on a tiny random Llama: the fast decoder against the HF forward, batching
independence, stopping, prefill, and the generic path against `model.generate`."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama

from molab.errors import MolabError
from molab.models.generation import HFBackendConfig, Prompt, PromptTooLongError, SamplingConfig
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
    follow = torch.randint(0, len(tokenizer), (2, 5), generator=torch.Generator().manual_seed(0))
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
        # Incremental decoding sums in another order than the full forward: float32 logits
        # agree to a few 1e-4 (a fresh clone once saw 1.2e-4); a wrong cache or position is far off.
        for step in range(6):
            torch.testing.assert_close(got[step][row], want[step], atol=5e-4, rtol=1e-4)


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


# --- the model's context ----------------------------------------------------------------

CONTEXT = 64


def words(n):
    return " ".join(f"word{i}" for i in range(n))


def short_backend(tokenizer, fast=True):
    """A backend on a fresh tiny Llama with a 64-position context and no stop tokens."""
    return backend(
        tiny_llama(tokenizer, max_position_embeddings=CONTEXT), tokenizer, fast=fast, stop_ids=set()
    )


def forbid_generation(b, monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("generation started")

    monkeypatch.setattr(LlamaDecoder, "_forward", started)
    monkeypatch.setattr(b.model, "forward", started)


@pytest.mark.parametrize("fast", [True, False], ids=["slots", "waves"])
def test_too_long_prompt_is_an_error_before_anything_is_generated(tokenizer, fast, monkeypatch):
    b = short_backend(tokenizer, fast)
    too_long = Prompt.chat(words(60))
    exact = Prompt(text=" ".join(["a"] * CONTEXT))  # no room left for one new token
    n = len(b.encode([too_long])[0])
    assert n > CONTEXT and len(b.encode([exact])[0]) == CONTEXT
    forbid_generation(b, monkeypatch)
    with pytest.raises(
        PromptTooLongError,
        match=rf"^prompt 2: the prompt is {n:,} tokens; .*'s context is 64 \(2 prompts are too long\): "
        "shorten it",
    ) as e:
        b.generate([Prompt.chat("Hi"), too_long, exact], GREEDY, progress=False)
    assert isinstance(e.value, MolabError) and e.value.index == 1
    with pytest.raises(PromptTooLongError, match="^prompt 1: the prompt is 64 tokens"):
        b.generate_ids(b.encode([exact]), GREEDY, progress=False)


@pytest.mark.parametrize("fast", [True, False], ids=["slots", "waves"])
def test_answer_is_capped_at_the_context(tokenizer, fast):
    """Prompt plus answer never exceed the context: the answer ends there with "length", the
    tokens it has are those an uncapped run gives, and the cache stays within the context."""
    b = short_backend(tokenizer, fast)
    prompt = Prompt.chat(words(12))
    room = CONTEXT - len(b.encode([prompt])[0])
    assert 0 < room < 40
    for sampling in (GREEDY, SAMPLED):
        capped = b.generate(
            [prompt, Prompt(text="Hi")], sampling.model_copy(update={"max_new_tokens": 40}), progress=False
        )
        exact = b.generate([prompt], sampling.model_copy(update={"max_new_tokens": room}), progress=False)
        assert (capped[0].num_tokens, capped[0].finish_reason) == (room, "length")
        assert capped[0].text == exact[0].text
        assert capped[1].num_tokens == 40  # a short prompt in the same call is not capped
    if fast:
        assert b.decoder.capacity <= CONTEXT


def test_truncate_drops_the_start_of_the_longest_message(tokenizer):
    b = short_backend(tokenizer)
    sampling = GREEDY.model_copy(update={"truncate": True, "max_new_tokens": 8})
    prompt = Prompt.chat(words(60) + " Which word came last?", system="Be brief.")
    full = len(b.encode([prompt])[0])
    fitted = b.prepare([prompt], sampling)
    ids = fitted.ids[0]
    assert CONTEXT - 8 - 2 <= len(ids) <= CONTEXT - 8  # room for the whole answer
    assert fitted.truncated == [full - len(ids)] and fitted.budgets == [8]
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")  # template kept
    assert text.endswith("word59 Which word came last?<|im_end|>\n<|im_start|>assistant\n")
    assert "word0 " not in text
    short, fits = b.generate([prompt, Prompt.chat("Hi")], sampling, progress=False)
    assert (short.truncated_tokens, short.num_tokens) == (full - len(ids), 8)
    assert fits.truncated_tokens == 0


def test_truncate_raw_text_and_token_ids_keep_the_end(tokenizer):
    b = short_backend(tokenizer)
    sampling = GREEDY.model_copy(update={"truncate": True, "max_new_tokens": 100})  # half the context at most
    raw = b.prepare([Prompt(text=words(60), prefill=" and")], sampling)
    assert len(raw.ids[0]) <= CONTEXT // 2 and raw.budgets[0] == CONTEXT - len(raw.ids[0])
    assert tokenizer.decode(raw.ids[0]).endswith("word59 and")
    ids = list(range(100, 200))
    done = b.generate_ids([ids], sampling, progress=False)[0]
    assert done.truncated_tokens == 100 - CONTEXT // 2 and done.num_tokens == CONTEXT // 2


def test_truncate_cannot_cut_a_prefill(tokenizer):
    b = short_backend(tokenizer)
    sampling = GREEDY.model_copy(update={"truncate": True})
    with pytest.raises(PromptTooLongError, match="^prompt 1: the prompt cannot be cut to 52 tokens.*prefill"):
        b.generate([Prompt.chat("Hi", prefill=words(40))], sampling, progress=False)


def test_truncate_is_left_out_of_config_dumps_unless_set():
    """Stage caches hash config dumps: a config without truncate keeps its old hash."""
    assert "truncate" not in SamplingConfig().model_dump(mode="json")
    assert SamplingConfig(truncate=True).model_dump()["truncate"] is True
