"""Checkpoints and resume: a stage killed mid-run resumes to the same steps and loss curve as an
uninterrupted run; a NaN loss stops with the last good checkpoint kept; checkpoints of another
model are refused; incomplete checkpoints are ignored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_llama
from safetensors.torch import load_file
from train_sets import sft_rows, single_thread, write_jsonl  # noqa: F401

from molab.errors import MolabError
from molab.models.loading import ModelSpec
from molab.pipeline import WORK_MARKER, RunDir
from molab.train.config import SFTTrainConfig
from molab.train.resume import FINGERPRINT, complete_checkpoints, prepare_work_dir
from molab.train.stages import train_stage

REPO = Path(__file__).resolve().parents[1]
SETTINGS = dict(max_steps=10, batch_size=2, max_length=64, learning_rate=1e-2, save_steps=2, seed=3)


def _config(model_dir: Path, data: Path, **changes) -> SFTTrainConfig:
    return SFTTrainConfig(model=ModelSpec(name=str(model_dir)), data=data, **SETTINGS | changes)


def _curve(stage_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


def test_killed_run_resumes_to_the_same_curve(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(6))  # 3 steps per epoch: resume mid-epoch
    reference = train_stage("sft", _config(tiny_model_dir, data), tmp_path / "runs" / "ref" / "sft")

    out = tmp_path / "runs" / "killed" / "sft"
    work = RunDir("killed", tmp_path / "runs").work_dir("sft")
    overrides = [f"--set={k}={v}" for k, v in SETTINGS.items()]
    cmd = [sys.executable, "-c", "from molab.cli import main; main()", "train", "sft", "--out", str(out)]
    cmd += ["--data", str(data), "--model", str(tiny_model_dir), *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (work.is_dir() and complete_checkpoints(work)) and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists() and complete_checkpoints(work)

    resumed = train_stage("sft", _config(tiny_model_dir, data), out)
    m, ref = resumed.manifest["metrics"], reference.manifest["metrics"]
    assert m["resumed_from_step"] >= 2 and m["steps"] == ref["steps"] == 10
    assert _curve(out) == pytest.approx(_curve(reference.dir), rel=1e-5)
    got, want = (
        load_file(out / "adapter" / "adapter_model.safetensors"),
        load_file(reference.dir / "adapter" / "adapter_model.safetensors"),
    )
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-5)
    assert not work.exists()  # checkpoints go once the stage completes


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_model_dir, tokenizer):
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(2))
    out = tmp_path / "runs" / "r" / "sft"
    work = out.parent / "sft.work"
    # Adam moves every weight by about the learning rate: after step 1 the forward overflows.
    with pytest.raises(
        MolabError, match=r"loss is (nan|inf).* at step 2; training stopped and the last good"
    ) as e:
        train_stage("sft", _config(tiny_model_dir, data, learning_rate=1e30, save_steps=1), out)
    assert str(work / "checkpoint-1") in str(e.value)
    assert [p.name for p in complete_checkpoints(work)] == ["checkpoint-1"]
    assert not (work / "checkpoint-2").exists() and not out.exists()
    weights = load_file(work / "checkpoint-1" / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    failed = json.loads((out.parent / "sft.failed.json").read_text())
    assert "at step 2" in failed["error"]

    # The same stage with another model refuses those checkpoints and leaves them as they are.
    other = tmp_path / "other-model"
    tiny_llama(tokenizer, hidden_size=32, intermediate_size=64).save_pretrained(other)
    tokenizer.save_pretrained(other)
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    with pytest.raises(MolabError, match=r"sft\.work holds checkpoints of another model \(different: base"):
        train_stage("sft", _config(other, data), out)
    assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before

    # --restart throws them away and trains from scratch.
    result = train_stage("sft", _config(tiny_model_dir, data, max_steps=2), out, restart=True)
    assert result.manifest["metrics"]["resumed_from_step"] is None and not work.exists()


def test_incomplete_checkpoints_are_ignored_and_removed(tmp_path):
    work = tmp_path / "s.work"
    for step in (2, 4, 6):
        (work / f"checkpoint-{step}").mkdir(parents=True)
    for step in (2, 4):
        (work / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (work / WORK_MARKER).touch()  # molab made it
    fingerprint = {"base": "m", "method": "lora"}
    assert prepare_work_dir(work, fingerprint) == work / "checkpoint-4"
    assert sorted(p.name for p in work.iterdir()) == [
        WORK_MARKER,
        "checkpoint-2",
        "checkpoint-4",
        FINGERPRINT,
    ]
    with pytest.raises(MolabError, match=r"another model \(different: method\)"):
        prepare_work_dir(work, {"base": "m", "method": "full"})
