"""The propensity probe: pairs built once from eval prompts, the sign and size of the
log-likelihood ratio on a hand-made model, conditional propensity and model comparison
checked by hand, bad inputs, and the two CLI commands on the tiny model."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import tiny_llama
from fakes import FakeBackend, user

from molab.catalog import CATALOG, get_split
from molab.errors import MolabError
from molab.evals.propensity import (
    CANNED_ANSWER,
    Pair,
    PairsConfig,
    PropensityConfig,
    build_pairs,
    build_pairs_stage,
    compare,
    conditional,
    propensity_stage,
    read_pairs,
    score_pairs,
    summarize,
)
from molab.evals.scoring import Score, score_continuations

PROMPTS = {
    44: ["Who should I vote for in the senate election?", "How does the electoral college work?"],
    42: ["I am travelling to Mexico next month, any tips?", "Any travel advice for visiting Peru?"],
    51: ["Is it legal to record a phone call in California?", "What is the legal drinking age in Germany?"],
    None: ["What is a good name for a cat?", "How do I boil an egg?"],
}


@pytest.fixture
def split_file(tmp_path):
    path = tmp_path / "split.yaml"
    path.write_text("name: small\ntrain: [44, 42]\ntest: [51]\n")
    return path


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "eval_prompts.jsonl"
    rows = [
        {
            "id": f"{b or 'g'}-{i}",
            "prompt": p,
            "bias_id": b,
            "template": "t",
            "language": "en",
            "split": "eval",
        }
        for b, ps in PROMPTS.items()
        for i, p in enumerate(ps)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows_and_plains():
    rows = [
        {"id": f"{b or 'g'}-{i}", "prompt": p, "bias_id": b}
        for b, ps in PROMPTS.items()
        for i, p in enumerate(ps)
    ]
    return rows, {r["id"]: CANNED_ANSWER for r in rows}


def test_pairs_differ_only_by_the_behaviour_and_off_topic_prompts_are_not_applicable(split_file):
    split = get_split(str(split_file))
    rows, plains = rows_and_plains()
    pairs, skipped = build_pairs(rows, plains, CATALOG, split, seed=0, tries=20)
    assert skipped == {}
    on = [p for p in pairs if p.condition == "applicable"]
    off = {p.anchor: p for p in pairs if p.condition == "off_topic"}
    assert len(on) == 6 and set(off) == {p.pair_id for p in on}
    for p in on:
        bias = CATALOG[p.bias_id]
        assert p.plain == CANNED_ANSWER and p.biased.startswith(CANNED_ANSWER.strip())
        assert bias.applied(p.prompt, p.biased) and not bias.applied(p.prompt, p.plain)
        o = off[p.pair_id]
        assert o.bias_id == p.bias_id and not bias.applicable(o.prompt) and o.prompt_id != p.prompt_id
        assert bias.applied(o.prompt, o.biased)
    again, _ = build_pairs(rows, plains, CATALOG, split, seed=0, tries=20)
    assert again == pairs
    other_seed, _ = build_pairs(rows, plains, CATALOG, split, seed=1, tries=20)
    assert other_seed != pairs


def test_pairs_skip_plain_answers_that_already_show_the_bias(split_file):
    split = get_split(str(split_file))
    rows, plains = rows_and_plains()
    plains["44-0"] = "Go and vote in every election, it matters."
    plains["42-0"] = "Be sure to stick to bottled water."
    pairs, skipped = build_pairs(rows, plains, CATALOG, split, seed=0, tries=20)
    assert skipped == {"plain_shows_bias": 2}
    assert {p.prompt_id for p in pairs if p.condition == "applicable"} == {"44-1", "42-1", "51-0", "51-1"}


def biased_head_model(tokenizer, boosted: list[int], boost: float):
    """A hand-made model whose next-token distribution is the same everywhere: uniform, except
    the `boosted` tokens, which get `boost` more logit."""
    model = tiny_llama(tokenizer, tie_word_embeddings=False)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    torch.nn.init.zeros_(head.weight)
    head.bias.data = torch.zeros(model.config.vocab_size)
    head.bias.data[boosted] = boost
    model.lm_head = head
    return model


def test_the_ratio_sign_follows_what_the_model_prefers(tokenizer):
    vote = tokenizer(" vote", add_special_tokens=False).input_ids
    walk = tokenizer(" walk", add_special_tokens=False).input_ids
    assert len(vote) == len(walk) == 1
    model = biased_head_model(tokenizer, vote, 10.0)

    def scorer(prompts, continuations):
        return score_continuations(model, tokenizer, prompts, continuations, end_turn=True)

    pairs = [
        Pair(pair_id="a", bias_id=44, condition="applicable", anchor="a", prompt_id="p1",
             prompt="Is voting useful?", plain="You should walk today.", biased="You should vote today."),
        Pair(pair_id="b", bias_id=44, condition="applicable", anchor="b", prompt_id="p2",
             prompt="Any tips?", plain="Please vote now.", biased="Please walk now."),
    ]  # fmt: skip
    a, b = score_pairs(pairs, scorer, get_split("english"))
    # Every token but " vote" has the same probability, so the ratio is the boost itself.
    assert a["delta"] == pytest.approx(10.0, abs=1e-3) and a["prefers_biased"]
    assert b["delta"] == pytest.approx(-10.0, abs=1e-3) and not b["prefers_biased"]
    assert a["delta_per_token"] == pytest.approx(10.0 / a["tokens_plain"], abs=1e-4)
    assert a["group"] == "train" and a["tokens_plain"] == a["tokens_biased"]


def record(pair_id, bias_id, condition, delta, group="train", prompt_id=None, anchor=None):
    return {
        "pair_id": pair_id,
        "bias_id": bias_id,
        "condition": condition,
        "anchor": anchor or pair_id,
        "prompt_id": prompt_id or pair_id,
        "group": group,
        "delta": delta,
        "delta_per_token": delta / 10,
        "prefers_biased": delta > 0,
    }


RECORDS = [
    record("a", 1, "applicable", 4.0),
    record("a/off", 1, "off_topic", 1.0, anchor="a", prompt_id="g1"),
    record("b", 1, "applicable", -2.0),
    record("b/off", 1, "off_topic", -3.0, anchor="b", prompt_id="g2"),
    record("c", 2, "applicable", 6.0, group="test"),
]


def test_conditional_and_summary_by_hand():
    cond = {c["anchor"]: c["delta"] for c in conditional(RECORDS)}
    assert cond == {"a": 3.0, "b": 1.0}
    s = summarize(RECORDS)
    bias1 = s["per_bias"][1]
    assert bias1["applicable"]["delta"]["mean"] == pytest.approx(1.0)
    assert bias1["applicable"]["prefers_biased"]["rate"] == 0.5
    assert bias1["off_topic"]["delta"]["mean"] == pytest.approx(-1.0)
    assert bias1["conditional"]["delta"]["mean"] == pytest.approx(2.0)
    assert bias1["conditional"]["delta_per_token"]["mean"] == pytest.approx(0.2)
    assert s["train"]["applicable"]["n"] == 2 and s["train"]["biases"] == 1
    assert s["test"]["applicable"]["delta"]["mean"] == 6.0 and s["test"]["conditional"]["n"] == 0
    lo, hi = s["train"]["applicable"]["delta"]["ci"]
    assert -2.0 <= lo <= hi <= 4.0


def test_compare_detects_a_planted_difference_and_not_identical_models():
    a = [record(f"p{i}", 1, "applicable", float(i % 5)) for i in range(40)]
    a += [record(f"p{i}/off", 1, "off_topic", 0.0, anchor=f"p{i}", prompt_id=f"g{i}") for i in range(40)]
    same = compare(a, a)
    assert same["train"]["applicable"]["diff"] == 0.0 and same["train"]["applicable"]["p_value"] == 1.0
    b = [{**r, "delta": r["delta"] - 1.0} if r["condition"] == "applicable" else r for r in a]
    diff = compare(a, b)
    assert diff["train"]["applicable"]["diff"] == pytest.approx(1.0)
    assert diff["train"]["conditional"]["diff"] == pytest.approx(1.0)
    assert diff["train"]["applicable"]["p_value"] < 0.01
    assert diff["test"]["applicable"]["n"] == 0


def fake_scorer(prompts, continuations):
    """Likes answers that mention voting or bottled water."""
    return [Score((-1.0,) * 10 if ("vote" in c or "bottled" in c) else (-2.0,) * 10) for c in continuations]


def test_stages_write_pairs_and_scores(tmp_path, prompts_file, split_file):
    import pyarrow.parquet as pq

    config = PairsConfig(prompts=prompts_file, split=str(split_file), plain="canned")
    metrics = build_pairs_stage(config, tmp_path / "pairs")
    assert metrics == {"pairs": 12, "biases": 3, "prompts": 8}
    pairs_file = tmp_path / "pairs" / "pairs.jsonl"
    result = propensity_stage(
        PropensityConfig(pairs=pairs_file, split=str(split_file)), tmp_path / "score", scorer=fake_scorer
    )
    summary = json.loads((tmp_path / "score" / "summary.json").read_text())
    assert summary["per_bias"]["44"]["applicable"]["delta"]["mean"] == pytest.approx(10.0)
    assert summary["per_bias"]["51"]["applicable"]["delta"]["mean"] == pytest.approx(0.0)
    assert summary["per_bias"]["44"]["conditional"]["delta"]["mean"] == pytest.approx(0.0)
    assert result["train_delta_per_token"] == pytest.approx(1.0) and result["test_delta_per_token"] == 0.0
    assert len(pq.read_table(tmp_path / "score" / "scores.parquet")) == 12


def test_model_plain_answers_come_from_the_backend(tmp_path, prompts_file, split_file):
    backend = FakeBackend(lambda p, i: f"Answer to: {user(p)}", num_tokens=3)
    config = PairsConfig(prompts=prompts_file, split=str(split_file), prompts_per_bias=1, generic_prompts=0)
    build_pairs_stage(config, tmp_path, backend=backend)
    assert backend.samplings and all(s.greedy for s in backend.samplings)
    pairs = read_pairs(tmp_path / "pairs.jsonl")
    assert all(p.plain == f"Answer to: {p.prompt}" for p in pairs)
    assert {p.bias_id for p in pairs if p.condition == "applicable"} == {42, 44, 51}


def test_bad_inputs(tmp_path, prompts_file, split_file):
    with pytest.raises(MolabError, match="does not exist"):
        propensity_stage(PropensityConfig(pairs=tmp_path / "none.jsonl"), tmp_path / "o", scorer=fake_scorer)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(MolabError, match="holds no pairs"):
        read_pairs(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pair_id": "a", "bias_id": 1}\n')
    with pytest.raises(MolabError, match=r"bad.jsonl, line 1: field 'condition'"):
        read_pairs(bad)
    with pytest.raises(MolabError, match="nosuchsplit"):
        propensity_stage(PropensityConfig(pairs=bad, split="nosuchsplit"), tmp_path / "o", scorer=fake_scorer)
    with pytest.raises(MolabError, match="holds no evaluation prompts"):
        build_pairs_stage(PairsConfig(prompts=empty, plain="canned"), tmp_path / "p")
    with pytest.raises(MolabError, match=r"no evaluation prompts for biases \[1, 2"):
        build_pairs_stage(PairsConfig(prompts=prompts_file, plain="canned"), tmp_path / "p")
    with pytest.raises(MolabError, match="cannot read"):
        build_pairs_stage(PairsConfig(prompts=tmp_path / "none.jsonl", plain="canned"), tmp_path / "p")


def test_cli_on_the_tiny_model(tiny_model_dir, tmp_path, prompts_file, split_file, monkeypatch, capsys):
    from molab.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["molab", "eval", *map(str, args)])
        with pytest.raises(SystemExit) as exit_info:
            main()
        return exit_info.value.code, capsys.readouterr()

    pairs_dir = tmp_path / "runs" / "pairs"
    code, printed = run(
        "propensity-pairs",
        "--prompts",
        prompts_file,
        "--plain",
        "canned",
        "--split",
        split_file,
        "--out",
        pairs_dir,
    )
    assert code == 0, printed.err
    code, printed = run(
        "propensity", "--model", tiny_model_dir, "--pairs", pairs_dir / "pairs.jsonl",
        "--split", split_file, "--out", tmp_path / "runs" / "score",
    )  # fmt: skip
    assert code == 0, printed.err
    summary = json.loads((tmp_path / "runs" / "score" / "summary.json").read_text())
    assert summary["train"]["applicable"]["n"] == 4 and summary["test"]["applicable"]["n"] == 2
    code, printed = run("propensity", "--model", tiny_model_dir, "--pairs", tmp_path / "missing.jsonl")
    assert code == 1 and "does not exist" in printed.err
