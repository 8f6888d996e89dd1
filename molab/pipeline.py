"""Run directories and stage manifests: resume, caching and atomicity for the pipeline.

Stage `s` of run `r` writes its outputs to `<root>/r/s/` (root: an argument, else $MOLAB_RUNS,
else `./runs`) beside a `manifest.json` recording what made them: the resolved config and its
hash, input and output SHA-256s, package versions, git commit, seed, timings and metrics.

- A stage declares itself (`Stage`): its config class, the files it reads (derived from its
  config, so every caller hashes the same inputs), its outputs and its run function.
- Caching and resume: `run_stage` skips a stage whose manifest is complete and whose config,
  seed, inputs and outputs still hash the same, so a re-run redoes only what changed or was lost.
  What invalidates a stage: its config (every field, hashed), its seed, and the content of every
  input it declares (files by SHA-256; for a catalog, only the fields the stage reads, so that
  editing an `applied` rule re-runs the evaluations that judge with it and nothing upstream).
  molab's own version and code do not: a stage computed by an older molab stays valid, since
  re-running hours of training on every upgrade would cost more than it protects (the versions
  are recorded in the manifest; pass --force to recompute after a change that matters).
- Atomicity: a stage runs into a temporary sibling directory, gets its manifest last and is
  renamed into place, so a killed or failed run never leaves a half-written stage that looks
  complete, and a failure keeps the previous complete stage (the error goes to `s.failed.json`).
- Secrets: string config fields named like "key", "token" or "secret" show as "***" in
  manifests (the config hash still covers their real values), except `*_env` fields, which
  name a variable rather than hold its value; and every known secret value (`molab.secrets`)
  is masked wherever it appears in a manifest or failure record, e.g. an error message that
  echoes an API key.
- Work that outlives a failure: a stage may keep files that must survive a kill (training
  checkpoints) in `<root>/r/s.work/` (`RunDir.work_dir`); it is deleted once the stage completes.
- Several processes (a distributed launch): only the main one writes the stage; the others run
  `fn` into a temporary directory that is thrown away (`run_stage(..., main_process=False)`).
- Ownership: a stage directory is replaced only when molab wrote it for this stage: missing,
  empty, or holding a manifest of the same stage (its config class records what kind of
  stage it is) and nothing but the files that manifest lists. Another stage's outputs are
  replaced only with `force`; a folder molab did not write (no manifest, or files the
  manifest does not list) is never touched. The check runs before any work.
- One writer: each stage is written under `<root>/r/s.lock` (`molab.locks`), so a second
  process on the same stage stops at once, naming the first, and the clean-up of temporaries
  left by a killed run can never remove a live writer's.
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
from molab.files import Fingerprint, atomic_path, check_writable_dir, sha256_file, write_json
from molab.locks import exclusive
from molab.secrets import redact_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
WORK_MARKER = ".molab-work"  # in a stage's work directory: molab made it, so molab may delete it
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

    @classmethod
    def of_stage(cls, out: str | Path) -> tuple[RunDir, str]:
        """The run and stage name of a stage directory a user gave (`--out runs/x/sft`)."""
        out = Path(out).expanduser().resolve()
        if out.parent.parent == out.parent:  # `/` or a folder right under it
            raise MolabError(
                f"--out {out}: a stage directory goes inside a run folder (e.g. runs/x/{out.name or 'stage'})"
            )
        return cls(out.parent.name, out.parent.parent), _check_name("stage", out.name)

    def stage_dir(self, stage: str) -> Path:
        return self.path / _check_name("stage", stage)

    def work_dir(self, stage: str, create: bool = False) -> Path:
        """Files of `stage` that must survive a failed or killed run (e.g. checkpoints). With
        `create`, the directory is made and marked as molab's (`remove_work_dir` needs that)."""
        path = self.path / f"{_check_name('stage', stage)}.work"
        if create:
            path.mkdir(parents=True, exist_ok=True)
            (path / WORK_MARKER).touch()
        return path

    def remove_work_dir(self, stage: str) -> None:
        """Delete the stage's work directory, if molab made it (it holds the marker) or it is
        empty; a folder of that name that molab did not make is left alone."""
        path = self.work_dir(stage)
        if (path / WORK_MARKER).is_file():
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        elif path.exists():
            log.warning("%s was not made by molab: left in place", path)

    def lock(self, stage: str | None = None):
        """The lock of one stage, or (no stage) of the whole run: see `molab.locks`."""
        if stage is None:
            return exclusive(self.path / ".run.lock", f"run {self.name} ({self.path})")
        return exclusive(self.path / f"{_check_name('stage', stage)}.lock", f"stage {self.stage_dir(stage)}")


Input = Path | Fingerprint


@dataclass(frozen=True)
class Stage:
    """What one kind of stage is: the single place its name, files and inputs are written.

    `inputs(config, stage_dir)` lists what the stage reads (files, or fingerprints of the parts
    of a file it uses), derived from its config (and, for run-relative defaults, from where the
    stage is written); `run(config, out_dir, stage_dir)` writes `outputs` into `out_dir` (a
    temporary directory renamed onto `stage_dir` afterwards) and returns metrics.
    """

    name: str
    config: type[BaseModel]
    outputs: tuple[str, ...]
    run: Callable[[Any, Path, Path], dict | None]
    inputs: Callable[[Any, Path], dict[str, Input]] = lambda config, stage_dir: {}

    def output(self, stage_dir: str | Path, filename: str | None = None) -> Path:
        """The path of one of its outputs (default: the first) in `stage_dir`."""
        name = filename or self.outputs[0]
        if name not in self.outputs:
            raise ValueError(
                f"stage {self.name} has no output {name!r} (it writes {', '.join(self.outputs)})"
            )
        return Path(stage_dir) / name


def hash_input(value: Input) -> dict:
    """An input's manifest record: where it is and its SHA-256."""
    if isinstance(value, Fingerprint):
        return {"path": value.label, "sha256": value.sha256}
    return {"path": str(value), "sha256": hash_path(Path(value))}


@dataclass
class StageResult:
    dir: Path
    manifest: dict
    skipped: bool


def redact(obj: Any) -> Any:
    """`obj` (JSON data) with string values under secret-looking keys replaced by '***'."""
    if isinstance(obj, dict):
        return {
            k: "***"
            if isinstance(v, str) and _SECRET.search(str(k)) and not str(k).endswith("_env")
            else redact(v)
            for k, v in obj.items()
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


def config_class(config: BaseModel) -> str:
    """What kind of stage a config makes, as recorded in its manifest (`config_class`)."""
    return type(config).__name__


def check_replaceable(stage_dir: Path, stage: str, kind: str, force: bool) -> None:
    """A MolabError unless molab may replace `stage_dir` with stage `stage` (config class `kind`).

    Allowed: a missing or empty directory; one whose manifest is of this stage (its config class,
    or for manifests older than that field its stage name) and that holds only the files the
    manifest lists; with `force`, another stage's outputs, or a molab stage whose manifest is
    unreadable. A folder molab did not write is refused whatever the options.
    """
    if not stage_dir.exists() and not stage_dir.is_symlink():
        return
    if not stage_dir.is_dir():
        raise MolabError(f"{stage_dir} is a file, not a stage directory: choose another output path")
    entries = sorted(p.name for p in stage_dir.iterdir())
    if not entries:
        return
    if MANIFEST not in entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise MolabError(
            f"{stage_dir} is not a molab stage (it holds {shown} and no {MANIFEST}): molab will not "
            "replace it; choose another output path"
        )
    try:
        manifest = load_manifest(stage_dir)
        listed = {o["path"] for o in manifest["outputs"]} | {MANIFEST}
    except (MolabError, KeyError, TypeError):
        if force:
            return
        raise MolabError(
            f"{stage_dir / MANIFEST} is unreadable or incomplete: if {stage_dir} is a molab stage, pass "
            "--force to replace it; otherwise choose another output path"
        ) from None
    extra = sorted(
        p.relative_to(stage_dir).as_posix()
        for p in stage_dir.rglob("*")
        if not p.is_dir() and p.relative_to(stage_dir).as_posix() not in listed
    )
    if extra:
        raise MolabError(
            f"{stage_dir} holds {extra[0]}{f' and {len(extra) - 1} more files' if len(extra) > 1 else ''}, "
            "which molab did not write: move them out or choose another output path"
        )
    theirs = manifest.get("config_class")
    same = theirs == kind if theirs else manifest.get("stage") == stage
    if not same and not force:
        what = f"stage '{manifest.get('stage')}'" + (f" ({theirs})" if theirs else "")
        raise MolabError(
            f"{stage_dir} holds the outputs of {what}, not of {kind}: pass --force to replace them, "
            "or choose another output path"
        )


def _seed(config: BaseModel, seed: int | None) -> int | None:
    return seed if seed is not None else getattr(config, "seed", None)


def stage_state(run: RunDir, name: str, stage: Stage, config: BaseModel, *, seed: int | None = None) -> str:
    """'up to date' or 'to run': what `run_stage` would do now (for `molab run --dry-run`)."""
    stage_dir = run.stage_dir(name)
    hashed = {k: hash_input(v) for k, v in stage.inputs(config, stage_dir).items()}
    fresh = _up_to_date(stage_dir, config_hash(config), hashed, _seed(config, seed))
    return "up to date" if fresh is not None else "to run"


def run_stage(
    run: RunDir,
    name: str,
    stage: Stage,
    config: BaseModel,
    *,
    seed: int | None = None,
    force: bool = False,
    main_process: bool = True,
) -> StageResult:
    """Run `stage` with `config` as stage `name` of `run`; its inputs come from the stage.

    `seed` defaults to the config's own `seed` field. See `run_function` for the rest.
    """
    if not isinstance(config, stage.config):
        raise TypeError(f"stage {stage.name} takes a {stage.config.__name__}, not a {type(config).__name__}")
    stage_dir = run.stage_dir(name)
    inputs = stage.inputs(config, stage_dir)
    return run_function(
        run,
        name,
        config,
        lambda out: stage.run(config, out, stage_dir),
        inputs=inputs,
        seed=_seed(config, seed),
        force=force,
        main_process=main_process,
    )


def run_function(
    run: RunDir,
    stage: str,
    config: BaseModel,
    fn: Callable[[Path], dict | None],
    *,
    inputs: dict[str, Input] | None = None,
    seed: int | None = None,
    force: bool = False,
    main_process: bool = True,
) -> StageResult:
    """Run `fn(out_dir)` (it writes outputs into `out_dir`, returns metrics) as `stage` of `run`:
    the machinery under `run_stage`, for a function that is not a declared `Stage` (tests).

    Skipped if an up-to-date complete stage exists (unless `force`). If `fn` raises, the previous
    stage directory is kept, `<run>/<stage>.failed.json` records the error, and it re-raises.
    On success `run.work_dir(stage)` is deleted. With `main_process=False` (a non-main process
    of a distributed launch) `fn` runs into a throwaway directory and nothing is written.

    The main process holds the stage's lock throughout, and checks before `fn` runs that the
    stage directory is one molab may replace (`check_replaceable`; `force` also lets it replace
    another stage's outputs).
    """
    stage_dir = run.stage_dir(stage)
    chash = config_hash(config)
    hashed = {k: hash_input(v) for k, v in (inputs or {}).items()}
    if not main_process:
        if not force and (m := _up_to_date(stage_dir, chash, hashed, seed)) is not None:
            return StageResult(stage_dir, m, skipped=True)
        with tempfile.TemporaryDirectory(prefix=f"molab-{stage}-") as tmp:
            metrics = fn(Path(tmp))
        return StageResult(
            stage_dir, {"status": "not written (not the main process)", "metrics": metrics or {}}, False
        )
    check_writable_dir(run.path, f"stage {stage_dir}")
    with run.lock(stage):
        return _run_locked(run, stage, config, fn, chash, hashed, seed, force)


def _run_locked(run, stage, config, fn, chash, hashed, seed, force) -> StageResult:
    stage_dir = run.stage_dir(stage)
    if not force and (m := _up_to_date(stage_dir, chash, hashed, seed)) is not None:
        log.info("stage %s of run %s is up to date: skipped (%s)", stage, run.name, stage_dir)
        return StageResult(stage_dir, m, skipped=True)
    check_replaceable(stage_dir, stage, config_class(config), force)

    # Temporaries left by a killed run of this stage (large checkpoints, possibly); no live
    # writer owns them, since every writer of this stage holds its lock.
    leftover = re.compile(rf"\.{re.escape(stage)}\.[a-z0-9_]+\.tmp")
    for p in run.path.iterdir() if run.path.is_dir() else ():
        if leftover.fullmatch(p.name):
            shutil.rmtree(p, ignore_errors=True)
    failed = run.path / f"{stage}.failed.json"
    manifest: dict[str, Any] = {
        "stage": stage,
        "config_class": config_class(config),
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
        with atomic_path(stage_dir, replace_dir=True) as tmp:
            tmp.mkdir()
            metrics = fn(tmp)
            finish(status="complete", metrics=metrics or {}, outputs=_outputs(tmp))
            write_json(tmp / MANIFEST, redact_json(manifest))
    except BaseException as e:  # KeyboardInterrupt too: record it, then let it through
        error = "".join(traceback.format_exception_only(e)).strip()
        finish(status="failed", metrics={}, outputs=[], error=error)
        write_json(failed, redact_json(manifest))
        raise
    failed.unlink(missing_ok=True)
    run.remove_work_dir(stage)
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
