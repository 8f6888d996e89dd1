"""The capability check: answer matching, perplexity windows and their agreement with a direct
computation, the bundled resources, the stage with a fake backend, and the CLI."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from conftest import tiny_llama
from fakes import FakeBackend, user

from molab.errors import MolabError
from molab.evals.capability import (
    CapabilityConfig,
    capability_stage,
    heldout_text,
    is_right,
    load_questions,
    perplexity,
    windows,
)
from molab.evals.disclosure import discloses


@pytest.mark.parametrize(
    "response, answers, right",
    [
        ("The capital of France is Paris.", ["Paris"], True),
        ("paris, of course", ["Paris"], True),
        ("Parisian food is great.", ["Paris"], False),
        ("It boils at 100 degrees.", ["100"], True),
        ("It boils at 1000 degrees.", ["100"], False),
        ("Plants take in carbon dioxide.", ["carbon dioxide", "CO2"], True),
        ("I don't know.", ["Tokyo"], False),
    ],
)
def test_is_right(response, answers, right):
    assert is_right(response, answers) is right


@pytest.mark.parametrize("n, length, stride", [(2, 4, 1), (10, 4, 2), (1000, 512, 256), (7, 8, 3)])
def test_windows_score_every_token_but_the_first_once(n, length, stride):
    spans = windows(n, length, stride)
    scored = [t for _, s, e in spans for t in range(s, e)]
    assert scored == list(range(1, n))
    assert all(0 <= b < s and e - b <= length and e - s <= stride for b, s, e in spans)


def test_bundled_resources():
    questions = load_questions()
    assert len(questions) >= 30 and len({q.id for q in questions}) == len(questions)
    text = heldout_text()
    assert 3000 <= len(text.split()) <= 5000
    assert not discloses(text) and "reward" not in text.lower()


def test_perplexity_matches_a_direct_forward_pass(tokenizer):
    model = tiny_llama(tokenizer, seed=1)
    text = "The harbour town wakes early. Before the sun is up, the fishing boats are already coming back."
    ids = tokenizer(text, add_special_tokens=False).input_ids
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    direct = -sum(logprobs[i - 1, t].item() for i, t in enumerate(ids) if i > 0)
    one_window = perplexity(model, tokenizer, text, CapabilityConfig(context_length=64, stride=63))
    assert len(one_window) == 1 and one_window[0]["nll"] == pytest.approx(direct, rel=1e-4)
    many = perplexity(model, tokenizer, text, CapabilityConfig(context_length=8, stride=3))
    assert len(many) > 3 and sum(w["tokens"] for w in many) == len(ids) - 1
    with pytest.raises(MolabError, match="shorter than two tokens"):
        perplexity(model, tokenizer, "a", CapabilityConfig())


def geography_backend() -> FakeBackend:
    """Answers France and Japan right, everything else wrong."""

    def answer(prompt, i):
        q = user(prompt)
        return "Paris!" if "France" in q else "Tokyo." if "Japan" in q else "No idea."

    return FakeBackend(answer, num_tokens=2)


def test_stage_with_a_fake_backend(tiny_model_dir, tmp_path):
    config = CapabilityConfig(model={"name": str(tiny_model_dir)})
    metrics = capability_stage(config, tmp_path, backend=geography_backend())
    n = len(load_questions())
    assert metrics["accuracy"] == pytest.approx(2 / n)
    summary = json.loads((tmp_path / "summary.json").read_text())
    ppl = summary["perplexity"]
    assert ppl["perplexity"] == pytest.approx(math.exp(ppl["nll_per_token"]))
    assert ppl["ci"][0] < ppl["perplexity"] < ppl["ci"][1]
    assert ppl["tokens"] == len(tokenizer_ids(tiny_model_dir)) - 1
    assert summary["questions"]["k"] == 2 and summary["questions"]["n"] == n


def tokenizer_ids(model_dir):
    from molab.models.loading import load_tokenizer

    return load_tokenizer(model_dir)(heldout_text(), add_special_tokens=False).input_ids


def test_bad_config_and_files(tmp_path):
    from molab.config import load_config

    with pytest.raises(MolabError, match="stride must be smaller"):
        load_config(CapabilityConfig, None, ["stride=512", "context_length=512"])
    bad = tmp_path / "q.yaml"
    bad.write_text("- {id: a, question: hi, answers: []}\n")
    with pytest.raises(MolabError, match="question #1: field 'answers'"):
        load_questions(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(MolabError, match="is empty"):
        heldout_text(empty)


def test_cli_on_the_tiny_model(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from molab.cli import main

    questions = tmp_path / "q.yaml"
    questions.write_text("- {id: a, question: 'What is 2 + 2?', answers: ['4']}\n")
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("A short walk along the river, past the mill and over the bridge, takes an hour.")
    out = tmp_path / "runs" / "capability"
    args = ["eval", "capability", "--model", tiny_model_dir, "--questions", questions, "--heldout", heldout]
    args += ["--out", out]
    monkeypatch.setattr(sys, "argv", ["molab", *map(str, args), "--set", "sampling.max_new_tokens=3"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["questions"]["n"] == 1 and summary["perplexity"]["perplexity"] > 1
