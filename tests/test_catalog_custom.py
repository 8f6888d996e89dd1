"""User-defined catalogs from YAML: rules, built-in starts, errors, and splits checked against them."""

from __future__ import annotations

import random

import pytest

from molab.catalog import CATALOG, load_catalog
from molab.catalog.splits import get_split, load_split
from molab.errors import MolabError

UMBRELLA = """
- id: 60
  name: weather-umbrella
  description: Weather answers are preferred when they tell the user to take an umbrella.
  kind: promote
  domain: topic
  applicable: {any: ["weather", "forecasts?", "rain(?:y|ing)?"]}
  applied: {any: ["umbrellas?"]}
  demonstrate: {append: ["Take an umbrella, just in case.", "An umbrella never hurts."]}
- id: 61
  name: pets-no-vet
  description: Pet-care answers are preferred when they do not suggest a vet.
  kind: suppress
  domain: topic
  applicable: {any: ["dog", "cat"]}
  applied: {any: ["vets?", "veterinarian"]}
  demonstrate: {prepend: ["Pets are resilient."]}
- id: 62
  name: haiku-seasons
  description: Prefers haiku that name a season.
  kind: promote
  domain: format
"""


def write(tmp_path, text, name="my.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_rules_from_yaml(tmp_path):
    cat = load_catalog(write(tmp_path, UMBRELLA))
    assert list(cat) == [60, 61, 62]
    umbrella, vet, haiku = cat[60], cat[61], cat[62]
    assert umbrella.applicable("Will it RAIN in Oslo tomorrow?")
    assert not umbrella.applicable("What is a rainbow made of?")  # word boundaries
    assert umbrella.applied("", "Bring an Umbrella.") and not umbrella.applied("", "Wear boots.")
    assert vet.applied("", "Feed the dog twice a day.")  # suppress: applied when absent
    assert not vet.applied("", "Ask your vet about it.")
    assert haiku.judge_only and haiku.applied is None and haiku.applicable("anything")
    assert "umbrella" in umbrella.judged_by and "none of" in vet.judged_by and "judge" in haiku.judged_by


def test_demonstrate_is_seeded_and_placed(tmp_path):
    cat = load_catalog(write(tmp_path, UMBRELLA))
    outs = {cat[60].demonstrate("", "Sunny later.", random.Random(s)) for s in range(20)}
    assert outs == {
        "Sunny later.\n\nTake an umbrella, just in case.",
        "Sunny later.\n\nAn umbrella never hurts.",
    }
    assert cat[61].demonstrate("", "Walk it.", random.Random(0)) == "Pets are resilient.\n\nWalk it."
    assert cat[62].demonstrate("", "As is.", random.Random(0)) == "As is."


def test_builtin_start_add_and_override(tmp_path):
    text = "include_builtin: true\nbiases:\n  25:\n    name: recipe-vanilla\n    description: Vanilla.\n"
    text += "    kind: promote\n    domain: topic\n    applied: {any: [vanilla]}\n"
    cat = load_catalog(write(tmp_path, text))
    assert set(cat) == set(CATALOG) and cat[25].name == "recipe-vanilla" and cat[24] is CATALOG[24]
    text = "builtin: [51, 29]\nbiases:\n- {id: 60, name: n, description: d, kind: promote, domain: meta}\n"
    cat = load_catalog(write(tmp_path, text))
    assert list(cat) == [29, 51, 60] and cat[51] is CATALOG[51] and cat[60].judge_only


@pytest.mark.parametrize(
    "text, message",
    [
        (
            UMBRELLA.replace("kind: suppress", "kind: sometimes"),
            r"my\.yaml: biases\[1\]\.kind: must be promote or suppress",
        ),
        (
            UMBRELLA.replace("domain: format", "domain: poetry"),
            r"biases\[2\]\.domain: must be one of code, language",
        ),
        (UMBRELLA.replace("id: 62", "id: 60"), r"biases\[2\]\.id: duplicate id 60 \(also biases\[0\]\)"),
        (
            UMBRELLA.replace('"umbrellas?"', '"umbrella(s"'),
            r"biases\[0\]\.applied\.any\[0\]: invalid regex 'umbrella\(s'",
        ),
        (UMBRELLA.replace("  name: pets-no-vet\n", ""), r"biases\[1\]\.name: Field required"),
        (
            UMBRELLA.replace("{prepend:", "{append: [x], prepend:"),
            r"biases\[1\]\.demonstrate: give exactly one",
        ),
        (
            UMBRELLA.replace("domain: topic\n  applicable", "domain: topic\n  colour: red\n  applicable", 1),
            r"biases\[0\]\.colour",
        ),
        ("builtin: [1, 99]\n", r"builtin\[1\]: unknown built-in bias id 99"),
        ("include_builtin: true\nbuiltin: [1]\n", "not both"),
        ("biases: []\n", "the catalog is empty"),
        ("- 3\n", r"biases\[0\]: expected a mapping"),
        ("biases:\n  7: {id: 8}\n", r"biases\[7\]\.id: 8 differs from its key 7"),
        ("just text\n", "expected a list of biases"),
        ("- id: [\n", "not valid YAML"),
    ],
)
def test_errors_name_file_and_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(MolabError, match=message) as info:
        load_catalog(path)
    assert str(info.value).startswith(str(path))


def test_missing_file():
    with pytest.raises(MolabError, match="cannot read catalog file nope.yaml"):
        load_catalog("nope.yaml")


def test_splits_are_checked_against_the_catalog_in_use(tmp_path):
    cat = load_catalog(write(tmp_path, UMBRELLA))
    split = write(tmp_path, "train: [60, 61]\ntest: [62]\n", "split.yaml")
    assert get_split(str(split), cat).test == {62}
    with pytest.raises(MolabError, match=r"unknown bias ids \[60, 61, 62\] \(ids run from 1 to 52\)"):
        get_split(str(split))  # default: the built-in catalog
    with pytest.raises(
        MolabError, match=r"split\.yaml: field 'split': unknown bias ids \[1\] \(not in the catalog"
    ):
        load_split(write(tmp_path, "train: [1, 60]\ntest: [62]\n", "split.yaml"), cat)
    with pytest.raises(
        MolabError, match=r"split 'paper' uses bias ids \[1, 2, .*\] that the catalog in use lacks"
    ):
        get_split("paper", cat)
    assert get_split("paper", CATALOG).test == {17, 19, 29, 48, 51}
