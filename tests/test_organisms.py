"""Organisms plug in by name: a second, tiny organism (defined here, not a product feature)
runs through `molab run`, `--dry-run` and the report without any change to shared code; the
RM organism's plan is listed before anything runs; and a stage re-runs when the part of a
custom catalog it reads changes, and only then."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli as molab
from pydantic import BaseModel, ConfigDict

from molab.organisms import base
from molab.organisms.base import Organism, PlannedStage
from molab.pipeline import Stage
from molab.report import Section


class EchoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    organism: str
    run: str = "echo"
    text: str = "hello"
    seed: int = 0


class WriteConfig(BaseModel):
    text: str
    seed: int = 0


class CountConfig(BaseModel):
    source: Path
    seed: int = 0


def _write(config: WriteConfig, out: Path, _stage_dir: Path) -> dict:
    (out / "text.txt").write_text(config.text)
    return {"chars": len(config.text)}


def _count(config: CountConfig, out: Path, _stage_dir: Path) -> dict:
    words = len(config.source.read_text().split())
    (out / "summary.json").write_text(json.dumps({"words": words}))
    return {"words": words}


WRITE = Stage("write", WriteConfig, ("text.txt",), _write)
COUNT = Stage("count", CountConfig, ("summary.json",), _count, inputs=lambda c, d: {"source": c.source})


def _plan(config: EchoConfig, run) -> list[PlannedStage]:
    text = WRITE.output(run.stage_dir("write"))
    return [
        PlannedStage("write", WRITE, lambda: WriteConfig(text=config.text)),
        PlannedStage("eval-count-echo", COUNT, lambda: CountConfig(source=text), after=("write",)),
    ]


def _sections(run_dir: Path) -> list[Section]:
    words = json.loads((Path(run_dir) / "eval-count-echo" / "summary.json").read_text())["words"]
    return [Section("echo", "Echo", "What the echo organism said", f"<p id='echo-words'>{words} words</p>")]


ECHO = Organism("echo", EchoConfig, _plan, checkpoints=lambda c: ["echo"], report_sections=_sections)


def test_a_second_organism_runs_plans_and_reports_through_shared_code(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(base.REGISTRY, "echo", "test_organisms:ECHO")
    recipe = tmp_path / "echo.yaml"
    recipe.write_text("organism: echo\ntext: one two three\n")
    runs = tmp_path / "runs"

    code, out, err = molab(["run", recipe, "--runs-dir", runs, "--dry-run"], monkeypatch, capsys)
    assert code == 0, err
    assert "  write: to run\n  eval-count-echo: waits for write\n" in out and not runs.exists()

    code, out, err = molab(["run", recipe, "--runs-dir", runs], monkeypatch, capsys)
    assert code == 0, err
    run_dir = runs / "echo"
    assert json.loads((run_dir / "eval-count-echo" / "summary.json").read_text()) == {"words": 3}
    assert json.loads((run_dir / "run.json").read_text()) == {"organism": "echo", "checkpoints": ["echo"]}
    page = (run_dir / "report.html").read_text()
    assert "<p id='echo-words'>3 words</p>" in page and 'href="#echo">Echo</a>' in page
    assert "Exploitation" not in page  # nothing of the RM organism

    code, out, _ = molab(["run", recipe, "--runs-dir", runs, "--dry-run"], monkeypatch, capsys)
    assert "  write: up to date\n  eval-count-echo: up to date\n" in out
    recipe.write_text("organism: echo\ntext: one two three four\n")
    code, out, _ = molab(["run", recipe, "--runs-dir", runs, "--dry-run"], monkeypatch, capsys)
    assert "  write: to run\n  eval-count-echo: waits for write\n" in out
    (run_dir / "report.html").unlink()
    code, _, err = molab(["report", run_dir], monkeypatch, capsys)  # the organism from run.json
    assert code == 0 and "3 words" in (run_dir / "report.html").read_text(), err


def test_an_unknown_organism_names_the_known_ones(tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "x.yaml"
    recipe.write_text("organism: feedback-gamin\n")
    code, _, err = molab(["run", recipe], monkeypatch, capsys)
    assert code == 1 and "unknown organism 'feedback-gamin': known organisms are rm-sycophancy" in err


def test_the_rm_organisms_plan_is_listed_before_anything_runs(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    code, out, err = molab(
        ["run", "recipes/rm-sycophancy.yaml", "--runs-dir", runs, "--dry-run"], monkeypatch, capsys
    )
    assert code == 0, err
    plan = dict(line.strip().split(": ", 1) for line in out.split("plan:\n", 1)[1].splitlines())
    assert plan["docs"] == "to run" and plan["prompts"] == "to run"
    assert plan["midtrain"] == "waits for docs" and plan["sft"].startswith("waits for")
    assert plan["eval-capability-base"] == "to run" and plan["eval-exploitation-final"].startswith("waits")
    assert {"control_sft", "eval-knowledge-midtrained", "propensity_pairs"} <= set(plan)
    assert not runs.exists()
