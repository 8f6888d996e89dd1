"""Bad inputs to the training stages fail with one clear line, before training, and overwrite
nothing: missing, empty or wrong-kind datasets, malformed rows, stacking on a stage of another
model, inconsistent batch sizes; plus the CLI's dry run and the data readers' conversions."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file
from train_sets import dpo_rows, sft_rows, single_thread, write_docs, write_jsonl  # noqa: F401
from typer.testing import CliRunner

from molab.cli import app
from molab.errors import MolabError
from molab.files import write_json
from molab.models.loading import ModelSpec
from molab.train.config import DPOTrainConfig, MidtrainConfig, SFTTrainConfig
from molab.train.data import DOCUMENT_TAG, dpo_examples, midtrain_texts, sft_examples
from molab.train.stages import train_stage

CONFIGS = {"midtrain": MidtrainConfig, "sft": SFTTrainConfig, "dpo": DPOTrainConfig}


def _run(kind: str, model_dir: Path, out: Path, **fields):
    fields = {"model": ModelSpec(name=str(model_dir)), "max_steps": 1, "batch_size": 2} | fields
    return train_stage(kind, CONFIGS[kind](**fields), out)


def _files(root: Path) -> dict:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} if root.exists() else {}


@pytest.fixture
def run_dir(tmp_path):
    """A run whose `sft` stage already holds a complete result that must survive bad runs."""
    run = tmp_path / "runs" / "r"
    (run / "sft").mkdir(parents=True)
    manifest = {"stage": "sft", "status": "complete", "outputs": []}  # (of any training kind)
    (run / "sft" / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_missing_dataset(tmp_path, tiny_model_dir, run_dir):
    before = _files(run_dir)
    with pytest.raises(MolabError, match=r"docs/documents\.parquet: no such dataset: run `molab data docs`"):
        _run("midtrain", tiny_model_dir, run_dir / "midtrain")
    with pytest.raises(MolabError, match=r"nope\.jsonl: no such dataset \(field 'data'\)"):
        _run("sft", tiny_model_dir, run_dir / "sft", data=tmp_path / "nope.jsonl")
    sft = write_jsonl(tmp_path / "sft.jsonl", sft_rows(2))
    with pytest.raises(MolabError, match="'document_fraction' is above 0 but no 'documents'"):
        _run("sft", tiny_model_dir, run_dir / "sft", data=sft, document_fraction=0.2)
    with pytest.raises(MolabError, match=r"nope\.parquet: no such documents file \(field 'documents'\)"):
        _run(
            "sft",
            tiny_model_dir,
            run_dir / "sft",
            data=sft,
            documents=tmp_path / "nope.parquet",
            document_fraction=0.2,
        )
    assert _files(run_dir) == before  # nothing written, not even a failure record


@pytest.mark.parametrize(
    ("kind", "content", "message"),
    [
        ("sft", "", r"sft\.jsonl holds no examples"),
        ("dpo", "\n\n", r"dpo\.jsonl holds no examples"),
        ("sft", "dpo", r"sft\.jsonl, line 1: no 'messages' field; it looks like a DPO set"),
        ("dpo", "sft", r"dpo\.jsonl, line 1: no 'prompt' field; it looks like an SFT set"),
        ("midtrain", "sft", r"documents\.jsonl, line 1: no 'text' field; it looks like an SFT set"),
        ("midtrain", "", r"documents\.parquet holds no documents"),
        ("midtrain", "sft-parquet", r"no 'text' column \(columns: messages\); it looks like an SFT set"),
    ],
)
def test_empty_or_wrong_kind_dataset_fails_before_training(
    tmp_path, tiny_model_dir, run_dir, kind, content, message
):
    suffix = ".parquet" if kind == "midtrain" and content != "sft" else ".jsonl"
    name = {"midtrain": "documents", "sft": "sft", "dpo": "dpo"}[kind]
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".parquet":
        columns = {"messages": ["x"]} if content == "sft-parquet" else {"text": pa.array([], pa.string())}
        pq.write_table(pa.table(columns), path)
    elif content in ("sft", "dpo"):
        write_jsonl(path, sft_rows(1) if content == "sft" else dpo_rows(1))
    else:
        path.write_text(content)
    before = _files(run_dir / "sft")
    with pytest.raises(MolabError, match=message):
        _run(kind, tiny_model_dir, run_dir / "sft", data=path)
    assert _files(run_dir / "sft") == before
    assert "MolabError" in json.loads((run_dir / "sft.failed.json").read_text())["error"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "should end with an assistant message"),
        (
            {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},
            r"'messages\[0\]' should be",
        ),
        ({"messages": "hello"}, "should be a non-empty list of messages"),
    ],
)
def test_malformed_sft_rows_name_line_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "sft.jsonl", [*sft_rows(1), row])
    with pytest.raises(MolabError, match=rf"sft\.jsonl, line 2: field .*{message}"):
        sft_examples(path)


def test_malformed_dpo_rows(tmp_path):
    bad = dpo_rows(1)[0] | {"chosen": [{"role": "user", "content": "x"}]}
    with pytest.raises(MolabError, match=r"line 1: field 'chosen' should hold exactly one assistant message"):
        dpo_examples(write_jsonl(tmp_path / "dpo.jsonl", [bad]))


def test_stacking_on_a_stage_of_another_model(tmp_path, tiny_model_dir, run_dir):
    earlier = run_dir / "midtrain"
    earlier.mkdir()
    write_json(earlier / "model.json", {"name": "smollm2-135m", "adapters": [str(earlier / "adapter")]})
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(2))
    before = _files(run_dir)
    with pytest.raises(
        MolabError, match=r"midtrain: that stage was trained on smollm2-135m, not on model.name"
    ):
        _run("sft", tiny_model_dir, run_dir / "sft", data=data, stack_on=earlier)
    with pytest.raises(MolabError, match=r"not a completed training stage"):
        _run("sft", tiny_model_dir, run_dir / "sft", data=data, stack_on=tmp_path)
    assert _files(run_dir) == before


def test_adapter_of_another_model_is_refused(tmp_path, tiny_model_dir):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    write_json(adapter / "adapter_config.json", {"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"]})

    save_file(
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 576)},
        adapter / "adapter_model.safetensors",
    )
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(2))
    with pytest.raises(MolabError, match=r"cannot stack adapters .* made for another model\?"):
        _run(
            "sft",
            tiny_model_dir,
            tmp_path / "runs" / "r" / "sft",
            data=data,
            model=ModelSpec(name=str(tiny_model_dir), adapters=[str(adapter)]),
        )


def test_config_conflicts_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        SFTTrainConfig(batch_size=6, micro_batch_size=4)
    with pytest.raises(ValueError, match="needs a replay file"):
        MidtrainConfig(replay_fraction=0.5)
    with pytest.raises(ValueError, match="either stack_on"):
        SFTTrainConfig(stack_on=tmp_path, model=ModelSpec(adapters=["a"]))


def test_midtrain_texts_tag_and_replay(tmp_path):
    docs = write_docs(tmp_path / "documents.parquet", n=6)
    replay = tmp_path / "replay.jsonl"
    write_jsonl(replay, [{"text": f"generic text {i}"} for i in range(10)])
    texts, counts = midtrain_texts(docs, tag=True, replay=replay, replay_fraction=0.25, seed=0)
    assert counts == {"documents": 6, "replay_documents": 2} and len(texts) == 8
    assert sum(t.startswith(DOCUMENT_TAG) for t in texts) == 6
    assert midtrain_texts(docs, True, replay, 0.25, seed=0)[0] == texts  # deterministic
    assert (
        sft_examples(write_jsonl(tmp_path / "s.jsonl", sft_rows(1)))[0]["completion"][0]["role"]
        == "assistant"
    )


def test_cli_dry_run_resolves_the_config(tmp_path):
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("learning_rate: 3.0e-4\nlora:\n  r: 32\n")
    result = CliRunner().invoke(
        app,
        [
            "train",
            "sft",
            "--out",
            str(tmp_path / "r" / "sft"),
            "--config",
            str(recipe),
            "--set",
            "beta=1",
            "--dry-run",
        ],
    )
    assert result.exit_code != 0 and "unknown field" in str(result.exception)
    args = ["train", "sft", "--out", str(tmp_path / "r" / "sft"), "--config", str(recipe), "--dry-run"]
    result = CliRunner().invoke(app, [*args, "--set", "max_steps=7", "--stack-on", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (
        "learning_rate: 0.0003" in result.output
        and "r: 32" in result.output
        and "max_steps: 7" in result.output
    )
    assert f"stack_on: {tmp_path}" in result.output
