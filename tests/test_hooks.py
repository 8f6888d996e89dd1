"""Hook points on tiny random models: captures against values computed by hand, edits on the
HF forward, steering through both paths of the hf backend (same tokens), stopping a forward
early, and the refusals (bad names, per-row values in generation, the vllm backend)."""

from __future__ import annotations

import copy
import sys
import types
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_llama

from molab.errors import MolabError
from molab.models import hooks
from molab.models.generation import HFBackendConfig, Prompt, SamplingConfig, VLLMBackendConfig
from molab.models.generation.hf_backend import HFBackend
from molab.models.generation.llama_decode import LlamaDecoder
from molab.models.hooks import Ablate, Add, HookPoint, Replace, Scale, capture, intervene, run_until

GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=8)
QUESTIONS = ["Hi", "What is the capital of France?", "Count to three.", "Why?"]
D = 64  # the tiny models' d_model


def tiny_qwen2(tokenizer, seed: int = 0):
    """A 2-layer Qwen2 (biased q/k/v projections) with the default vocabulary."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=D,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.5,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(tokenizer)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def any_model(request, tokenizer):
    return tiny_llama(tokenizer) if request.param == "llama" else tiny_qwen2(tokenizer)


def ids(tokenizer, *texts):
    return torch.tensor([tokenizer(t).input_ids for t in texts])


def logits(model, x):
    with torch.no_grad():
        return model(x).logits


def component(x, u):
    return x @ (u / u.norm())


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# --- names ------------------------------------------------------------------------------


def test_points_are_named_per_layer_in_forward_order(model):
    points = ["resid_pre", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post"]
    assert hooks.hook_points(model) == [f"layers.{i}.{p}" for i in (0, 1) for p in points]
    assert hooks.resolve(model, "layers.1.mlp_out") == HookPoint(1, "mlp_out", "layers.1.mlp_out")


@pytest.mark.parametrize(
    "name", ["layers.2.resid_pre", "layers.0.resid", "blocks.0.mlp_out", "layers.-1.mlp_in"]
)
def test_bad_names_are_one_line_errors_naming_the_valid_points(model, name):
    for use in (
        lambda: hooks.resolve(model, name),
        lambda: capture(model, [name]).__enter__(),
        lambda: intervene(model, {name: Add(torch.ones(D))}).__enter__(),
    ):
        with pytest.raises(MolabError) as e:
            use()
        msg = str(e.value)
        assert "\n" not in msg and repr(name) in msg and "i in 0..1" in msg
        assert "resid_pre, attn_out, resid_mid, mlp_in, mlp_out, resid_post" in msg
    assert hooks.active_edits(model) is None


def test_bad_edits_are_errors_naming_the_point(model):
    with pytest.raises(
        MolabError, match=r"^Add at layers.0.resid_post: a tensor of shape \(3,\).*d_model is 64$"
    ):
        intervene(model, {"layers.0.resid_post": Add(torch.ones(3))}).__enter__()
    with pytest.raises(MolabError, match="Scale at layers.0.mlp_in: needs one vector"):
        intervene(model, {"layers.0.mlp_in": Scale(torch.ones(2, D), 2.0)}).__enter__()
    with pytest.raises(MolabError, match="zero vector"):
        Ablate(torch.zeros(D))
    with (
        pytest.raises(MolabError, match=r"Replace at layers.1.attn_out returned shape \(1, 4, 1\)"),
        intervene(model, {"layers.1.attn_out": Replace(lambda x: x[..., :1])}),
    ):
        model(torch.tensor([[1, 2, 3, 4]]))
    assert hooks.active_edits(model) is None and hook_count(model) == 0


# --- reading ----------------------------------------------------------------------------


def test_capture_matches_the_layers_own_computation(any_model, tokenizer):
    model, layers = any_model, any_model.model.layers
    x = ids(tokenizer, "The quick brown fox jumps", "Over the lazy dog again")
    o_proj = []
    handle = layers[1].self_attn.o_proj.register_forward_hook(lambda m, a, out: o_proj.append(out))
    with capture(model, hooks.hook_points(model)) as c:
        hidden = model(x, output_hidden_states=True).hidden_states  # grad on: captures detach
    handle.remove()
    assert all(v.shape == (2, x.shape[1], D) and not v.requires_grad for v in c.values())
    with torch.no_grad():
        for i in (0, 1):
            v = {p: c[f"layers.{i}.{p}"] for p in hooks.POINTS}
            torch.testing.assert_close(v["resid_pre"], hidden[i])
            torch.testing.assert_close(v["resid_mid"], v["resid_pre"] + v["attn_out"])
            torch.testing.assert_close(v["mlp_in"], layers[i].post_attention_layernorm(v["resid_mid"]))
            torch.testing.assert_close(v["mlp_out"], layers[i].mlp(v["mlp_in"]))
            torch.testing.assert_close(v["resid_post"], v["resid_mid"] + v["mlp_out"])
        torch.testing.assert_close(c["layers.1.attn_out"], o_proj[0])
        torch.testing.assert_close(c["layers.0.resid_post"], hidden[1])
        torch.testing.assert_close(model.model.norm(c["layers.1.resid_post"]), hidden[2])  # last: normed
        # A later forward replaces the values.
        other = ids(tokenizer, "Something else entirely")
        with capture(model, "layers.0.resid_pre") as c:
            model(x)
            model(other)
        torch.testing.assert_close(c["layers.0.resid_pre"], model.model.embed_tokens(other))


def test_fast_decoder_captures_what_the_hf_forward_does(any_model, tokenizer):
    prompt = tokenizer("A prompt of several tokens for the decoder").input_ids
    names = hooks.hook_points(any_model)
    with torch.no_grad(), capture(any_model, names) as want:
        any_model(torch.tensor([prompt]))
    dec = LlamaDecoder(any_model)
    dec.allocate(1, len(prompt) + 2)
    with capture(any_model, names) as got:
        dec.prefill(0, [prompt])
        assert set(got) == set(names)
        for name in names:
            torch.testing.assert_close(got[name], want[name], atol=1e-4, rtol=1e-4)
        dec.decode(torch.tensor([5]))
    assert got["layers.1.resid_post"].shape == (1, 1, D)  # the last forward: one decoding step


def test_stop_after_skips_later_layers(model, tokenizer):
    calls = {"layer 1": 0, "lm_head": 0}
    count = lambda key: lambda *_: calls.__setitem__(key, calls[key] + 1)
    handles = [
        model.model.layers[1].register_forward_hook(count("layer 1")),
        model.lm_head.register_forward_hook(count("lm_head")),
    ]
    x = ids(tokenizer, "Cache the activations of layer zero")
    names = ["layers.0.mlp_out", "layers.0.resid_pre"]
    try:
        with torch.no_grad(), capture(model, names) as full:
            model(x)
        assert calls == {"layer 1": 1, "lm_head": 1}
        reached = []
        with torch.no_grad(), capture(model, names, stop_after=True) as early:
            model(x)
            reached.append(True)  # not reached: the body ends with the forward
        until = run_until(model, names, input_ids=x)
    finally:
        for h in handles:
            h.remove()
    assert calls == {"layer 1": 1, "lm_head": 1} and not reached
    for values in (early, until):
        assert set(values) == set(names)
        for n in names:
            torch.testing.assert_close(values[n], full[n])
    assert hooks.active_edits(model) is None and hook_count(model) == 0


def test_peft_wrapper_shares_the_base_models_points(model, tokenizer):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj"]))
    base = peft_model.get_base_model()
    x = ids(tokenizer, "Through the adapter")
    assert hooks.hook_points(peft_model) == hooks.hook_points(model)
    with torch.no_grad(), capture(peft_model, "layers.1.resid_post") as c:
        plain = peft_model(input_ids=x).logits
    torch.testing.assert_close(
        c["layers.1.resid_post"], run_until(model, "layers.1.resid_post", input_ids=x)["layers.1.resid_post"]
    )
    with intervene(peft_model, {"layers.0.resid_post": Add(torch.randn(D), 4.0)}):
        assert hooks.active_edits(base) is hooks.active_edits(peft_model) is not None
        with torch.no_grad():
            assert not torch.allclose(peft_model(input_ids=x).logits, plain)
    assert hooks.active_edits(base) is None


# --- writing on the HF forward ----------------------------------------------------------


def test_edits_change_the_logits_as_computed_by_hand(model, tokenizer):
    x = ids(tokenizer, "Steer this sentence somewhere")
    head = lambda r: model.lm_head(model.model.norm(r))
    with torch.no_grad():
        with capture(model, ["layers.1.resid_post", "layers.1.resid_mid", "layers.0.resid_post"]) as base:
            before = model(x).logits
        v = torch.randn(D)
        with intervene(model, {"layers.1.resid_post": Add(v, 3.0)}):
            torch.testing.assert_close(model(x).logits, head(base["layers.1.resid_post"] + 3.0 * v))
        with intervene(model, {"layers.1.mlp_out": Replace(torch.zeros(D))}):
            zeroed = model(x).logits
        torch.testing.assert_close(zeroed, head(base["layers.1.resid_mid"]))
        with intervene(model, {"layers.1.mlp_out": Replace(lambda a: a * 0)}):
            torch.testing.assert_close(model(x).logits, zeroed)
        elsewhere = torch.randn(1, x.shape[1], D)  # a whole [batch, seq, d] value
        with intervene(model, {"layers.1.resid_post": Replace(elsewhere)}):
            torch.testing.assert_close(model(x).logits, head(elsewhere))
        u = base["layers.0.resid_post"][0, -1]  # a direction the stream uses
        for edit, factor in ((Ablate(u), 0.0), (Scale(u, 2.0), 2.0), (Scale(u, -1.0), -1.0)):
            with intervene(model, {"layers.0.resid_post": edit}), capture(model, "layers.1.resid_pre") as c:
                after = model(x).logits
            want = factor * component(base["layers.0.resid_post"], u)
            torch.testing.assert_close(component(c["layers.1.resid_pre"], u), want, atol=1e-3, rtol=1e-4)
            assert not torch.allclose(after, before)
        assert torch.equal(model(x).logits, before)


def test_resid_mid_edits_the_stream(model, tokenizer):
    """On the HF path resid_mid is edited through attention's contribution: adding v there is
    adding v to attn_out, and the stream (not only the MLP's input) carries the change."""
    x = ids(tokenizer, "Edit the middle of the layer")
    v = torch.randn(D) * 3
    with torch.no_grad():
        before = model(x).logits
        with intervene(model, {"layers.0.resid_mid": Add(v)}), capture(model, hooks.hook_points(model)) as c:
            mid = model(x).logits
        with intervene(model, {"layers.0.attn_out": Add(v)}):
            torch.testing.assert_close(model(x).logits, mid, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(c["layers.0.resid_post"], c["layers.0.resid_mid"] + c["layers.0.mlp_out"])
        u = torch.randn(D)
        with intervene(model, {"layers.0.resid_mid": Ablate(u)}), capture(model, "layers.0.resid_post") as c:
            model(x)
            mlp = run_until(model, "layers.0.mlp_out", input_ids=x)["layers.0.mlp_out"]
        # resid_post = ablated resid_mid + mlp: its component along u is the MLP's alone.
        torch.testing.assert_close(
            component(c["layers.0.resid_post"], u), component(mlp, u), atol=1e-3, rtol=1e-4
        )
    assert not torch.allclose(mid, before)


def test_nested_contexts_compose_in_order(model, tokenizer):
    x = ids(tokenizer, "Order matters")
    u = torch.randn(D)
    unit = u / u.norm()
    point = "layers.0.resid_post"
    with torch.no_grad():
        cases = {
            5.0: [{point: Ablate(u)}, {point: Add(unit, 5.0)}],  # ablate, then add 5u
            0.0: [{point: Add(unit, 5.0)}, {point: Ablate(u)}],  # add, then ablate
        }
        for want, (outer, inner) in cases.items():
            with intervene(model, outer), intervene(model, inner), capture(model, "layers.1.resid_pre") as c:
                model(x)
            torch.testing.assert_close(
                component(c["layers.1.resid_pre"], u), torch.full(tuple(x.shape), want), atol=1e-4, rtol=0
            )
        with (
            intervene(model, {point: [Ablate(u), Add(unit, 5.0)]}),
            capture(model, "layers.1.resid_pre") as c,
        ):
            model(x)
        torch.testing.assert_close(
            component(c["layers.1.resid_pre"], u), torch.full(tuple(x.shape), 5.0), atol=1e-4, rtol=0
        )


def test_hooks_are_removed_after_an_exception(model, tokenizer):
    x = ids(tokenizer, "Fail inside the context")
    before, n = logits(model, x), hook_count(model)
    with pytest.raises(ValueError, match="inside"):
        with (
            intervene(model, {"layers.0.resid_mid": Add(torch.ones(D), 9.0)}),
            capture(model, hooks.hook_points(model)),
        ):
            assert hook_count(model) > n and hooks.active_edits(model) is not None
            assert not torch.allclose(logits(model, x), before)
            raise ValueError("inside")
    assert hook_count(model) == n and hooks.active_edits(model) is None
    assert torch.equal(logits(model, x), before)


# --- generation -------------------------------------------------------------------------


def backend(model, tokenizer, fast: bool, batch_size: int = 2):
    b = HFBackend(model, tokenizer, HFBackendConfig(batch_size=batch_size))
    assert b.fast
    b.fast = fast
    return b


def texts(b, prompts):
    return [c.text for c in b.generate(prompts, GREEDY, progress=False)]


@pytest.fixture(scope="module")
def paths(any_model, tokenizer):
    """The fast decoder and the generic loop on `any_model`, built once (the decoder packs
    weights and keeps its cache between calls)."""
    return backend(any_model, tokenizer, True), backend(any_model, tokenizer, False)


@pytest.mark.parametrize("point", hooks.POINTS)
def test_steering_gives_the_same_tokens_on_both_paths(any_model, paths, tokenizer, point):
    """A planted direction (a token's embedding) added at one point changes greedy answers,
    identically through the fast decoder (continuous batching, shared prefix) and through the
    generic loop over the HF forward; after the context, answers are the unsteered ones."""
    prompts = [Prompt.chat(q) for q in QUESTIONS]
    fast, generic = paths
    plain = texts(fast, prompts)
    planted = any_model.model.embed_tokens.weight[tokenizer(" yes").input_ids[0]].detach()
    with intervene(any_model, {f"layers.0.{point}": Add(planted, 4.0 / planted.norm())}):
        steered = texts(fast, prompts)
        assert texts(generic, prompts) == steered
        first = fast.encode(prompts[:1])[0]
        out = any_model.generate(
            torch.tensor([first]),
            attention_mask=torch.ones(1, len(first), dtype=torch.long),
            max_new_tokens=GREEDY.max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
        )
        assert tokenizer.decode(out[0, len(first) :], skip_special_tokens=True) == steered[0]
    assert steered != plain
    assert texts(fast, prompts) == plain == texts(generic, prompts)


def test_without_a_context_the_decoder_does_no_hook_work(model, tokenizer, monkeypatch):
    def called(*args):
        raise AssertionError("hooks.apply called with no context open")

    monkeypatch.setattr(hooks, "apply", called)
    b = backend(model, tokenizer, True)
    assert texts(b, [Prompt.chat("Hi")])


@pytest.mark.parametrize("fast", [True, False], ids=["slots", "waves"])
def test_generation_refuses_a_value_per_row(model, tokenizer, fast):
    b = backend(model, tokenizer, fast)
    with intervene(model, {"layers.0.resid_post": Replace(torch.zeros(2, 1, D))}):
        with pytest.raises(MolabError, match=r"hf backend .* Replace at layers.0.resid_post .*\(2, 1, 64\)"):
            b.generate([Prompt.chat("Hi")], GREEDY, progress=False)


def test_vllm_backend_refuses_while_edits_are_open(model, monkeypatch):
    from molab.models.generation.vllm_backend import VLLMBackend
    from molab.models.loading import ModelSpec

    calls = []
    llm = lambda **kw: SimpleNamespace(generate=lambda inputs, params, **kw: calls.append(inputs) or [])
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = llm, lambda **kw: SimpleNamespace(**kw)
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda *a: None
    for name, mod in [
        ("vllm", vllm),
        ("vllm.lora", types.ModuleType("vllm.lora")),
        ("vllm.lora.request", request),
    ]:
        monkeypatch.setitem(sys.modules, name, mod)
    b = VLLMBackend(ModelSpec(), VLLMBackendConfig())
    with intervene(model, {"layers.0.resid_post": Add(torch.ones(D))}):
        with pytest.raises(
            MolabError, match=r"^the vllm backend cannot apply activation edits .*LlamaForCausalLM"
        ):
            b.generate([Prompt.chat("Hi")], GREEDY, progress=False)
    assert calls == []
    with capture(model, "layers.0.resid_post"):  # reading elsewhere is no reason to refuse
        b.generate([Prompt.chat("Hi")], GREEDY, progress=False)
    b.generate([Prompt.chat("Hi")], GREEDY, progress=False)
    assert len(calls) == 2
