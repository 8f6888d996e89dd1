"""molab replaces only what it wrote, one process writes a stage, and bad files are named.

Each case here once lost a user's data or failed late: `--out` over a folder molab did not
write, over another stage's outputs or over `.`; two processes on one stage; a lock left by a
killed process; a directory given where a file was meant; input files that are not UTF-8 JSONL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from molab.errors import MolabError
from molab.files import atomic_path, check_output_file, read_jsonl, write_json, write_text
from molab.pipeline import RunDir, load_manifest, run_function

REPO = Path(__file__).resolve().parents[1]


class A(BaseModel):
    x: int = 1


class B(BaseModel):
    y: int = 1


def write(out: Path) -> dict:
    (out / "out.txt").write_text("molab")
    return {}


def message(call) -> str:
    with pytest.raises(MolabError) as e:
        call()
    return str(e.value)


def user_folder(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True, exist_ok=True)
    (path / "thesis.tex").write_text("chapter 1")
    (path / "data").mkdir(exist_ok=True)
    (path / "data" / "set.csv").write_text("a,b\n")
    return snapshot(path)


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.mark.parametrize("force", [False, True])
def test_a_folder_molab_did_not_write_is_never_replaced(tmp_path, force):
    run = RunDir("r", tmp_path)
    before = user_folder(run.stage_dir("s"))
    msg = message(lambda: run_function(run, "s", A(), write, force=force))
    assert str(run.stage_dir("s")) in msg and "not a molab stage" in msg
    assert snapshot(run.stage_dir("s")) == before


def test_files_added_to_a_stage_are_not_deleted_with_it(tmp_path):
    run = RunDir("r", tmp_path)
    run_function(run, "s", A(), write)
    (run.stage_dir("s") / "notes.md").write_text("my notes")
    msg = message(lambda: run_function(run, "s", A(x=2), write, force=True))
    assert "notes.md" in msg and "did not write" in msg
    assert (run.stage_dir("s") / "notes.md").read_text() == "my notes"
    assert load_manifest(run.stage_dir("s"))["config"] == {"x": 1}


def test_another_stages_outputs_are_replaced_only_with_force(tmp_path):
    run = RunDir("r", tmp_path)
    run_function(run, "s", A(), write)
    msg = message(lambda: run_function(run, "s", B(), write))
    assert "outputs of stage 's' (A), not of B" in msg and "--force" in msg
    assert load_manifest(run.stage_dir("s"))["config_class"] == "A"
    run_function(run, "s", B(), write, force=True)
    assert load_manifest(run.stage_dir("s"))["config_class"] == "B"


def test_this_stage_empty_or_missing_folders_are_replaced(tmp_path):
    run = RunDir("r", tmp_path)
    run.stage_dir("empty").mkdir(parents=True)
    assert not run_function(run, "empty", A(), write).skipped
    run_function(run, "s", A(), write)
    assert not run_function(run, "s", A(x=3), write).skipped  # its own stage, out of date
    assert load_manifest(run.stage_dir("s"))["config"] == {"x": 3}
    # A manifest from before `config_class` was recorded: the stage name decides.
    manifest = load_manifest(run.stage_dir("s"))
    del manifest["config_class"]
    (run.stage_dir("s") / "manifest.json").write_text(json.dumps(manifest))
    assert not run_function(run, "s", A(x=4), write).skipped


def test_out_dot_is_refused_through_the_cli(tmp_path, monkeypatch, capsys):
    from molab.cli import main

    before = user_folder(tmp_path / "work")
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setattr(sys, "argv", ["molab", "data", "prompts", "--out", "."])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "not a molab stage" in err and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path / "work") == before


def test_a_directory_is_never_replaced_by_a_file(tmp_path):
    before = user_folder(tmp_path / "results")
    assert "existing directory" in message(lambda: write_text(tmp_path / "results", "x"))
    assert "existing directory" in message(lambda: write_json(tmp_path / "results", {}))
    assert "is a directory" in message(lambda: check_output_file(tmp_path / "results"))
    assert snapshot(tmp_path / "results") == before
    with pytest.raises(MolabError):
        with atomic_path(tmp_path / "results") as tmp:
            tmp.mkdir()
    assert snapshot(tmp_path / "results") == before


def test_an_output_below_a_file_is_named_before_work(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    msg = message(lambda: check_output_file(tmp_path / "notes.txt" / "out.jsonl"))
    assert f"--out {tmp_path / 'notes.txt' / 'out.jsonl'}" in msg and "is a file, not a folder" in msg
    calls = []
    msg = message(lambda: run_function(RunDir("r", tmp_path / "notes.txt"), "s", A(), calls.append))
    assert str(tmp_path / "notes.txt" / "r" / "s") in msg and ".tmp" not in msg and calls == []
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_unwritable_output_folder_is_named_before_work(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes everywhere")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        msg = message(lambda: check_output_file(locked / "sub" / "out.jsonl"))
        assert f"--out {locked / 'sub' / 'out.jsonl'}" in msg and "not writable" in msg
        calls = []
        msg = message(lambda: run_function(RunDir("r", locked), "s", A(), lambda out: calls.append(out)))
        assert str(locked / "r" / "s") in msg and ".tmp" not in msg and calls == []
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------ one writer per stage

HOLD = """
import sys, time
from pathlib import Path
from pydantic import BaseModel
from molab.pipeline import RunDir, run_function

class A(BaseModel):
    x: int = 1

def slow(out: Path):
    (out / "part.bin").write_bytes(b"x")
    Path(sys.argv[2]).write_text("started")
    time.sleep(float(sys.argv[3]))
    (out / "out.txt").write_text("first")
    return {}

run_function(RunDir("r", sys.argv[1]), "s", A(), slow)
"""


def start_writer(tmp_path, seconds: float) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    started = tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "runs"), str(started), str(seconds)], env=env
    )
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the writer did not start"
        time.sleep(0.05)
    return proc, started


def test_a_second_writer_stops_at_once_and_the_first_finishes(tmp_path):
    proc, _ = start_writer(tmp_path, seconds=3)
    run = RunDir("r", tmp_path / "runs")
    calls = []
    msg = message(lambda: run_function(run, "s", A(), lambda out: calls.append(out)))
    assert f"being written by process {proc.pid}" in msg and str(run.stage_dir("s")) in msg and calls == []
    assert "being written" in message(lambda: run_function(run, "s", A(), write, force=True))
    assert proc.wait(timeout=60) == 0
    assert (run.stage_dir("s") / "out.txt").read_text() == "first"
    assert not (run.path / "s.lock").exists()
    assert run_function(run, "s", A(), write).skipped  # and the lock is free again


def test_a_killed_writers_lock_and_temporaries_are_taken_over(tmp_path, caplog):
    proc, _ = start_writer(tmp_path, seconds=60)
    run = RunDir("r", tmp_path / "runs")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (run.path / "s.lock").exists() and any(p.name.startswith(".s.") for p in run.path.iterdir())
    assert not run_function(run, "s", A(), write).skipped
    assert (run.stage_dir("s") / "out.txt").read_text() == "molab"
    assert f"{run.path / 's.lock'} of process {proc.pid}" in caplog.text
    assert sorted(p.name for p in run.path.iterdir()) == ["s"]


def test_one_run_at_a_time(tmp_path):
    run = RunDir("r", tmp_path)
    with run.lock():
        code = f"from molab.pipeline import RunDir\nwith RunDir('r', {str(tmp_path)!r}).lock(): pass"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        assert (
            proc.returncode != 0
            and f"run r ({run.path}) is being written by process {os.getpid()}" in proc.stderr
        )
    with run.lock():  # released
        pass


# ------------------------------------------------------------ input files named by file and line


def test_invalid_utf8_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    msg = message(lambda: read_jsonl(path))
    assert f"{path}, line 2, column 16: not UTF-8" in msg and "position" not in msg


def test_a_parquet_file_given_as_jsonl_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "documents.jsonl"
    pq.write_table(pa.table({"text": ["a"]}), path)
    assert message(lambda: read_jsonl(path)) == f"{path} is a Parquet file, not a JSONL file"


def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path):
    from molab.files import write_jsonl

    rows = [{"text": "one\u2028two\x85three"}, {"text": "four"}]
    write_jsonl(tmp_path / "x.jsonl", rows)
    assert read_jsonl(tmp_path / "x.jsonl") == rows


def test_a_work_folder_molab_did_not_make_is_neither_used_nor_deleted(tmp_path):
    from molab.train.resume import prepare_work_dir

    run = RunDir("r", tmp_path)
    before = user_folder(run.work_dir("sft"))
    msg = message(lambda: prepare_work_dir(run.work_dir("sft"), {"kind": "sft"}))
    assert str(run.work_dir("sft")) in msg and "not made by molab" in msg
    run_function(run, "sft", A(), write)  # a completed stage removes only a work folder molab made
    assert snapshot(run.work_dir("sft")) == before
    assert prepare_work_dir(run.work_dir("lora", create=True), {"kind": "sft"}) is None
    run_function(run, "lora", A(), write)
    assert not run.work_dir("lora").exists()


def test_a_corpus_and_a_split_file_name_the_line_of_bad_bytes(tmp_path):
    from molab.catalog.splits import load_split
    from molab.data.documents import read_texts

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b'{"text": "fine"}\n{"text": "\xff"}\n')
    assert message(lambda: list(read_texts(str(corpus)))) == f"corpus {corpus}, line 2: not UTF-8 text"
    split = tmp_path / "split.yaml"
    split.write_bytes(b"name: s\ntrain: [1]\ntest: [\xfe2]\n")
    assert f"{split}, line 3, column 8: not UTF-8" in message(lambda: load_split(split))


def test_a_key_in_a_stage_error_is_masked_in_the_failure_record(tmp_path, monkeypatch):
    key = "sk-live-Abc123Def456Ghi789"
    monkeypatch.setenv("MY_ENDPOINT_API_KEY", key)

    class WithEnv(BaseModel):
        api_key_env: str = "MY_ENDPOINT_API_KEY"

    def echo(out: Path) -> None:
        raise RuntimeError(f"401 from endpoint: bad key {key}")

    run = RunDir("r", tmp_path)
    with pytest.raises(RuntimeError):
        run_function(run, "s", WithEnv(), echo)
    text = (run.path / "s.failed.json").read_text()
    assert key not in text and "bad key ***" in text
    assert json.loads(text)["config"]["api_key_env"] == "MY_ENDPOINT_API_KEY"  # a name, not a secret


def test_a_stage_directory_must_sit_in_a_run_folder():
    assert "goes inside a run folder" in message(lambda: RunDir.of_stage("/data"))
    assert "bad stage name" in message(lambda: RunDir.of_stage("/tmp/runs/r/my stage"))
    run, stage = RunDir.of_stage("/tmp/runs/r/sft")
    assert (run.path, stage) == (Path("/tmp/runs/r"), "sft")


def test_training_from_a_model_with_corrupt_weights_names_the_file(tiny_model_dir, tmp_path):
    import shutil

    from molab.models.loading import ModelSpec
    from molab.train.adapters import load_start_model

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    msg = message(lambda: load_start_model(ModelSpec(name=str(model_dir)), "lora"))
    assert str(weights) in msg and "truncated or corrupt" in msg
