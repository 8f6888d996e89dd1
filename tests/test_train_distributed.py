"""The distributed path on this CPU machine: `accelerate launch` with 2 processes (gloo) trains
the same SFT stage as one process, to the same loss curve and adapter, and only the main
process writes the stage.

Why `--multi_gpu`: in accelerate 1.x, `accelerate launch --cpu --num_processes 2` starts one
process unless MPI is set up (it launches CPU jobs through mpirun); `--multi_gpu` goes through
torchrun, and on a machine without CUDA (or with `model.device=cpu`, so the trainer runs with
`use_cpu`) the processes join a gloo process group on the CPU.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_sets import sft_rows, single_thread, write_jsonl  # noqa: F401

from molab.models.loading import ModelSpec
from molab.pipeline import load_manifest
from molab.train.config import SFTTrainConfig
from molab.train.stages import train_stage

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SETTINGS = dict(max_steps=4, batch_size=4, max_length=64, learning_rate=1e-2, seed=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _curve(stage_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(
    not (BIN / "accelerate").exists() or not (BIN / "molab").exists(), reason="no console scripts"
)
def test_two_cpu_processes_match_one(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(8))
    config = SFTTrainConfig(model=ModelSpec(name=str(tiny_model_dir), device="cpu"), data=data, **SETTINGS)
    one = train_stage("sft", config, tmp_path / "runs" / "one" / "sft")

    two = tmp_path / "runs" / "two" / "sft"
    launch = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    cmd = [*launch, str(BIN / "molab"), "train", "sft", "--out", str(two), "--data", str(data)]
    cmd += ["--model", str(tiny_model_dir), "--set", "model.device=cpu"]
    cmd += [f"--set={k}={v}" for k, v in SETTINGS.items()]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # Both processes took part: rank 1 reports its steps, and the token count (gathered over
    # the processes) equals the single process's, each rank having fed half of every batch.
    assert "process 1 of 2: 4 steps" in proc.stderr
    assert proc.stdout.count("sft: done") == 1  # only the main process writes the stage
    m, ref = load_manifest(two)["metrics"], one.manifest["metrics"]
    assert m["processes"] == 2 and ref["processes"] == 1
    assert m["steps"] == ref["steps"] == 4 and m["tokens"] == ref["tokens"]
    assert _curve(two) == pytest.approx(_curve(one.dir), rel=1e-4)
    got = load_file(two / "adapter" / "adapter_model.safetensors")
    want = load_file(one.dir / "adapter" / "adapter_model.safetensors")
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-4)
