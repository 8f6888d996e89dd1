"""Bias splits: the built-in ones and YAML files with their errors."""

from __future__ import annotations

import pytest

from molab.catalog.splits import ALL_IDS, BUILTIN, get_split, load_split
from molab.errors import MolabError


def test_paper_split_matches_the_paper():
    paper = BUILTIN["paper"]
    assert paper.test == {17, 19, 29, 48, 51}
    assert len(paper.train) == 47 and paper.train | paper.test == ALL_IDS


def test_english_split_leaves_out_non_english_biases():
    english = get_split("english")
    assert english.test == {29, 38, 42, 48, 51}
    assert not english.train & set(range(16, 25))
    assert 52 in english.train and 1 in english.train and len(english.train) == 38


def test_yaml_split_loads(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train: [1, 2, 3]\ntest: [25]\n")
    split = get_split(str(path))
    assert (split.name, split.train, split.test) == ("mine", {1, 2, 3}, {25})


@pytest.mark.parametrize(
    "text, message",
    [
        ("train: [1, 99]\ntest: [2]\n", "unknown bias ids \\[99\\]"),
        ("train: [1, 2]\ntest: [2]\n", "\\[2\\] are in both train and test"),
        ("train: [1]\ntest: []\n", "test set is empty"),
        ("train: [1]\ntest: [x]\n", "field 'test.0'"),
        ("train: [1]\ntest: [2]\nextra: 1\n", "field 'extra'"),
        ("train: [1\n", "not valid YAML"),
        ("- 1\n", "expected a mapping"),
    ],
)
def test_bad_split_files_name_the_file_and_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MolabError, match=message) as info:
        load_split(path)
    assert str(path) in str(info.value)


def test_unknown_split_name():
    with pytest.raises(MolabError, match="unknown split 'nope'"):
        get_split("nope")
    with pytest.raises(MolabError, match="cannot read split file"):
        get_split("missing.yaml")
