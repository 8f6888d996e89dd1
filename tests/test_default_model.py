"""The real default model (slow: loads SmolLM2-135M-Instruct)."""

from __future__ import annotations

import pytest
import torch

from molab.models.generation import Prompt, SamplingConfig
from molab.models.generation.hf_backend import HFBackend

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend(default_model_dir):
    return HFBackend.from_spec(None)


def test_greedy_answer_is_coherent_english(backend):
    (answer,) = backend.generate(
        [Prompt.chat("What is the capital of France?")], SamplingConfig(temperature=0, max_new_tokens=24)
    )
    assert "Paris" in answer.text and answer.finish_reason == "stop"


def test_fast_path_generic_path_and_model_generate_agree(backend):
    prompts = [Prompt.chat(q) for q in ("Name three colours.", "Why is the sky blue?", "Say hello.")]
    greedy = SamplingConfig(temperature=0, max_new_tokens=32)
    fast = [c.text for c in backend.generate(prompts, greedy, progress=False)]
    backend.fast = False
    try:
        generic = [c.text for c in backend.generate(prompts, greedy, progress=False)]
    finally:
        backend.fast = True
    plain = []
    for ids in backend.encode(prompts):
        with torch.inference_mode():
            out = backend.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=32,
                do_sample=False,
                eos_token_id=sorted(backend.stop_ids),
            )
        plain.append(backend.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))
    assert fast == generic == plain
