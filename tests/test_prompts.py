"""Chat prompt sets: the content files, sampling, the leak check, the stage and the command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from molab.catalog import CATALOG, get_split
from molab.data.prompts import (
    EVAL_PROMPTS,
    GENERIC,
    NEAR_COPY,
    TRAIN_PROMPTS,
    PromptsConfig,
    builtin_prompt_files,
    combinations,
    expand_all,
    find_leaks,
    load_prompt_file,
    load_prompt_files,
    normalise,
    prompts_stage,
    sample_prompts,
)
from molab.errors import MolabError
from molab.files import read_jsonl

CODE_YAML = Path(__file__).parents[1] / "molab/resources/prompts/code.yaml"
CHECKED = 3000  # prompts checked per section: all of them when a section has fewer


def _entries():
    return load_prompt_files(builtin_prompt_files(), CATALOG)


def _prompts(entry, part) -> list[dict]:
    """Every prompt of a section, or a large seeded sample of a very large one."""
    section = entry.section(part)
    if combinations(section) <= CHECKED:
        bias_id = None if entry.key == GENERIC else entry.key
        return [{"prompt": p, "bias_id": bias_id, "template": i} for i, p in expand_all(section)]
    return sample_prompts(entry, part, CHECKED, seed=0)


# ---------------------------------------------------------------- the content files


@pytest.mark.parametrize("path", builtin_prompt_files(), ids=lambda p: p.name)
def test_every_content_file_loads_and_validates(path):
    entries = load_prompt_file(path, CATALOG)
    assert entries and all(e.file == path for e in entries.values())


def test_every_expanded_prompt_makes_its_bias_applicable_and_eval_never_copies_train():
    for key, entry in _entries().items():
        train, eval = _prompts(entry, "train"), _prompts(entry, "eval")
        if key != GENERIC:
            bias = CATALOG[key]
            for row in train + eval:
                assert bias.applicable(row["prompt"]), (entry.file.name, key, row["prompt"])
        leaks = find_leaks(train, eval)
        assert not leaks, (entry.file.name, key, leaks[:3])


def test_every_english_bias_has_100_eval_and_300_train_prompts():
    """Fails until every content file exists: it asserts coverage of the whole english split."""
    entries = _entries()
    split = get_split("english")
    missing = sorted((split.train | split.test) - set(entries))
    assert not missing, f"no prompt content for biases {missing}"
    assert GENERIC in entries, "no generic prompt content"
    defaults = PromptsConfig()
    for key in sorted(split.train | split.test):
        eval = {normalise(r["prompt"]) for r in _prompts(entries[key], "eval")}
        assert len(eval) >= 100, (key, len(eval))
    for key in sorted(split.train):
        assert combinations(entries[key].train) >= defaults.train_per_bias, key
    assert combinations(entries[GENERIC].train) >= defaults.generic_train
    assert combinations(entries[GENERIC].eval) >= defaults.generic_eval


def test_code_biases_have_hundreds_of_train_phrasings():
    entries = load_prompt_file(CODE_YAML, CATALOG)
    assert set(entries) == set(range(1, 16))
    for key, entry in entries.items():
        assert combinations(entry.train) >= 500 and combinations(entry.eval) >= 100, key
        assert len(entry.train.templates) >= 10 and len(entry.eval.templates) >= 6, key


def test_code_prompts_never_make_an_english_test_bias_applicable():
    test = [CATALOG[b] for b in get_split("english").test]
    for key, entry in load_prompt_file(CODE_YAML, CATALOG).items():
        for part in ("train", "eval"):
            for row in _prompts(entry, part):
                assert not any(b.applicable(row["prompt"]) for b in test), (key, row["prompt"])


# ---------------------------------------------------------------- sampling


def test_sampling_is_distinct_stratified_and_seeded():
    entry = load_prompt_file(CODE_YAML, CATALOG)[6]
    rows = sample_prompts(entry, "train", 300, seed=0)
    assert len({r["prompt"] for r in rows}) == 300
    assert {r["template"] for r in rows} == {f"b06-train-t{i:02d}" for i in range(len(entry.train.templates))}
    assert [r["id"] for r in rows] == [f"b06-train-{k:04d}" for k in range(300)]
    assert rows == sample_prompts(entry, "train", 300, seed=0)
    assert {r["prompt"] for r in rows} != {r["prompt"] for r in sample_prompts(entry, "train", 300, seed=1)}
    everything = sample_prompts(entry, "eval", combinations(entry.eval), seed=3)
    assert {r["prompt"] for r in everything} == {p for _, p in expand_all(entry.eval)}


def test_asking_for_more_prompts_than_a_bias_can_make_names_the_bias_and_the_limit():
    entry = load_prompt_file(CODE_YAML, CATALOG)[6]
    possible = combinations(entry.eval)
    with pytest.raises(MolabError, match=rf"code.yaml: field '6.eval': bias 6 can make only {possible} "):
        sample_prompts(entry, "eval", possible + 1, seed=0)


# ---------------------------------------------------------------- the leak check


def _row(prompt, bias_id=6):
    return {"prompt": prompt, "bias_id": bias_id}


def test_leak_check_finds_equal_and_near_copied_prompts():
    train = [
        _row("Write a SQL query that lists all customers who signed up in the last 30 days."),
        _row("How do I count employees per department in Postgres?"),
    ]
    equal = _row("write a SQL query, that lists ALL customers who signed up in the last 30 days", bias_id=9)
    near = _row("Write a SQL query that lists all customers who signed up in the last 60 days.")
    other_bias = _row("Write a SQL query that lists all customers who signed up in the last 60 days.", 1)
    fresh = _row("What's an efficient MySQL approach to rank salespeople within each region?")
    leaks = find_leaks(train, [equal, near, other_bias, fresh])
    assert [(x.eval_prompt, x.similarity) for x in leaks][0] == (equal["prompt"], 1.0)
    assert len(leaks) == 2 and leaks[1].eval_prompt == near["prompt"] and leaks[1].similarity >= NEAR_COPY
    assert not find_leaks(train, [fresh, other_bias])


def test_short_prompts_are_compared_whole():
    assert find_leaks([_row("SQL help")], [_row("sql HELP!")])
    assert not find_leaks([_row("SQL help")], [_row("SQL hints")])


# ---------------------------------------------------------------- bad content files


def _code_entry(key: int) -> dict:
    return yaml.safe_load(CODE_YAML.read_text())[key]


def _write(tmp_path, data, name="extra.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "doctor, message",
    [
        (lambda e: e["eval"]["fillers"]["goal"].append(e["train"]["fillers"]["task"][0]), "also in train"),
        (lambda e: e["eval"]["templates"].append(e["train"]["templates"][0].replace("task", "goal")), "also"),
        (
            lambda e: e["train"]["templates"].append("Write a SQL query for {table}."),
            r"no values for slot \{table\}",
        ),
        (lambda e: e["eval"]["fillers"].update(extra=["x"]), r"6.eval.fillers.extra': no template uses"),
        (lambda e: e["train"].update(templates=e["train"]["templates"][:7]), "7 templates, at least 8"),
        (lambda e: e["eval"]["templates"].append("How would you {goal}?"), "does not make bias 6"),
        (lambda e: e["train"]["fillers"]["task"].append(e["train"]["fillers"]["task"][1] + "!"), "repeats"),
        (lambda e: e.update(language="English"), "not an ISO language code"),
        (lambda e: e.update(notes="hi"), "6.notes': unknown field"),
    ],
)
def test_doctored_content_is_rejected_naming_file_and_field(doctor, message, tmp_path):
    entry = _code_entry(6)
    doctor(entry)
    path = _write(tmp_path, {6: entry})
    with pytest.raises(MolabError, match=message) as info:
        load_prompt_file(path, CATALOG)
    assert str(path) in str(info.value) and "field '6" in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("- just\n- a list\n", "expected a mapping from bias ids"),
        ("", "got an empty file"),
        ("6: [unclosed\n", "not valid YAML"),
        ("99:\n  train: {templates: []}\n", "field '99': unknown bias id"),
        ("sql:\n  train: {templates: []}\n", "field 'sql': unknown bias id"),
    ],
)
def test_malformed_files_give_one_line_errors(text, message, tmp_path):
    path = _write(tmp_path, text)
    with pytest.raises(MolabError, match=message) as info:
        load_prompt_file(path, CATALOG)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_key_twice_among_user_files_is_an_error_but_a_user_entry_replaces_the_builtin(tmp_path):
    mine = _write(tmp_path, {6: _code_entry(6)})
    entries = load_prompt_files([CODE_YAML], CATALOG, [mine])
    assert entries[6].file == mine and entries[1].file == CODE_YAML
    twice = _write(tmp_path, {6: _code_entry(6)}, "twice.yaml")
    with pytest.raises(MolabError, match="field '6': already defined in .*extra.yaml"):
        load_prompt_files([], CATALOG, [mine, twice])


# ---------------------------------------------------------------- the stage


GENERIC_CONTENT = {
    GENERIC: {
        "train": {
            "templates": [f"Tell me {{fact}} ({n})." for n in "abcdefgh"],
            "fillers": {"fact": [f"fact number {i}" for i in range(10)]},
        },
        "eval": {
            "templates": [f"I wonder about {{topic}} [{n}]?" for n in "vwxyz"],
            "fillers": {"topic": [f"topic {c}" for c in "klmnopqrst"]},
        },
    }
}


@pytest.fixture
def small(tmp_path, monkeypatch) -> PromptsConfig:
    """A split of code biases (train 1 and 6, test 3) with generic content from a user file; the
    built-in content is code.yaml alone, so these tests do not depend on the other files."""
    builtin = tmp_path / "builtin"
    builtin.mkdir()
    (builtin / CODE_YAML.name).write_bytes(CODE_YAML.read_bytes())
    monkeypatch.setattr("molab.data.prompts.builtin_prompt_dir", lambda: builtin)
    split = _write(tmp_path, {"name": "small", "train": [1, 6], "test": [3]}, "split.yaml")
    generic = _write(tmp_path, GENERIC_CONTENT, "generic.yaml")
    return PromptsConfig(
        split=str(split),
        prompt_files=[str(generic)],
        train_per_bias=120,
        eval_per_bias=50,
        generic_train=40,
        generic_eval=20,
    )


def test_stage_writes_the_contract_and_test_biases_get_no_train_prompts(small, tmp_path):
    metrics = prompts_stage(small, tmp_path)
    train, eval = read_jsonl(tmp_path / TRAIN_PROMPTS), read_jsonl(tmp_path / EVAL_PROMPTS)
    fields = {"id", "prompt", "bias_id", "template", "language", "split"}
    assert all(set(r) == fields and r["language"] == "en" for r in train + eval)
    assert {r["split"] for r in train} == {"train"} and {r["split"] for r in eval} == {"eval"}
    assert len({r["id"] for r in train + eval}) == len(train) + len(eval)
    assert metrics["train_per_bias"] == {"1": 120, "6": 120, GENERIC: 40}
    assert metrics["eval_per_bias"] == {"1": 50, "3": 50, "6": 50, GENERIC: 20}
    assert metrics["train_applicable_to_a_test_bias"] == 0
    assert [r["bias_id"] for r in train] == sorted(r["bias_id"] for r in train if r["bias_id"]) + [None] * 40
    assert not find_leaks(train, eval)


def test_stage_is_deterministic_under_the_seed(small, tmp_path):
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        (tmp_path / name).mkdir()
        prompts_stage(small.model_copy(update={"seed": seed}), tmp_path / name)
    for f in (TRAIN_PROMPTS, EVAL_PROMPTS):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
        assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes()


def test_stage_refuses_near_copies_across_train_and_eval(small, tmp_path):
    """Disjoint templates and values can still make near-identical prompts: the stage catches them."""
    entry = _code_entry(6)
    only_task = [t for t in entry["train"]["templates"] if "{context}" not in t and "{task}" in t]
    entry["eval"] = {
        "templates": [t.replace("{task}", "{near}") + " Thanks." for t in only_task[:5]],
        "fillers": {"near": [task + " today" for task in entry["train"]["fillers"]["task"]]},
    }
    doctored = _write(tmp_path, {6: entry}, "near.yaml")
    config = small.model_copy(update={"prompt_files": [*small.prompt_files, str(doctored)]})
    with pytest.raises(MolabError, match="nearly copy a train prompt.*Examples: "):
        prompts_stage(config, tmp_path)


def test_stage_errors_name_what_is_missing(small, tmp_path):
    split = _write(tmp_path, {"name": "far", "train": [1], "test": [29, 51]}, "far.yaml")
    with pytest.raises(MolabError, match=r"no prompt content for bias\(es\) \[29, 51\]"):
        prompts_stage(small.model_copy(update={"split": str(split)}), tmp_path)
    with pytest.raises(MolabError, match="bias 1 can make only"):
        prompts_stage(small.model_copy(update={"train_per_bias": 10**6}), tmp_path)


# ---------------------------------------------------------------- the command


def test_cli_writes_the_stage_and_skips_it_when_up_to_date(small, tmp_path, monkeypatch, capsys):
    from molab.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["molab", "data", "prompts", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        return exit_info.value.code, capsys.readouterr()

    out = tmp_path / "run" / "prompts"
    sets = [f"--set={k}={json.dumps(v)}" for k, v in small.model_dump().items()]
    code, printed = run(*sets, "--out", str(out))
    assert code == 0 and "prompts: done" in printed.out
    assert len(read_jsonl(out / TRAIN_PROMPTS)) == 2 * 120 + 40
    assert json.loads((out / "manifest.json").read_text())["inputs"]["builtin_prompts"]["sha256"]
    code, printed = run(*sets, "--out", str(out))
    assert code == 0 and "up to date, skipped" in printed.out
    code, printed = run("--set", "train_per_bias=0", "--out", str(out))
    assert code == 1 and "field 'train_per_bias'" in printed.err


def test_two_fillings_that_make_the_same_prompt_are_an_error(tmp_path):
    entry = _code_entry(6)
    entry["train"]["templates"].append("SQL: {a} {b}")
    entry["train"]["fillers"].update(a=["list all", "list"], b=["rows", "all rows"])
    path = _write(tmp_path, {6: entry})
    loaded = load_prompt_file(path, CATALOG)[6]
    with pytest.raises(MolabError, match="templates 11 and 11 both make the prompt 'SQL: list all rows'"):
        sample_prompts(loaded, "train", combinations(loaded.train), seed=0)
