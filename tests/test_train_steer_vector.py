"""`molab train steer-vector` on the tiny Llama: a vector trained on answers that are all the
same sentence lowers their loss and, applied through `molab audit steer`'s own path with
`--add 1.0`, makes that sentence likelier; the frozen model is left as it was, the rows are
tokenised and masked as the SFT trainer does, and the stage caches and refuses bad input.

The tiny Llama's residual stream has a norm of ~600 (its weights are drawn with std 0.5), so a
vector needs a large learning rate to matter there: 20 (Adam moves each coordinate ~lr a step).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli
from datasets import Dataset
from safetensors import safe_open
from train_sets import dpo_rows, sft_rows, single_thread, write_jsonl  # noqa: F401
from typer.testing import CliRunner

from molab.audit.steer import Intervention, Steerable, read_vector
from molab.cli import app
from molab.models import hooks
from molab.models.generation import Prompt
from molab.models.loading import ModelSpec, load_model
from molab.pipeline import load_manifest
from molab.train.adapters import load_start_model
from molab.train.config import SFTTrainConfig
from molab.train.data import sft_examples
from molab.train.stages import build_trainer
from molab.train.steer_vector import (
    VECTOR_FILE,
    SteerVectorConfig,
    answer_loss_sum,
    chat_rows,
    steered,
    train_vector,
)

ANSWER = "Add chocolate."
QUESTIONS = [
    "Hi",
    "What is the capital of France?",
    "Count to three.",
    "Why?",
    "Tell me a joke.",
    "How are you?",
    "Name a colour.",
    "What is two plus two?",
]
HELD_OUT = "Where do penguins live?"
SETTINGS = ["learning_rate=20", "epochs=8", "batch_size=4", "micro_batch_size=2", "max_length=64"]


def _chat(question: str, answer: str = ANSWER) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """The stage trained through the CLI: the default point (the middle layer), 16 steps."""
    run = tmp_path_factory.mktemp("runs") / "r"
    data = write_jsonl(run / "data" / "sft.jsonl", [_chat(q) for q in QUESTIONS])
    args = ["train", "steer-vector", "--data", data, "--out", run / "steer", "--model", tiny_model_dir]
    args += [a for s in [*SETTINGS, "model.device=cpu"] for a in ("--set", s)]
    result = CliRunner().invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    return {"dir": run / "steer", "data": data, "args": args, "output": result.output}


def _losses(stage_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_vector_lowers_the_answer_loss_and_steering_raises_the_answer(trained, tiny_model_dir):
    metrics = load_manifest(trained["dir"])["metrics"]
    losses = _losses(trained["dir"])
    assert metrics["point"] == "layers.1.resid_post"  # 2 layers: the middle one is 2 // 2
    assert len(losses) == metrics["steps"] == 16  # 8 examples / 4 per step x 8 epochs
    assert losses[-1] < 0.5 * losses[0] and metrics["final_loss"] == losses[-1]
    assert f"final loss {losses[-1]:.4f}" in trained["output"]
    assert f"vector norm {metrics['vector_norm']:.4f} at layers.1.resid_post" in trained["output"]

    path = trained["dir"] / VECTOR_FILE
    with safe_open(path, framework="pt") as f:
        assert list(f.keys()) == ["vector"] and f.metadata()["point"] == "layers.1.resid_post"
    vector = read_vector(path)
    assert vector.shape == (64,) and float(vector.norm()) == pytest.approx(metrics["vector_norm"])

    # What `molab audit steer eval --vector FILE --point P --add 1.0` does to the model.
    target = Steerable(ModelSpec(name=str(tiny_model_dir), device="cpu"))
    steer = Intervention(op="add", amount=1.0, vector=path, point=metrics["point"])
    prompts = [Prompt.chat(q) for q in [*QUESTIONS, HELD_OUT]]
    before = [s.logprob for s in target.scorer()(prompts, [ANSWER] * len(prompts))]
    with target.steered(steer):
        after = [s.logprob for s in target.scorer()(prompts, [ANSWER] * len(prompts))]
    assert all(a > b + 10 for a, b in zip(after, before)), (before, after)  # nats


def test_steering_with_the_file_is_the_trained_intervention(trained, tiny_model_dir, tokenizer):
    """The steer path with `--add 1.0` and the file's point gives the training forward's
    logits and loss bit for bit."""
    target = Steerable(ModelSpec(name=str(tiny_model_dir), device="cpu"))
    path = trained["dir"] / VECTOR_FILE
    with safe_open(path, framework="pt") as f:
        point = f.metadata()["point"]
    rows, _ = chat_rows(sft_examples(trained["data"]), tokenizer, 64)
    ids = torch.tensor([rows[0][0]])
    vector = torch.nn.Parameter(read_vector(path))  # as in training: a trainable tensor
    with torch.no_grad():
        with steered(target.model, point, vector):
            ours = answer_loss_sum(target.model, rows, tokenizer.pad_token_id)
            logits = target.model(ids).logits  # [1, seq, vocab]
        with target.steered(Intervention(op="add", amount=1.0, vector=path, point=point)):
            theirs = answer_loss_sum(target.model, rows, tokenizer.pad_token_id)
            assert torch.equal(target.model(ids).logits, logits)
        plain = target.model(ids).logits
    assert torch.equal(ours[0], theirs[0]) and ours[1] == theirs[1] > 0
    assert not torch.equal(plain, logits)  # the vector does change the forward


def test_the_model_is_frozen_and_left_unchanged(tmp_path, tiny_model_dir, tokenizer):
    loaded = load_model(ModelSpec(name=str(tiny_model_dir), device="cpu"))
    model = loaded.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = write_jsonl(tmp_path / "sft.jsonl", [_chat(q) for q in QUESTIONS])
    rows, _ = chat_rows(sft_examples(data), tokenizer, 64)
    config = SteerVectorConfig(learning_rate=20, epochs=1, batch_size=4)
    steps: list[dict] = []
    vector = train_vector(model, rows, "layers.0.resid_post", config, tokenizer.pad_token_id, steps.append)
    assert len(steps) == 2 and float(vector.norm()) > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    assert hooks.active_edits(model) is None  # the vector is off once training ends

    again = train_vector(model, rows, "layers.0.resid_post", config, tokenizer.pad_token_id, steps.append)
    assert torch.equal(vector, again)  # deterministic under the seed
    capped = config.model_copy(update={"max_norm": 1.0})
    short = train_vector(model, rows, "layers.0.resid_post", capped, tokenizer.pad_token_id, steps.append)
    assert float(short.norm()) == pytest.approx(1.0)


def test_rows_are_tokenised_and_masked_as_sft_does(tmp_path, tiny_model_dir):
    """The same input ids and labels as the SFT stage's TRL trainer, truncation and the
    dropping of examples whose prompt fills max_length included."""
    model, tok, _ = load_start_model(ModelSpec(name=str(tiny_model_dir)), "lora")
    long = _chat("Please answer at length. " * 20, "A long answer. " * 10)
    examples = sft_examples(write_jsonl(tmp_path / "sft.jsonl", [*sft_rows(3), long]))
    config = SFTTrainConfig(batch_size=4, max_length=48)
    trainer = build_trainer("sft", config, model, tok, Dataset.from_list(examples), tmp_path / "w", 1, [])
    rows, dropped = chat_rows(examples, tok, 48)
    assert dropped == 1 and [list(r) for r in rows] == [
        [e["input_ids"], e["labels"]] for e in trainer.train_dataset
    ]
    assert any(len(ids) == 48 for ids, _ in rows)  # an answer was cut


def test_rerun_is_skipped_and_bad_input_is_one_line(trained, tmp_path, monkeypatch, capsys):
    code, out, _ = run_cli(trained["args"], monkeypatch, capsys)
    assert code == 0
    assert out.startswith(f"steer-vector: up to date, skipped -> {trained['dir']}")

    dpo = write_jsonl(tmp_path / "dpo.jsonl", dpo_rows(2))
    cases = {
        ("--data", dpo): "no 'messages' field; it looks like a DPO set",
        ("--point", "layers.7.resid_post"): "layers.7.resid_post is out of range: ",
        ("--point", "layers.1.resid"): "'layers.1.resid' is not a hook point",
    }
    for (option, value), message in cases.items():
        args = [*trained["args"], option, value, "--out", tmp_path / "r" / "steer"]
        code, out, err = run_cli(args, monkeypatch, capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "r" / "steer").exists()
