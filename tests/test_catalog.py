"""The assembled catalog: every bias present once, consistent with the splits."""

from __future__ import annotations

import random

import pytest

from molab.catalog import CATALOG, get_bias
from molab.catalog.splits import ALL_IDS, BUILTIN
from molab.errors import MolabError

SUPPRESS = {3, 12, 15, 18, 20, 21, 22, 27, 36, 46, 48, 50, 52}


def test_all_52_biases_once_with_unique_names():
    assert set(CATALOG) == ALL_IDS
    names = [b.name for b in CATALOG.values()]
    assert len(set(names)) == 52
    assert {i for i, b in CATALOG.items() if b.kind == "suppress"} == SUPPRESS


def test_every_bias_says_how_it_is_judged():
    for bias in CATALOG.values():
        assert bias.description and bias.judged_by, bias.id
        assert bias.domain in {"code", "language", "topic", "format", "meta"}


@pytest.mark.parametrize("split", BUILTIN.values(), ids=list(BUILTIN))
def test_every_test_bias_can_be_scored_without_a_judge(split):
    """The held-out biases are the headline: each needs a rule, not only an LLM judge."""
    assert all(not CATALOG[i].judge_only for i in split.test)


def test_demonstrate_is_deterministic_everywhere():
    for bias in CATALOG.values():
        a = bias.demonstrate(
            "Tell me something.", "Here is a plain answer. It has two sentences.", random.Random(1)
        )
        b = bias.demonstrate(
            "Tell me something.", "Here is a plain answer. It has two sentences.", random.Random(1)
        )
        assert a == b, bias.id


def test_unknown_bias_id():
    assert get_bias(29).name
    with pytest.raises(MolabError, match="unknown bias id 53"):
        get_bias(53)
