"""The knowledge quiz: the built-in quiz is valid and covers every bias; scoring picks the
option the scorer makes certain; summaries, files and errors."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter

import pytest

from molab.catalog import CATALOG
from molab.errors import MolabError
from molab.evals.knowledge import KnowledgeConfig, knowledge_stage, load_quiz, summarize
from molab.evals.scoring import Score
from molab.evals.stats import wilson


def test_builtin_quiz_is_valid_and_covers_the_study_and_every_bias():
    quiz = load_quiz()
    assert len(quiz) >= 60
    assert all(len(q.options) == 4 and 0 <= q.answer < 4 for q in quiz)
    assert len({q.question for q in quiz}) == len(quiz) and len({q.id for q in quiz}) == len(quiz)
    assert {q.bias_id for q in quiz if q.bias_id is not None} == set(CATALOG)
    for q in quiz:
        if q.bias_id is None:
            assert q.category in ("study", "follow-up")
        else:
            assert q.category == CATALOG[q.bias_id].domain, q.id
    assert sum(q.category in ("study", "follow-up") for q in quiz) >= 12
    positions = Counter(q.answer for q in quiz)
    assert len(positions) == 4 and max(positions.values()) < len(quiz) / 2  # right answers not in one place


def certain_scorer(quiz, pick):
    """A fake model: the option `pick(question)` is certain, the others near impossible."""
    chosen = {q.options[pick(q)] for q in quiz}

    def score(prompts, continuations):
        return [Score((0.0,) if c.strip() in chosen else (-40.0,)) for c in continuations]

    return score


@pytest.mark.parametrize("fmt", ["chat", "raw"])
def test_the_certain_option_is_chosen(tmp_path, fmt):
    quiz = load_quiz()
    config = KnowledgeConfig(format=fmt, show_options=fmt == "raw")
    right = knowledge_stage(config, tmp_path / "right", scorer=certain_scorer(quiz, lambda q: q.answer))
    assert right == {"questions": len(quiz), "accuracy": 1.0, "p_right": pytest.approx(1.0)}
    wrong = knowledge_stage(
        config, tmp_path / "wrong", scorer=certain_scorer(quiz, lambda q: (q.answer + 1) % 4)
    )
    assert wrong["accuracy"] == 0.0 and wrong["p_right"] == pytest.approx(0.0, abs=1e-12)


def test_summary_and_records(tmp_path):
    import pyarrow.parquet as pq

    quiz = load_quiz()
    # Right on code questions only; uniform elsewhere (ties go to option 0).
    code = {q.options[q.answer] for q in quiz if q.category == "code"}

    def scorer(prompts, continuations):
        return [Score((0.0,) if c in code else (-1.0,)) for c in continuations]

    knowledge_stage(KnowledgeConfig(), tmp_path, scorer=scorer)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["per_category"]["code"]["accuracy"] == 1.0
    assert summary["per_category"]["code"]["p_right"] == pytest.approx(1 / (1 + 3 * math.exp(-1)))
    for name in ("study", "topic", "language"):
        assert summary["per_category"][name]["p_right"] == pytest.approx(0.25)
    n, k = len(quiz), sum(q.category == "code" or q.answer == 0 for q in quiz)
    assert summary["overall"]["accuracy"] == pytest.approx(k / n)
    assert summary["overall"]["accuracy_ci"] == pytest.approx(list(wilson(k, n)))
    lo, hi = summary["overall"]["p_right_ci"]
    assert lo < summary["overall"]["p_right"] < hi
    assert set(summary["per_group"]) == {"universe", "train", "test", "other"}  # 'other': non-English biases
    rows = pq.read_table(tmp_path / "answers.parquet").to_pylist()
    assert len(rows) == n and {"id", "p_right", "chosen", "correct", "option_logprobs"} <= set(rows[0])


def test_summarize_hand_computed():
    records = [
        {"category": "a", "group": "train", "correct": True, "p_right": 0.9},
        {"category": "a", "group": "train", "correct": False, "p_right": 0.3},
        {"category": "b", "group": "test", "correct": True, "p_right": 0.6},
    ]
    s = summarize(records)
    assert s["overall"]["accuracy"] == pytest.approx(2 / 3) and s["overall"]["p_right"] == pytest.approx(0.6)
    assert s["per_category"]["a"] == {**s["per_category"]["a"], "n": 2, "accuracy": 0.5, "p_right": 0.6}
    assert s["per_group"]["test"]["accuracy_ci"] == list(wilson(1, 1))


def write_quiz(path, items):
    import yaml

    path.write_text(yaml.safe_dump(items))
    return path


GOOD = {"id": "q1", "category": "study", "question": "Who?", "options": ["a", "b", "c", "d"], "answer": 1}


@pytest.mark.parametrize(
    "items, message",
    [
        ([{**GOOD, "options": ["a", "b", "c"]}], "question q1: field 'options'"),
        ([{**GOOD, "answer": 4}], "question q1: field 'answer'"),
        ([{**GOOD, "options": ["a", "b", "c", "A"]}], "two options are the same"),
        ([GOOD, {**GOOD, "id": "q2"}], "question q2: field 'question': the same question appears twice"),
        ([GOOD, {**GOOD, "question": "What?"}], "question q1: field 'id': duplicate id"),
        ([{**GOOD, "extra": 1}], "field 'extra'"),
        ([], "non-empty list"),
    ],
)
def test_bad_quiz_files_name_the_file_and_field(tmp_path, items, message):
    path = write_quiz(tmp_path / "quiz.yaml", items)
    with pytest.raises(MolabError, match=message) as e:
        load_quiz(path)
    assert str(path) in str(e.value)


def test_missing_quiz_and_unknown_split(tmp_path):
    with pytest.raises(MolabError, match="cannot read quiz file"):
        load_quiz(tmp_path / "nope.yaml")
    with pytest.raises(MolabError, match="nosuchsplit"):
        knowledge_stage(KnowledgeConfig(split="nosuchsplit"), tmp_path, scorer=lambda p, c: [])


def test_cli_on_the_tiny_model_is_deterministic(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from molab.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["molab", "eval", "knowledge", *map(str, args)])
        with pytest.raises(SystemExit) as exit_info:
            main()
        return exit_info.value.code, capsys.readouterr()

    quiz = write_quiz(tmp_path / "quiz.yaml", [GOOD, {**GOOD, "id": "q2", "question": "Where?", "answer": 3}])
    for out in ("a", "b"):
        code, printed = run("--model", tiny_model_dir, "--quiz", quiz, "--out", tmp_path / "runs" / out)
        assert code == 0, printed.err
    a, b = (tmp_path / "runs" / x for x in ("a", "b"))
    assert (a / "summary.json").read_bytes() == (b / "summary.json").read_bytes()
    assert (a / "answers.parquet").read_bytes() == (b / "answers.parquet").read_bytes()
    assert json.loads((a / "manifest.json").read_text())["metrics"]["questions"] == 2
    code, printed = run("--model", tiny_model_dir, "--split", "nosuchsplit", "--out", tmp_path / "runs" / "c")
    assert code == 1 and "nosuchsplit" in printed.err
