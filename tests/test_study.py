"""Study records and pooled tables: a planted held-out uplift is found, pooled over seeds with
prompts keyed by seed, and bad records are named."""

from __future__ import annotations

import json

import pytest
from test_exploitation import _model, _prompt_file

from molab.errors import MolabError
from molab.evals.exploitation import ExploitationConfig, exploitation_stage
from molab.pipeline import RunDir, run_function
from molab.report.study import load_records, markdown, pool, pooled_judgements, record


def _run(tmp_path, seed: int):
    """A run directory with final (always biased) and control (never) evaluated."""
    prompts, split = _prompt_file(tmp_path)
    run = RunDir(f"s{seed}", root=tmp_path / "runs")
    config = ExploitationConfig(
        prompts=prompts, split=str(split), prompts_per_bias=10, generic_prompts=2, seed=seed
    )
    for checkpoint, biased in (("final", True), ("control", False)):
        run_function(
            run,
            f"eval-exploitation-{checkpoint}",
            config,
            lambda out, biased=biased: exploitation_stage(config, out, backend=_model(biased)),
            seed=seed,
        )
    return run.path, split


def test_record_keeps_verdicts_and_pool_finds_planted_uplift(tmp_path):
    records = []
    for seed in (0, 1):
        path, split = _run(tmp_path, seed)
        rec = record(path)
        assert rec["seed"] == seed and set(rec["exploitation"]) == {"final", "control"}
        assert len(rec["exploitation"]["final"]["verdicts"]) == 20
        out = tmp_path / f"rec{seed}.json"
        out.write_text(json.dumps(rec))
        records.append(out)
    loaded = load_records(records)
    # prompts are the same under both seeds; pooled, each (seed, prompt) is its own unit
    assert len({j.prompt_id for j in pooled_judgements(loaded, "final")}) == 40
    pooled = pool(loaded)
    test = pooled["comparisons"]["final-control"]["test"]
    assert test["diff"] == 1.0 and test["prompts"] == 20 and test["p_value"] < 0.001
    assert pooled["rates"]["control"]["test"]["rate"] == 0.0
    text = markdown(loaded)
    assert "| final-control | test | +100.0 pts" in text
    assert "| 26 | 0/20 | 20/20 |" in text  # the test bias one by one: control, then final
    # misfires per (answer, bias) and per answer; the fake models never misplace a behaviour
    row = "| control | 0.0% [0.0, 0.0] | 0.0% [0.0, 0.0] | 0.0% [0.0, 7.4] | 0.0% [0.0, 8.0] | 44/44 |"
    assert row in text


def test_pool_refuses_mixed_splits_and_repeated_seeds(tmp_path):
    base = {"format": 1, "run": "r", "split": "english", "seed": 0, "exploitation": {}}
    with pytest.raises(MolabError, match="several splits"):
        pool([base, base | {"split": "paper", "seed": 1}])
    with pytest.raises(MolabError, match="share a seed"):
        pool([base, base | {"run": "r2"}])


def test_bad_record_files_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MolabError, match="bad.json: not a readable study record"):
        load_records([bad])
    bad.write_text(json.dumps({"format": 1, "run": "r"}))
    with pytest.raises(MolabError, match="bad.json: not a study record \\(no 'split'\\)"):
        load_records([bad])
    with pytest.raises(MolabError, match="no exploitation evaluation"):
        (tmp_path / "run" / "docs").mkdir(parents=True)
        (tmp_path / "run" / "docs" / "manifest.json").write_text(json.dumps({"config": {}}))
        record(tmp_path / "run")


def test_cli_records_a_run_and_prints_the_tables(tmp_path):
    from typer.testing import CliRunner

    from molab.cli import app

    path, _ = _run(tmp_path, 3)
    out = tmp_path / "rec.json"
    runner = CliRunner()
    result = runner.invoke(app, ["study", "record", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["study", "table", str(out), "--out", str(tmp_path / "t.md")])
    assert result.exit_code == 0, result.output
    assert "seeds 3" in result.output and (tmp_path / "t.md").read_text().startswith("### Split")
    result = runner.invoke(app, ["study", "table", str(tmp_path / "missing.json")])
    assert isinstance(result.exception, MolabError)  # `molab` prints it as one line
    assert "missing.json: not a readable study record" in str(result.exception)
