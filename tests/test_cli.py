"""The command line end to end on the tiny model: output files, one-line errors, help."""

from __future__ import annotations

import json
import sys

import pytest

from molab.cli import main


def run(args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["molab", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def write_prompts(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_generate_writes_completions_in_input_order(tiny_model_dir, tmp_path, monkeypatch, capsys):
    prompts = write_prompts(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "prompt": "Hi"},
            {"id": "b", "messages": [{"role": "user", "content": "Name a fruit."}], "prefill": "A"},
            {"id": "c", "text": "Once upon a time"},
        ],
    )
    out = tmp_path / "out.jsonl"
    code, stdout, _ = run(
        ["generate", "--model", tiny_model_dir, "--prompts", prompts, "--out", out, "--max-new-tokens", 5],
        monkeypatch,
        capsys,
    )
    assert code == 0 and "wrote 3 completions" in stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert all(r["num_tokens"] == 5 and r["finish_reason"] == "length" and r["completion"] for r in rows)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read"),
        ("", "holds no prompts"),
        ('{"prompt": "ok"}\n{"oops": 1}\n', "line 2: .*'prompt', 'messages' or 'text'"),
        ('{"prompt": "ok"}\nnot json\n', "line 2: not valid JSON"),
        ('{"messages": []}\n', "line 1: .*empty"),
    ],
)
def test_bad_prompt_files_give_one_line_errors(content, message, tmp_path, monkeypatch, capsys):
    path = tmp_path / "p.jsonl"
    if content is not None:
        path.write_text(content)
    code, _, err = run(["generate", "--prompts", path], monkeypatch, capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert pytest.importorskip("re").search(message, err), err


def test_unknown_model_spec_is_one_line(tmp_path, monkeypatch, capsys):
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": "Hi"}])
    code, _, err = run(["generate", "--model", "nonsense-model", "--prompts", prompts], monkeypatch, capsys)
    assert code == 1 and err.count("\n") == 1
    assert "unknown model spec 'nonsense-model'" in err


def test_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    from molab.errors import MolabError

    monkeypatch.setattr(sys, "argv", ["molab", "--debug", "generate", "--prompts", str(tmp_path / "none")])
    with pytest.raises(MolabError):
        main()


def test_models_lists_the_default_and_its_cache(default_model_dir, monkeypatch, capsys):
    code, out, _ = run(["models"], monkeypatch, capsys)
    assert code == 0 and "smollm2-135m" in out


@pytest.mark.parametrize(
    "command", [[], ["generate"], ["models"], ["run"], ["report"], ["bench", "generate"], ["bench", "train"]]
)
def test_help_explains_each_command(command, monkeypatch, capsys):
    code, out, _ = run([*command, "--help"], monkeypatch, capsys)
    assert code == 0 and "Usage" in out


def test_run_dry_run_prints_the_resolved_recipe(monkeypatch, capsys):
    code, out, _ = run(
        ["run", "recipes/rm-sycophancy-quick.yaml", "--set", "sft.max_steps=3", "--dry-run"],
        monkeypatch,
        capsys,
    )
    assert code == 0 and "max_steps: 3" in out and "smollm2-135m" in out
    assert "run: rm-sycophancy-quick" in out and "num_docs: 200" in out  # the preset over its base


def test_bad_recipe_field_names_file_and_field(tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("evals:\n  exploitation:\n    sampling:\n      temperature: -1\n")
    code, _, err = run(["run", recipe, "--dry-run"], monkeypatch, capsys)
    assert code == 1 and str(recipe) in err and "evals.exploitation.sampling.temperature" in err
