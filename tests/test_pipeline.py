"""Run directories and stage manifests: caching, re-runs, atomicity, failure records, redaction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from molab.errors import MolabError
from molab.files import sha256_file
from molab.pipeline import RunDir, hash_path, load_manifest, run_function, run_stage, stage_output


class Inner(BaseModel):
    hf_token: str = "hf_secret_value"
    max_new_tokens: int = 32


class Cfg(BaseModel):
    lr: float = 1e-4
    name: str = "a"
    api_key: str | None = "sk-12345"
    inner: Inner = Inner()


class Counter:
    """A stage function that writes two outputs and counts its calls."""

    def __init__(self, text: str = "hello"):
        self.calls = 0
        self.text = text

    def __call__(self, out: Path) -> dict:
        self.calls += 1
        (out / "out.txt").write_text(self.text)
        (out / "sub").mkdir()
        (out / "sub" / "b.jsonl").write_text('{"x": 1}\n')
        return {"n": self.calls}


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a git repository
    return RunDir("r1", tmp_path / "runs")


@pytest.fixture
def data(tmp_path):
    f = tmp_path / "data.jsonl"
    f.write_text('{"prompt": "hi"}\n')
    d = tmp_path / "dir"
    d.mkdir()
    (d / "a.txt").write_text("a")
    (d / "b.txt").write_text("b")
    return {"data": f, "dir": d}


def leftovers(run: RunDir) -> list[str]:
    return sorted(p.name for p in run.path.iterdir() if p.name.startswith("."))


def test_root_from_env_and_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MOLAB_RUNS", raising=False)
    assert RunDir("x").path == tmp_path.resolve() / "runs" / "x"
    monkeypatch.setenv("MOLAB_RUNS", str(tmp_path / "elsewhere"))
    assert RunDir("x").stage_dir("train") == tmp_path.resolve() / "elsewhere" / "x" / "train"
    assert RunDir("x", tmp_path / "arg").path == tmp_path.resolve() / "arg" / "x"
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(MolabError):
            RunDir(bad)
    with pytest.raises(MolabError):
        RunDir("x").stage_dir("../escape")


def test_manifest_fields_and_hashes(run, data):
    fn = Counter()
    res = run_function(run, "train", Cfg(), fn, inputs=data, seed=7)
    assert not res.skipped and fn.calls == 1
    assert res.dir == run.path / "train"
    m = load_manifest(res.dir)
    assert m == json.loads(json.dumps(res.manifest))
    assert set(m) == {
        "stage", "config_class", "run", "status", "config", "config_hash", "inputs", "outputs", "versions",
        "git", "seed", "started_at", "finished_at", "wall_time_s", "metrics", "error",
    }  # fmt: skip
    assert (m["stage"], m["run"], m["status"], m["seed"], m["error"]) == ("train", "r1", "complete", 7, None)
    assert m["metrics"] == {"n": 1}
    assert m["inputs"]["data"] == {"path": str(data["data"]), "sha256": sha256_file(data["data"])}
    assert m["inputs"]["dir"]["sha256"] == hash_path(data["dir"])
    assert m["outputs"] == [
        {"path": "out.txt", "sha256": sha256_file(res.dir / "out.txt")},
        {"path": "sub/b.jsonl", "sha256": sha256_file(res.dir / "sub" / "b.jsonl")},
    ]
    assert m["versions"]["molab"] and m["versions"]["python"]
    assert m["git"] is None
    assert m["started_at"].endswith("+00:00") and m["finished_at"] >= m["started_at"]
    assert m["wall_time_s"] >= 0
    assert leftovers(run) == [] and not (run.path / "train.failed.json").exists()


def test_directory_hash_covers_names_and_contents(data):
    d = data["dir"]
    before = hash_path(d)
    (d / "b.txt").rename(d / "c.txt")
    renamed = hash_path(d)
    (d / "c.txt").write_text("changed")
    assert len({before, renamed, hash_path(d)}) == 3
    with pytest.raises(MolabError, match="does not exist"):
        hash_path(d / "missing")


def test_git_recorded_in_a_repository(run, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    try:
        subprocess.run(["git", "init", "-q", str(repo)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git not available")
    (repo / "f").write_text("x")
    monkeypatch.chdir(repo)
    m = run_function(run, "s", Cfg(), Counter()).manifest
    assert m["git"] == {"commit": None, "dirty": True}  # no commit yet, an untracked file


def test_same_config_and_inputs_skips(run, data, caplog):
    fn = Counter()
    first = run_function(run, "train", Cfg(), fn, inputs=data, seed=1)
    caplog.set_level("INFO", logger="molab.pipeline")
    again = run_function(run, "train", Cfg(), fn, inputs=data, seed=1)
    assert again.skipped and fn.calls == 1
    assert again.manifest == load_manifest(first.dir)
    assert len(caplog.records) == 1 and "skipped" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    "change",
    ["config", "nested_config", "seed", "input_content", "dir_input", "input_added", "force"],
)
def test_changes_rerun(run, data, change):
    fn = Counter()
    run_function(run, "train", Cfg(), fn, inputs=data, seed=1)
    cfg, inputs, seed, force = Cfg(), dict(data), 1, False
    if change == "config":
        cfg = Cfg(lr=2e-4)
    elif change == "nested_config":
        cfg = Cfg(inner=Inner(max_new_tokens=64))
    elif change == "seed":
        seed = 2
    elif change == "input_content":
        data["data"].write_text('{"prompt": "bye"}\n')
    elif change == "dir_input":
        (data["dir"] / "new.txt").write_text("n")
    elif change == "input_added":
        inputs["extra"] = data["dir"] / "a.txt"
    else:
        force = True
    res = run_function(run, "train", cfg, fn, inputs=inputs, seed=seed, force=force)
    assert not res.skipped and fn.calls == 2
    assert load_manifest(res.dir)["metrics"] == {"n": 2}
    # And the re-run result is itself cached.
    assert run_function(run, "train", cfg, fn, inputs=inputs, seed=seed).skipped and fn.calls == 2


@pytest.mark.parametrize("damage", ["delete", "modify", "delete_dir"])
def test_damaged_output_reruns(run, damage):
    fn = Counter()
    res = run_function(run, "s", Cfg(), fn)
    if damage == "delete":
        (res.dir / "out.txt").unlink()
    elif damage == "modify":
        (res.dir / "sub" / "b.jsonl").write_text("tampered\n")
    else:
        (res.dir / "sub" / "b.jsonl").unlink()
        (res.dir / "sub").rmdir()
    assert not run_function(run, "s", Cfg(), fn).skipped and fn.calls == 2
    assert (res.dir / "out.txt").read_text() == "hello"
    assert (res.dir / "sub" / "b.jsonl").read_text() == '{"x": 1}\n'


def test_failure_keeps_previous_stage_and_records(run, data):
    good = run_function(run, "train", Cfg(), Counter("v1"), inputs=data, seed=1)
    before = {p.relative_to(good.dir): p.read_bytes() for p in good.dir.rglob("*") if p.is_file()}

    def boom(out: Path) -> dict:
        (out / "out.txt").write_text("partial")
        raise ValueError("boom at step 3")

    with pytest.raises(ValueError, match="boom at step 3"):
        run_function(run, "train", Cfg(lr=1.0), boom, inputs=data, seed=1)
    after = {p.relative_to(good.dir): p.read_bytes() for p in good.dir.rglob("*") if p.is_file()}
    assert after == before
    failed = json.loads((run.path / "train.failed.json").read_text())
    assert failed["status"] == "failed" and failed["error"] == "ValueError: boom at step 3"
    assert failed["config"]["lr"] == 1.0 and failed["outputs"] == [] and failed["finished_at"]
    assert leftovers(run) == []
    assert stage_output(run, "train", "out.txt").read_text() == "v1"
    # The old stage still matches its own config, so it is still a cache hit.
    assert run_function(run, "train", Cfg(), Counter(), inputs=data, seed=1).skipped
    # A later success clears the failure record.
    run_function(run, "train", Cfg(lr=1.0), Counter(), inputs=data, seed=1)
    assert not (run.path / "train.failed.json").exists()


def test_failure_without_previous_stage_leaves_no_stage_dir(run):
    def interrupted(out: Path) -> None:
        (out / "ckpt.bin").write_bytes(b"x" * 100)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_function(run, "train", Cfg(), interrupted)
    assert not run.stage_dir("train").exists() and leftovers(run) == []
    assert json.loads((run.path / "train.failed.json").read_text())["error"] == "KeyboardInterrupt"
    with pytest.raises(MolabError, match="stage train of run r1 has not completed: run it first"):
        stage_output(run, "train", "ckpt.bin")


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
from pydantic import BaseModel
from molab.pipeline import RunDir, run_function

class C(BaseModel):
    x: int = 1

def fn(out: Path):
    (out / "ckpt.bin").write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)

run_function(RunDir("r1", sys.argv[1]), "train", C(), fn)
"""


def test_killed_process_never_leaves_a_complete_looking_stage(run, tmp_path):
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    cmd = [sys.executable, str(script), str(run.path.parent)]
    proc = subprocess.run(cmd, check=False, env=env, timeout=120)
    assert proc.returncode == -9
    assert not run.stage_dir("train").exists()
    assert len(leftovers(run)) == 1  # the temporary, with the half-written checkpoint inside
    with pytest.raises(MolabError, match="has not completed"):
        stage_output(run, "train", "ckpt.bin")
    fn = Counter()
    res = run_function(run, "train", Cfg(), fn)
    assert not res.skipped and fn.calls == 1
    assert leftovers(run) == []  # the next run cleaned the killed run's temporary


def test_corrupt_manifest_reruns_only_with_force(run):
    fn = Counter()
    res = run_function(run, "s", Cfg(), fn)
    (res.dir / "manifest.json").write_text('{"stage": "s", "status": "compl')
    with pytest.raises(MolabError, match=r"manifest\.json is corrupt"):
        load_manifest(res.dir)
    assert str(res.dir / "manifest.json") in _message(lambda: load_manifest(res.dir))
    # An unreadable manifest proves nothing about who wrote the folder: replaced only with force.
    msg = _message(lambda: run_function(run, "s", Cfg(), fn))
    assert str(res.dir) in msg and "--force" in msg and fn.calls == 1
    assert not run_function(run, "s", Cfg(), fn, force=True).skipped and fn.calls == 2
    assert load_manifest(res.dir)["status"] == "complete"


def test_manifest_missing_fields_or_not_an_object_reruns_with_force(run):
    fn = Counter()
    res = run_function(run, "s", Cfg(), fn)
    (res.dir / "manifest.json").write_text('{"status": "complete"}')
    assert "--force" in _message(lambda: run_function(run, "s", Cfg(), fn))
    assert not run_function(run, "s", Cfg(), fn, force=True).skipped
    (res.dir / "manifest.json").write_text("[1, 2]")
    with pytest.raises(MolabError, match="not a JSON object"):
        load_manifest(res.dir)
    assert not run_function(run, "s", Cfg(), fn, force=True).skipped and fn.calls == 3


def test_load_manifest_missing_names_file(tmp_path):
    msg = _message(lambda: load_manifest(tmp_path / "nope"))
    assert str(tmp_path / "nope" / "manifest.json") in msg


def test_secrets_redacted(run):
    res = run_function(run, "s", Cfg(), Counter())
    text = (res.dir / "manifest.json").read_text()
    assert "sk-12345" not in text and "hf_secret_value" not in text
    cfg = load_manifest(res.dir)["config"]
    assert cfg["api_key"] == "***" and cfg["inner"]["hf_token"] == "***"
    assert cfg["inner"]["max_new_tokens"] == 32 and cfg["name"] == "a" and cfg["lr"] == 1e-4
    assert run_function(run, "t", Cfg(api_key=None), Counter()).manifest["config"]["api_key"] is None

    def boom(out: Path) -> None:
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        run_function(run, "u", Cfg(), boom)
    assert "sk-12345" not in (run.path / "u.failed.json").read_text()


def test_stage_output(run):
    with pytest.raises(MolabError, match="stage train of run r1 has not completed: run it first"):
        stage_output(run, "train", "out.txt")
    run_function(run, "train", Cfg(), Counter())
    assert stage_output(run, "train", "sub/b.jsonl") == run.stage_dir("train") / "sub" / "b.jsonl"
    with pytest.raises(MolabError, match="no output 'missing.txt'"):
        stage_output(run, "train", "missing.txt")
    (run.stage_dir("train") / "manifest.json").write_text("garbage")
    with pytest.raises(MolabError, match="has not completed"):
        stage_output(run, "train", "out.txt")


def _message(call) -> str:
    with pytest.raises(MolabError) as e:
        call()
    return str(e.value)


def test_a_declared_stage_supplies_its_own_inputs(run, data):
    from molab.pipeline import Stage

    calls = []

    def write(config, out, stage_dir):
        calls.append(stage_dir)
        (out / "out.txt").write_text(str(config.lr))
        return {}

    stage = Stage("s", Cfg, ("out.txt",), write, inputs=lambda config, stage_dir: {"data": data["data"]})
    res = run_stage(run, "s", stage, Cfg())
    assert calls == [run.stage_dir("s")] and set(res.manifest["inputs"]) == {"data"}
    assert stage.output(res.dir) == run.stage_dir("s") / "out.txt"
    assert run_stage(run, "s", stage, Cfg()).skipped
    data["data"].write_text('{"prompt": "changed"}\n')  # an input the stage declared
    assert not run_stage(run, "s", stage, Cfg()).skipped and len(calls) == 2
    with pytest.raises(TypeError, match="takes a Cfg, not a Inner"):
        run_stage(run, "s", stage, Inner())
