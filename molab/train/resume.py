"""Checkpoints that outlive a killed run, and the check that they belong to this model.

A stage trains in `<run>/<stage>.work/` (`RunDir.work_dir`), which `run_stage` deletes only
after the stage completes. The trainer writes `checkpoint-<step>/` there every `save_steps`;
a checkpoint is complete once its `trainer_state.json` exists (the trainer writes it last), so
a run killed while saving leaves an incomplete one, which is ignored and removed.

`fingerprint.json` records what the checkpoints' weights are made for (base model, frozen
adapters, method, adapter shape, stage kind). Starting the stage with another model against
leftover checkpoints is an error that names the directory, and changes nothing: resuming
would load weights of the wrong shape, or silently train a different model.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from molab.errors import MolabError
from molab.files import write_json
from molab.pipeline import WORK_MARKER

FINGERPRINT = "fingerprint.json"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def complete_checkpoints(work: Path) -> list[Path]:
    """Complete checkpoints in `work`, oldest first."""
    found = [p for p in work.glob("checkpoint-*") if _CHECKPOINT.fullmatch(p.name) and p.is_dir()]
    done = [p for p in found if (p / "trainer_state.json").is_file()]
    return sorted(done, key=lambda p: int(_CHECKPOINT.fullmatch(p.name).group(1)))


def prepare_work_dir(work: Path, fingerprint: dict, main: bool = True) -> Path | None:
    """Make `work` ready for training; return the checkpoint to resume from (None: start).

    Raises a MolabError if `work` holds checkpoints made for another model. Only the main
    process writes (the fingerprint) or deletes (incomplete checkpoints).
    """
    stored_path = work / FINGERPRINT
    ours = (work / WORK_MARKER).is_file() or stored_path.is_file()  # (the marker is newer)
    if work.is_dir() and any(work.iterdir()) and not ours:
        raise MolabError(
            f"{work} exists and was not made by molab: it would hold this stage's checkpoints and be "
            "deleted when the stage completes; move it away"
        )
    if stored_path.is_file():
        try:
            stored = json.loads(stored_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        if stored != fingerprint:
            differ = sorted(
                k
                for k in fingerprint.keys() | (stored or {}).keys()
                if (stored or {}).get(k) != fingerprint.get(k)
            )
            raise MolabError(
                f"{work} holds checkpoints of another model (different: {', '.join(differ)}): "
                "restore that setting to resume, or pass --restart to delete them and start over"
            )
    checkpoints = complete_checkpoints(work)
    if main:
        work.mkdir(parents=True, exist_ok=True)
        (work / WORK_MARKER).touch()
        write_json(stored_path, fingerprint)
        for p in work.glob("checkpoint-*"):
            if p.is_dir() and p not in checkpoints:
                shutil.rmtree(p)  # incomplete: the run was killed while saving it
    return checkpoints[-1] if checkpoints else None
