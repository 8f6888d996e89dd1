"""The vLLM backend and the prompt rendering it shares with the hf backend.

vLLM itself only runs on a CUDA machine; here the backend's own logic (LoRA requests, adapter
merging, per-prompt sampling parameters, output order) runs against a stand-in `vllm` module.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from types import SimpleNamespace

import pytest

from molab.errors import MolabError
from molab.models.generation import Prompt, SamplingConfig, VLLMBackendConfig
from molab.models.generation.prompts import prompt_token_ids, render_prompt, stop_token_ids
from molab.models.loading import ModelSpec

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# --- prompt rendering -------------------------------------------------------------------


def test_render_chat_prompt_uses_template_and_prefill(tokenizer):
    p = Prompt.chat("What is 2+2?", system="Be brief.", prefill="The answer")
    text = render_prompt(tokenizer, p)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\nThe answer"
    )


def test_render_chat_prompt_without_prefill_ends_with_assistant_header(tokenizer):
    text = render_prompt(tokenizer, Prompt.chat("hi"))
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_render_text_prompt_is_verbatim_plus_prefill(tokenizer):
    assert render_prompt(tokenizer, Prompt(text="Once upon a time")) == "Once upon a time"
    assert render_prompt(tokenizer, Prompt(text="Q: 1+1?\nA:", prefill=" 2")) == "Q: 1+1?\nA: 2"


def test_prompt_token_ids_round_trip(tokenizer):
    p = Prompt.chat("hello there", prefill="Sure")
    ids = prompt_token_ids(tokenizer, p)
    assert tokenizer.decode(ids) == render_prompt(tokenizer, p)
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3  # no extra BOS


def test_chat_prompt_without_template_is_a_molab_error():
    tok = SimpleNamespace(chat_template=None, name_or_path="base-model")
    with pytest.raises(MolabError, match="no chat template"):
        render_prompt(tok, Prompt.chat("hi"))
    assert render_prompt(tok, Prompt(text="raw", prefill="!")) == "raw!"


# --- stop tokens ------------------------------------------------------------------------


def test_stop_token_ids_default_model(tokenizer, default_model_dir):
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(tokenizer) == [im_end]
    # generation_config.json names eos 2 (<|im_end|> too): deduplicated.
    assert stop_token_ids(tokenizer, default_model_dir) == [im_end]


def test_stop_token_ids_reads_int_or_list_from_generation_config(tokenizer, tmp_path):
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 0, im_end]}))
    assert stop_token_ids(tokenizer, tmp_path) == sorted({0, 7, im_end})
    assert stop_token_ids(tokenizer, tmp_path / "generation_config.json") == sorted({0, 7, im_end})
    assert stop_token_ids(tokenizer, {"eos_token_id": 5}) == sorted({5, im_end})
    assert stop_token_ids(tokenizer, SimpleNamespace(eos_token_id=None)) == [im_end]
    assert stop_token_ids(tokenizer, tmp_path / "missing") == [im_end]


def test_stop_token_ids_finds_end_of_turn_tokens_only_when_in_vocab():
    tok = SimpleNamespace(eos_token_id=1, get_vocab=lambda: {"<|eot_id|>": 9, "<end_of_turn>": 4, "a": 3})
    assert stop_token_ids(tok) == [1, 4, 9]
    tok = SimpleNamespace(eos_token_id=None, get_vocab=lambda: {"a": 3})
    assert stop_token_ids(tok) == []


# --- the backend without vLLM -----------------------------------------------------------


def test_missing_vllm_gives_install_hint(monkeypatch):
    from molab.models.generation.vllm_backend import VLLMBackend

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(MolabError, match=r"pip install 'molab\[vllm\]' on a CUDA machine"):
        VLLMBackend(ModelSpec(), VLLMBackendConfig())


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_make_backend_without_vllm_installed():
    from molab.models.generation import make_backend

    with pytest.raises(MolabError, match="the vllm backend needs vLLM"):
        make_backend(VLLMBackendConfig(), ModelSpec())


# --- the backend against a stand-in vllm module -----------------------------------------


class FakeLLM:
    instances: list[FakeLLM] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls = []
        FakeLLM.instances.append(self)

    def generate(self, inputs, params, *, use_tqdm=True, lora_request=None):
        self.calls.append(dict(inputs=inputs, params=params, use_tqdm=use_tqdm, lora_request=lora_request))
        return [
            SimpleNamespace(
                outputs=[
                    SimpleNamespace(
                        text=f"out{i}",
                        token_ids=list(range(i + 1)),
                        finish_reason="length" if i % 2 else "stop",
                    )
                ]
            )
            for i in range(len(inputs))
        ]


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM
    vllm.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, int_id, path: SimpleNamespace(name=name, id=int_id, path=path)
    for name, mod in [("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)]:
        monkeypatch.setitem(sys.modules, name, mod)
    FakeLLM.instances = []
    return FakeLLM


def test_backend_generates_in_order_with_per_prompt_seeds(fake_vllm, default_model_dir, tokenizer):
    from molab.models.generation.vllm_backend import VLLMBackend

    cfg = VLLMBackendConfig(gpu_memory_utilization=0.5, max_model_len=2048)
    backend = VLLMBackend(ModelSpec(dtype="bfloat16"), cfg)
    llm = fake_vllm.instances[0]
    assert llm.kwargs["model"] == str(default_model_dir)
    assert llm.kwargs["dtype"] == "bfloat16"
    assert llm.kwargs["trust_remote_code"] is False
    assert llm.kwargs["gpu_memory_utilization"] == 0.5 and llm.kwargs["max_model_len"] == 2048
    assert "enable_lora" not in llm.kwargs

    prompts = [Prompt.chat("a"), Prompt(text="b", prefill="c"), Prompt.chat("d", prefill="e")]
    sampling = SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=12, seed=5, stop=["###"])
    out = backend.generate(prompts, sampling, progress=False)
    assert [c.text for c in out] == ["out0", "out1", "out2"]
    assert [c.num_tokens for c in out] == [1, 2, 3]
    assert [c.finish_reason for c in out] == ["stop", "length", "stop"]

    call = llm.calls[0]
    assert call["use_tqdm"] is False and call["lora_request"] is None
    expected_ids = [prompt_token_ids(tokenizer, p) for p in prompts]
    assert [i["prompt_token_ids"] for i in call["inputs"]] == expected_ids
    params = call["params"]
    assert [p.seed for p in params] == [5, 6, 7]
    p = params[0]
    assert (p.temperature, p.top_p, p.top_k, p.max_tokens, p.stop) == (0.7, 0.9, -1, 12, ["###"])
    assert p.stop_token_ids == stop_token_ids(tokenizer, default_model_dir)

    params = backend._sampling_params(SamplingConfig(top_k=40, temperature=0), 0)
    assert params.top_k == 40 and params.temperature == 0 and params.stop is None


def test_backend_rejects_empty_prompt_list(fake_vllm):
    from molab.models.generation.vllm_backend import VLLMBackend

    backend = VLLMBackend(ModelSpec(dtype="float16"), VLLMBackendConfig())
    with pytest.raises(MolabError, match="empty"):
        backend.generate([], SamplingConfig())


def test_default_dtype_is_auto(fake_vllm):
    from molab.models.generation.vllm_backend import VLLMBackend

    VLLMBackend(ModelSpec(), VLLMBackendConfig())
    assert fake_vllm.instances[0].kwargs["dtype"] == "auto"


def test_one_adapter_is_a_lora_request(fake_vllm, tmp_path):
    from molab.models.generation.vllm_backend import VLLMBackend

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    backend = VLLMBackend(ModelSpec(adapters=[str(adapter)]), VLLMBackendConfig(max_lora_rank=32))
    llm = fake_vllm.instances[0]
    assert llm.kwargs["enable_lora"] is True and llm.kwargs["max_lora_rank"] == 32
    backend.generate([Prompt(text="x")], SamplingConfig())
    assert llm.calls[0]["lora_request"].path == str(adapter.resolve())


def test_not_an_adapter_dir(fake_vllm, tmp_path):
    from molab.models.generation.vllm_backend import VLLMBackend

    with pytest.raises(MolabError, match="not a PEFT adapter directory"):
        VLLMBackend(ModelSpec(adapters=[str(tmp_path)]), VLLMBackendConfig())


def test_stacked_adapters_need_merge(fake_vllm, tmp_path):
    from molab.models.generation.vllm_backend import VLLMBackend

    spec = ModelSpec(adapters=[str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(MolabError, match="one LoRA per request.*merge_adapters: true"):
        VLLMBackend(spec, VLLMBackendConfig())
    assert not fake_vllm.instances


@pytest.fixture(scope="module")
def tiny_model_with_adapters(tmp_path_factory, default_model_dir):
    """A tiny random Llama with the default tokenizer, and two LoRA adapters for it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tiny")
    base = root / "base"
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(base)
    for f in default_model_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name == "chat_template.jinja":
            shutil.copy(f, base / f.name)
    adapters = []
    for i in range(2):
        model = get_peft_model(
            LlamaForCausalLM.from_pretrained(base),
            LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        )
        model.save_pretrained(root / f"adapter{i}")
        adapters.append(str(root / f"adapter{i}"))
    return base, adapters


def test_stacked_adapters_are_merged_once_and_cached(
    fake_vllm, tiny_model_with_adapters, tmp_path, monkeypatch
):
    import torch
    from transformers import AutoModelForCausalLM

    from molab.models import loading
    from molab.models.generation.vllm_backend import VLLMBackend

    base, adapters = tiny_model_with_adapters
    monkeypatch.setenv("MOLAB_CACHE", str(tmp_path / "cache"))
    spec = ModelSpec(name=str(base), adapters=adapters, merge_adapters=True)
    VLLMBackend(spec, VLLMBackendConfig())
    llm = fake_vllm.instances[0]
    merged = tmp_path / "cache" / "merged"
    (served,) = merged.iterdir()
    assert llm.kwargs["model"] == str(served) and llm.kwargs["tokenizer"] == str(base)
    assert "enable_lora" not in llm.kwargs

    expected = loading.load_model(spec.model_copy(update={"device": "cpu"})).model.state_dict()
    got = AutoModelForCausalLM.from_pretrained(served).state_dict()
    assert all(torch.allclose(got[k], v) for k, v in expected.items())
    base_q = AutoModelForCausalLM.from_pretrained(base).state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.allclose(got["model.layers.0.self_attn.q_proj.weight"], base_q)

    def no_reload(*a, **k):
        raise AssertionError("the merged model should come from the cache")

    monkeypatch.setattr(loading, "load_model", no_reload)
    VLLMBackend(spec, VLLMBackendConfig())
    assert fake_vllm.instances[1].kwargs["model"] == str(served)
    assert [p.name for p in merged.iterdir()] == [served.name]


# --- real vLLM on a GPU -----------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed")
def test_vllm_generates_on_gpu():
    if not _has_cuda():
        pytest.skip("needs a CUDA device")
    from molab.models.generation.vllm_backend import VLLMBackend

    backend = VLLMBackend(ModelSpec(), VLLMBackendConfig(gpu_memory_utilization=0.3, max_model_len=1024))
    prompts = [Prompt.chat("Name a colour."), Prompt.chat("Count to five.", prefill="1,")]
    greedy = SamplingConfig(temperature=0, max_new_tokens=16)
    first = backend.generate(prompts, greedy, progress=False)
    assert len(first) == 2 and all(1 <= c.num_tokens <= 16 for c in first)
    assert [c.text for c in backend.generate(prompts, greedy, progress=False)] == [c.text for c in first]
    sampled = SamplingConfig(temperature=1.0, max_new_tokens=16, seed=3)
    a = backend.generate(prompts, sampled, progress=False)
    b = backend.generate(prompts[:1], sampled, progress=False)
    assert a[0].text == b[0].text
