"""Run directories and stage manifests: resume, caching and atomicity for the pipeline.

Stage `s` of run `r` writes its outputs to `<root>/r/s/` (root: an argument, else $MOLAB_RUNS,
else `./runs`) beside a `manifest.json` recording what made them: the resolved config and its
hash, input and output SHA-256s, package versions, git commit, seed, timings and metrics.

- Caching and resume: `run_stage` skips a stage whose manifest is complete and whose config,
  seed, inputs and outputs still hash the same, so a re-run redoes only what changed or was lost.
- Atomicity: a stage runs into a temporary sibling directory, gets its manifest last and is
  renamed into place, so a killed or failed run never leaves a half-written stage that looks
  complete, and a failure keeps the previous complete stage (the error goes to `s.failed.json`).
- Secrets: string config fields named like "key", "token" or "secret" show as "***" in
  manifests (the config hash still covers their real values).
- Work that outlives a failure: a stage may keep files that must survive a kill (training
  checkpoints) in `<root>/r/s.work/` (`RunDir.work_dir`); it is deleted once the stage completes.
- Several processes (a distributed launch): only the main one writes the stage; the others run
  `fn` into a temporary directory that is thrown away (`run_stage(..., main_process=False)`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from molab import __version__
from molab.errors import MolabError
from molab.files import atomic_path, sha256_file, write_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SECRET = re.compile(r"key|token|secret", re.IGNORECASE)


def _check_name(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise MolabError(f"bad {kind} name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


class RunDir:
    """The directory `<root>/<name>` holding one run's stages."""

    def __init__(self, name: str, root: str | Path | None = None):
        self.name = _check_name("run", name)
        root = root if root is not None else os.environ.get("MOLAB_RUNS") or "runs"
        self.path = Path(root).expanduser().resolve() / name

    def stage_dir(self, stage: str) -> Path:
        return self.path / _check_name("stage", stage)

    def work_dir(self, stage: str) -> Path:
        """Files of `stage` that must survive a failed or killed run (e.g. checkpoints)."""
        return self.path / f"{_check_name('stage', stage)}.work"


@dataclass
class StageResult:
    dir: Path
    manifest: dict
    skipped: bool


def redact(obj: Any) -> Any:
    """`obj` (JSON data) with string values under secret-looking keys replaced by '***'."""
    if isinstance(obj, dict):
        return {
            k: "***" if isinstance(v, str) and _SECRET.search(str(k)) else redact(v) for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def config_hash(config: BaseModel) -> str:
    data = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def hash_path(path: Path) -> str:
    """SHA-256 of a file, or of a directory's sorted relative file names and contents."""
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise MolabError(f"input {path} does not exist")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _outputs(stage_dir: Path) -> list[dict]:
    files = sorted(p for p in stage_dir.rglob("*") if p.is_file() and p != stage_dir / MANIFEST)
    return [{"path": p.relative_to(stage_dir).as_posix(), "sha256": sha256_file(p)} for p in files]


def _versions() -> dict[str, str]:
    versions = {"molab": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _git() -> dict | None:
    """{commit, dirty} of the git repository holding the cwd; None outside one (or without git)."""

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], check=False, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    status = git("status", "--porcelain")
    return None if status is None else {"commit": git("rev-parse", "HEAD"), "dirty": bool(status)}


def load_manifest(stage_dir: str | Path) -> dict:
    """A stage's manifest; a MolabError naming the file if it is missing or corrupt."""
    path = Path(stage_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise MolabError(f"{path} is missing: the stage has not run") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MolabError(f"{path} is corrupt ({e.__class__.__name__}: {e}): re-run the stage") from e
    if not isinstance(manifest, dict):
        raise MolabError(f"{path} is corrupt (not a JSON object): re-run the stage")
    return manifest


def _up_to_date(stage_dir: Path, chash: str, inputs: dict[str, dict], seed: int | None) -> dict | None:
    """The manifest of `stage_dir` if it is complete and matches; None otherwise."""
    sums = {k: v["sha256"] for k, v in inputs.items()}
    try:
        m = load_manifest(stage_dir)
        fresh = (
            m["status"] == "complete"
            and m["config_hash"] == chash
            and m["seed"] == seed
            and {k: v["sha256"] for k, v in m["inputs"].items()} == sums
            and all(sha256_file(stage_dir / o["path"]) == o["sha256"] for o in m["outputs"])
        )
    except (MolabError, OSError, KeyError, TypeError, AttributeError):  # OSError: an output is gone
        return None
    return m if fresh else None


def run_stage(
    run: RunDir,
    stage: str,
    config: BaseModel,
    fn: Callable[[Path], dict | None],
    *,
    inputs: dict[str, Path] | None = None,
    seed: int | None = None,
    force: bool = False,
    main_process: bool = True,
) -> StageResult:
    """Run `fn(out_dir)` (it writes outputs into `out_dir`, returns metrics) as `stage` of `run`.

    Skipped if an up-to-date complete stage exists (unless `force`). If `fn` raises, the previous
    stage directory is kept, `<run>/<stage>.failed.json` records the error, and it re-raises.
    On success `run.work_dir(stage)` is deleted. With `main_process=False` (a non-main process
    of a distributed launch) `fn` runs into a throwaway directory and nothing is written.
    """
    stage_dir = run.stage_dir(stage)
    chash = config_hash(config)
    hashed = {k: {"path": str(p), "sha256": hash_path(Path(p))} for k, p in (inputs or {}).items()}
    if not force and (m := _up_to_date(stage_dir, chash, hashed, seed)) is not None:
        log.info("stage %s of run %s is up to date: skipped (%s)", stage, run.name, stage_dir)
        return StageResult(stage_dir, m, skipped=True)
    if not main_process:
        with tempfile.TemporaryDirectory(prefix=f"molab-{stage}-") as tmp:
            metrics = fn(Path(tmp))
        return StageResult(
            stage_dir, {"status": "not written (not the main process)", "metrics": metrics or {}}, False
        )

    # Temporaries left by a killed run of this stage (large checkpoints, possibly).
    leftover = re.compile(rf"\.{re.escape(stage)}\.[a-z0-9_]+\.tmp")
    for p in run.path.iterdir() if run.path.is_dir() else ():
        if leftover.fullmatch(p.name):
            shutil.rmtree(p, ignore_errors=True)
    failed = run.path / f"{stage}.failed.json"
    manifest: dict[str, Any] = {
        "stage": stage,
        "run": run.name,
        "status": None,
        "config": redact(config.model_dump(mode="json")),
        "config_hash": chash,
        "inputs": hashed,
        "outputs": [],
        "versions": _versions(),
        "git": _git(),
        "seed": seed,
        "started_at": datetime.now(UTC).isoformat(),
        "finished_at": None,
        "wall_time_s": None,
        "metrics": {},
        "error": None,
    }
    t0 = time.monotonic()

    def finish(**fields: Any) -> None:
        manifest.update(fields, finished_at=datetime.now(UTC).isoformat(), wall_time_s=time.monotonic() - t0)

    try:
        with atomic_path(stage_dir) as tmp:
            tmp.mkdir()
            metrics = fn(tmp)
            finish(status="complete", metrics=metrics or {}, outputs=_outputs(tmp))
            write_json(tmp / MANIFEST, manifest)
    except BaseException as e:  # KeyboardInterrupt too: record it, then let it through
        error = "".join(traceback.format_exception_only(e)).strip()
        finish(status="failed", metrics={}, outputs=[], error=error)
        write_json(failed, manifest)
        raise
    failed.unlink(missing_ok=True)
    shutil.rmtree(run.work_dir(stage), ignore_errors=True)
    return StageResult(stage_dir, load_manifest(stage_dir), skipped=False)


def stage_output(run: RunDir, stage: str, filename: str) -> Path:
    """Path of `filename` in a completed stage; a MolabError if the stage has not completed."""
    stage_dir = run.stage_dir(stage)
    try:
        complete = load_manifest(stage_dir).get("status") == "complete"
    except MolabError:
        complete = False
    if not complete:
        raise MolabError(f"stage {stage} of run {run.name} has not completed: run it first")
    path = stage_dir / filename
    if not path.exists():
        raise MolabError(f"stage {stage} of run {run.name} has no output {filename!r} (in {stage_dir})")
    return path
