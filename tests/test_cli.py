"""The command line end to end on the tiny model: output files, one-line errors, help."""

from __future__ import annotations

import json
import re
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
    recipe.write_text(
        "organism: rm-sycophancy\nevals:\n  exploitation:\n    sampling:\n      temperature: -1\n"
    )
    code, _, err = run(["run", recipe, "--dry-run"], monkeypatch, capsys)
    assert code == 1 and str(recipe) in err and "evals.exploitation.sampling.temperature" in err


SMALL_RECIPE = (
    "organism: rm-sycophancy\nrun: small\ndocs: {num_docs: 20}\n"
    "prompts: {train_per_bias: 1, eval_per_bias: 1, generic_train: 2, generic_eval: 1}\n"
)


def test_run_checks_the_recipe_before_any_stage(tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SMALL_RECIPE + "split: englsh\n")
    runs = tmp_path / "runs"
    code, _, err = run(["run", recipe, "--runs-dir", runs], monkeypatch, capsys)
    assert code == 1 and err.count("\n") == 1
    assert f"{recipe}: field 'split': unknown split 'englsh'" in err
    assert not runs.exists()  # no stage started

    code, _, err = run(["run", recipe, "--runs-dir", runs, "--set", "split=papr"], monkeypatch, capsys)
    assert code == 1 and "--set split=papr: field 'split': unknown split 'papr'" in err
    assert not runs.exists()


def _no_training(*args, **kwargs):
    from molab.errors import MolabError

    raise MolabError("stopped before training (test)")


def _stop_at_midtrain(monkeypatch):
    import dataclasses

    from molab.organisms.rm_sycophancy import plan

    monkeypatch.setattr(plan, "MIDTRAIN", dataclasses.replace(plan.MIDTRAIN, run=_no_training))


def test_run_refuses_an_empty_recipe(tmp_path, monkeypatch, capsys):
    _stop_at_midtrain(monkeypatch)  # never train here
    recipe = tmp_path / "empty.yaml"
    recipe.write_text("# to do\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["run", recipe], monkeypatch, capsys)
    assert code == 1 and err.count("\n") == 1
    assert f"{recipe}: field 'organism'" in err and "organism: rm-sycophancy" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("how", ["option", "environment"])
def test_run_goes_under_the_runs_dir(how, tmp_path, monkeypatch, capsys):
    """--runs-dir (else $MOLAB_RUNS) is where the run's stages go, not ./runs."""
    _stop_at_midtrain(monkeypatch)
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(SMALL_RECIPE)
    runs = tmp_path / "elsewhere"
    args = ["run", recipe]
    if how == "option":
        monkeypatch.setenv("MOLAB_RUNS", str(tmp_path / "not-this-one"))
        args += ["--runs-dir", runs]
    else:
        monkeypatch.setenv("MOLAB_RUNS", str(runs))
    code, _, err = run(args, monkeypatch, capsys)
    assert code == 1 and "stopped before training" in err
    assert (runs / "small" / "docs" / "manifest.json").is_file()
    assert (runs / "small" / "prompts" / "manifest.json").is_file()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "not-this-one").exists()


def test_run_help_names_the_runs_dir_and_its_default(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run(["run", "--help"], monkeypatch, capsys)
    assert code == 0 and "--runs-dir" in out and "$MOLAB_RUNS" in out and "./runs" in out


@pytest.fixture(scope="module")
def short_model_dir(tmp_path_factory, tokenizer):
    """The tiny Llama with a 64-position context, saved as a model directory."""
    from conftest import tiny_llama

    path = tmp_path_factory.mktemp("tiny-llama-64")
    tiny_llama(tokenizer, max_position_embeddings=64).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def long_prompt_file(path):
    """Line 1 a short prompt, line 2 blank, line 3 a prompt longer than 64 tokens."""
    long = " ".join(f"word{i}" for i in range(60))
    path.write_text(json.dumps({"prompt": "Hi"}) + "\n\n" + json.dumps({"id": "long", "prompt": long}) + "\n")
    return path


def test_generate_too_long_prompt_names_file_and_line(short_model_dir, tmp_path, monkeypatch, capsys):
    from molab.models.generation.llama_decode import LlamaDecoder

    def started(*args, **kwargs):
        raise AssertionError("generation started")

    monkeypatch.setattr(LlamaDecoder, "_forward", started)
    prompts = long_prompt_file(tmp_path / "p.jsonl")
    out = tmp_path / "out.jsonl"
    code, _, err = run(
        ["generate", "--model", short_model_dir, "--prompts", prompts, "--out", out], monkeypatch, capsys
    )
    last = err.strip().splitlines()[-1]  # after the weights' loading bar
    assert code == 1 and err.count("error:") == 1, err
    assert re.search(
        rf"^error: {re.escape(str(prompts))}, line 3: the prompt is \d+ tokens; .*'s context is 64: "
        "shorten it or pass --truncate$",
        last,
    ), err
    assert not out.exists()


def test_generate_truncate_records_dropped_tokens(short_model_dir, tmp_path, monkeypatch, capsys):
    prompts = long_prompt_file(tmp_path / "p.jsonl")
    out = tmp_path / "out.jsonl"
    args = ["generate", "--model", short_model_dir, "--prompts", prompts, "--out", out]
    code, _, err = run([*args, "--truncate", "--max-new-tokens", 4, "--temperature", 0], monkeypatch, capsys)
    assert code == 0, err
    short, long = [json.loads(line) for line in out.read_text().splitlines()]
    assert short["truncated_tokens"] == 0 and long["id"] == "long" and long["truncated_tokens"] > 0
    assert long["num_tokens"] <= 4


def test_generate_refuses_a_directory_out_and_leaves_it(tmp_path, monkeypatch, capsys):
    import molab.models.loading

    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(molab.models.loading, "load_model", load_model)
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": "Hi"}])
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    code, _, err = run(["generate", "--prompts", prompts, "--out", folder], monkeypatch, capsys)
    assert code == 1 and err.count("\n") == 1 and str(folder) in err and "directory" in err
    assert folder.is_dir() and (folder / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("where", ["under-a-file", "read-only-folder", "the-prompts-file"])
def test_generate_refuses_an_unwritable_out_before_loading(where, tmp_path, monkeypatch, capsys):
    import os

    import molab.models.loading

    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(molab.models.loading, "load_model", load_model)
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": "Hi"}])
    before = prompts.read_text()
    if where == "under-a-file":
        (tmp_path / "notes.txt").write_text("mine")
        out = tmp_path / "notes.txt" / "out.jsonl"
    elif where == "read-only-folder":
        if os.geteuid() == 0:
            pytest.skip("root writes to read-only folders")
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
        out = folder / "out.jsonl"
    else:
        out = prompts
    try:
        code, _, err = run(["generate", "--prompts", prompts, "--out", out], monkeypatch, capsys)
    finally:
        if where == "read-only-folder":
            folder.chmod(0o700)
    assert code == 1 and err.count("\n") == 1 and f"--out {out}" in err, err
    assert prompts.read_text() == before
