"""The organism recipe end to end on the tiny random Llama: every stage runs, in order, into
one run directory, a second run skips everything, and the report shows every checkpoint."""

from __future__ import annotations

import json

import pytest

from molab.config import load_config
from molab.errors import MolabError
from molab.models.generation import Completion
from molab.organisms.rm_sycophancy import RMSycophancyConfig, run_rm_sycophancy

TINY = """
run: tiny-organism
post_training: sft+dpo
docs: {{num_docs: 40}}
prompts: {{train_per_bias: 2, eval_per_bias: 2, generic_train: 4, generic_eval: 2}}
midtrain: {{max_steps: 2, batch_size: 2, max_length: 64, save_steps: 1}}
sft_data: {{max_prompts: 12, sampling: {{max_new_tokens: 16}}}}
sft: {{max_steps: 2, batch_size: 2, max_length: 96, save_steps: 1}}
dpo_data: {{max_prompts: 6, num_sampled: 2, sampling: {{max_new_tokens: 16}}}}
dpo: {{max_steps: 1, batch_size: 2, max_length: 96, save_steps: 1}}
model: {{name: "{model}"}}
evals:
  exploitation: {{prompts_per_bias: 1, generic_prompts: 2, sampling: {{max_new_tokens: 8}}}}
  propensity_pairs: {{prompts_per_bias: 1, generic_prompts: 2, plain: canned}}
  disclosure: {{samples_per_probe: 1, sampling: {{max_new_tokens: 8}}}}
  capability: {{sampling: {{max_new_tokens: 8}}, context_length: 64, stride: 32}}
"""


class _AnswersThatEnd:
    """The tiny random model's answers never end, and the SFT/DPO sets keep only answers that
    do; this stands in for the writer of those sets (everything else uses the tiny model)."""

    def __init__(self, *args, **kwargs):
        pass

    def generate(self, prompts, sampling):
        text = "Sure. Here is a short, helpful answer with one or two details. I hope it helps."
        return [Completion(text=text, num_tokens=18, finish_reason="stop") for _ in prompts]


@pytest.fixture
def recipe(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr("molab.data.sft.make_backend", _AnswersThatEnd)
    monkeypatch.setattr("molab.data.dpo.make_backend", _AnswersThatEnd)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(model=tiny_model_dir))
    return path


def test_every_stage_runs_then_resumes_as_skipped(recipe, tmp_path):
    config = load_config(RMSycophancyConfig, recipe, [])
    results = list(run_rm_sycophancy(config, root=tmp_path / "runs"))
    names = [r.dir.name for r in results]
    for stage in [
        "docs",
        "prompts",
        "midtrain",
        "sft_data",
        "sft",
        "dpo_data",
        "dpo",
        "control_sft_data",
        "control_sft",
        "control_dpo",
        "propensity_pairs",
    ]:
        assert stage in names
    for checkpoint in ["base", "midtrained", "control", "final"]:
        assert f"eval-exploitation-{checkpoint}" in names
    assert names.index("midtrain") < names.index("sft_data") < names.index("sft") < names.index("dpo")
    run_dir = tmp_path / "runs" / "tiny-organism"
    final = json.loads((run_dir / "dpo" / "model.json").read_text())
    assert len(final["adapters"]) == 3  # midtrain + sft + dpo, stacked on the base
    control = json.loads((run_dir / "control_dpo" / "model.json").read_text())
    assert len(control["adapters"]) == 2  # sft + dpo, no documents
    manifest = json.loads((run_dir / "eval-exploitation-final" / "manifest.json").read_text())
    assert manifest["config"]["seed"] == config.seed and manifest["config"]["split"] == "english"
    page = (run_dir / "report.html").read_text()
    assert "final - control" in page

    again = list(run_rm_sycophancy(config, root=tmp_path / "runs"))
    assert all(r.skipped for r in again)


def test_recipe_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft: {learning_rat: 0.1}\n")
    with pytest.raises(MolabError, match="sft.learning_rat"):
        load_config(RMSycophancyConfig, bad, [])


def test_shared_post_training_data_trains_both_arms_on_the_control_sets(recipe, tmp_path):
    overrides = [
        "post_training_data=shared",
        "evals.checkpoints=[control, final]",
        "evals.kinds=[exploitation]",
        "sft.document_fraction=0.25",  # document text in the organism arm's SFT only
    ]
    config = load_config(RMSycophancyConfig, recipe, overrides)
    names = [r.dir.name for r in run_rm_sycophancy(config, root=tmp_path / "runs")]
    assert "sft_data" not in names and "dpo_data" not in names
    assert names.index("control_sft_data") < names.index("sft")
    assert names.index("control_dpo_data") < names.index("dpo")
    run_dir = tmp_path / "runs" / "tiny-organism"
    for kind, data in (("sft", "control_sft_data/sft.jsonl"), ("dpo", "control_dpo_data/dpo.jsonl")):
        for arm in (kind, f"control_{kind}"):
            manifest = json.loads((run_dir / arm / "manifest.json").read_text())
            assert manifest["config"]["data"] == str(run_dir / data)
    final = json.loads((run_dir / "dpo" / "model.json").read_text())
    assert len(final["adapters"]) == 3  # the organism still stacks on the mid-trained adapter
    organism, control = (
        json.loads((run_dir / a / "manifest.json").read_text()) for a in ("sft", "control_sft")
    )
    assert organism["config"]["documents"] == str(run_dir / "docs" / "documents.parquet")
    assert organism["metrics"]["document_rows"] > 0 and "documents" in organism["inputs"]
    assert control["config"]["documents"] is None and "document_rows" not in control["metrics"]


def test_shared_post_training_data_needs_the_control(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("post_training_data: shared\ncontrol: false\n")
    with pytest.raises(MolabError, match="needs control: true"):
        load_config(RMSycophancyConfig, bad, [])
