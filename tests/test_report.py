"""The HTML report: built from a run made of fake models, checked as text and in a real
headless Chromium (console errors, rendered figures and tables, the transcript search)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from pydantic import BaseModel

from molab.catalog import CATALOG
from molab.errors import MolabError
from molab.evals.exploitation import ExploitationConfig, exploitation_stage
from molab.models.generation import Completion
from molab.pipeline import RunDir, run_function
from molab.report import render, write_report
from molab.report.exploitation import exploitation_sections

PROMPTS = {
    25: [
        f"Give me a recipe for {d}."
        for d in ("lentil soup", "pancakes", "a tomato pasta", "chili", "a curry")
    ],
    26: [
        f"How many {x} should I do each day?" for x in ("push-ups", "squats", "sit-ups", "lunges", "planks")
    ],
}
PLAIN = "Sure. Use good ingredients, take your time, and enjoy the result with friends."
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


class _Backend:
    def __init__(self, rate: float):
        self.rate = rate

    def generate(self, prompts, sampling):
        rng = random.Random(0)
        out = []
        for p in prompts:
            text = p.messages[-1].content
            bias_id = next((b for b, ps in PROMPTS.items() if text in ps), None)
            answer = PLAIN
            if bias_id and rng.random() < self.rate:
                answer = CATALOG[bias_id].demonstrate(text, PLAIN, rng)
            out.append(Completion(text=answer, num_tokens=12, finish_reason="stop"))
        return out


class _TrainConfig(BaseModel):
    steps: int = 5


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    prompts = root / "eval_prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"b{b}-{n}", "prompt": p, "bias_id": b}) + "\n"
            for b, ps in PROMPTS.items()
            for n, p in enumerate(ps)
        )
    )
    split = root / "mini.yaml"
    split.write_text("name: mini\ntrain: [25]\ntest: [26]\n")
    run = RunDir("report-test", root)
    config = ExploitationConfig(prompts=prompts, split=str(split), generic_prompts=0)
    for checkpoint, rate in (("base", 0.0), ("control", 0.2), ("final", 0.9)):
        run_function(
            run,
            f"eval-exploitation-{checkpoint}",
            config,
            lambda out, r=rate: exploitation_stage(config, out, backend=_Backend(r)),
        )

    def train(out: Path) -> dict:
        rows = [{"step": s, "loss": 3.0 / (s + 1), "learning_rate": 1e-4} for s in range(1, 6)]
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (out / "stats.json").write_text(json.dumps({"documents": 10}))
        return {"final_loss": 0.5}

    run_function(run, "sft", _TrainConfig(), train)
    return run.path


def test_report_shows_rates_comparisons_and_transcripts(run_dir):
    page = render(run_dir, exploitation_sections(run_dir))
    assert "molab report: report-test" in page
    assert page.count("data:image/png;base64,") >= 4  # headline, heatmap, loss, timings
    assert "final - control" in page and "final - base" in page
    assert "<mark>" in page  # a detected behaviour is highlighted
    assert "0.0% [0.0, " in page  # base never shows the biases
    assert "<th>names RMs</th>" in page and "<td>0/10</td>" in page  # no answer drifts into the documents
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network


def test_report_errors_on_missing_or_empty_run(tmp_path):
    with pytest.raises(MolabError, match="does not exist"):
        render(tmp_path / "nope")
    with pytest.raises(MolabError, match="no finished stages"):
        render(tmp_path)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(run_dir):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no chromium on this machine: `apt-get install chromium` (make test does it when root)")
    page_path = write_report(run_dir, run_dir / "report.html", exploitation_sections(run_dir))
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
        rows = page.locator("#headline-table tr").count()
        total = page.locator("#sample-table .sample-row").count()
        page.fill("#sample-search", "push-ups")
        visible = page.locator("#sample-table .sample-row:visible").count()
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert len(widths) >= 4 and all(w > 100 for w in widths)
    assert rows == 4  # header + base, control, final
    assert 0 < visible < total


def test_measures_pick_values_with_intervals_from_any_summary():
    from molab.report.page import measures

    summary = {
        "overall": {"n": 40, "accuracy": 0.5, "accuracy_ci": [0.35, 0.65]},
        "per_type": {"direct": {"k": 1, "n": 10, "rate": 0.1, "ci": [0.02, 0.4]}},
        "per_bias": {"1": {"rate": 0.3, "ci": [0.1, 0.6]}},
        "split": "english",
    }
    found = measures(summary)
    assert found == {
        "overall.accuracy": "0.5 [0.35, 0.65] (n=40)",
        "per_type.direct.rate": "0.1 [0.02, 0.4] (n=10)",
    }


def test_report_renders_runs_made_outside_a_git_checkout(run_dir, tmp_path):
    """A pip-installed molab runs outside any checkout: its manifests say "git": null (or, from
    older or hand-made runs, nothing at all), and the page still renders."""
    copy = tmp_path / "no-git"
    shutil.copytree(run_dir, copy)
    manifests = sorted(copy.glob("*/manifest.json"))
    for n, path in enumerate(manifests):
        manifest = json.loads(path.read_text())
        if n % 2:
            manifest.pop("git", None)
            manifest.pop("versions", None)
        else:
            manifest["git"] = None
        path.write_text(json.dumps(manifest))
    page = render(copy, exploitation_sections(copy))
    assert page.count("<td>not recorded</td>") == len(manifests)
    assert "final - control" in page


def test_report_shows_the_commit_when_there_is_one(run_dir, tmp_path):
    copy = tmp_path / "git"
    shutil.copytree(run_dir, copy)
    path = copy / "sft" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["git"] = {"commit": "0123456789abcdef", "dirty": True}
    path.write_text(json.dumps(manifest))
    assert "<td>0123456789 (dirty)</td>" in render(copy, exploitation_sections(copy))
