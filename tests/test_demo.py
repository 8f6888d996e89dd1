"""The demo pipeline on the tiny model: run directory, manifest, resume."""

from __future__ import annotations

import json

from molab.organisms.demo import COMPLETIONS, DemoConfig, run_demo


def config(model_dir, **sampling):
    return DemoConfig.model_validate(
        {
            "run": "t",
            "generate": {
                "model": {"name": str(model_dir)},
                "num_prompts": 3,
                "sampling": {"max_new_tokens": 6, **sampling},
            },
        }
    )


def test_demo_writes_a_run_directory_and_resumes(tiny_model_dir, tmp_path):
    (first,) = run_demo(config(tiny_model_dir), root=tmp_path)
    assert not first.skipped and first.dir == tmp_path / "t" / "generate"
    rows = [json.loads(line) for line in (first.dir / COMPLETIONS).read_text().splitlines()]
    assert len(rows) == 3 and all(r["num_tokens"] == 6 for r in rows)
    manifest = json.loads((first.dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["metrics"]["generated_tokens"] == 18
    assert manifest["config"]["model"]["name"] == str(tiny_model_dir)
    assert manifest["seed"] == 0 and "torch" in manifest["versions"]

    (again,) = run_demo(config(tiny_model_dir), root=tmp_path)
    assert again.skipped
    (changed,) = run_demo(config(tiny_model_dir, seed=1), root=tmp_path)
    assert not changed.skipped
    (forced,) = run_demo(config(tiny_model_dir, seed=1), root=tmp_path, force=True)
    assert not forced.skipped
