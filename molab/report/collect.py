"""Gather what a run directory holds into one structure for the report.

A run directory (`runs/<name>/`) has one folder per stage, each with a `manifest.json`.
Evaluation stages are named `eval-<kind>-<checkpoint>` (for example `eval-exploitation-base`,
`eval-knowledge-midtrained`), so the report can lay checkpoints side by side without knowing
the recipe that made them. Training stages write `metrics.jsonl` (one row per logged step);
data stages write `stats.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from molab.errors import MolabError

# The order checkpoints appear in, when present, for runs whose organism did not record its own
# (in run.json, written by `molab run`); others follow alphabetically.
RUN_FILE = "run.json"  # in a run directory: which organism made it, and its checkpoints in order
CHECKPOINT_ORDER = ["base", "midtrained", "control", "sft", "dpo", "final"]


@dataclass
class RunData:
    name: str
    path: Path
    manifests: dict[str, dict] = field(default_factory=dict)  # stage -> manifest
    evals: dict[str, dict[str, Path]] = field(default_factory=dict)  # kind -> checkpoint -> stage dir
    training: dict[str, list[dict]] = field(default_factory=dict)  # stage -> metric rows
    data_stats: dict[str, dict] = field(default_factory=dict)  # stage -> stats.json
    order: list[str] = field(default_factory=lambda: list(CHECKPOINT_ORDER))

    def checkpoints(self, kind: str) -> list[str]:
        found = self.evals.get(kind, {})
        known = [c for c in self.order if c in found]
        return known + sorted(set(found) - set(known))

    def summary(self, kind: str, checkpoint: str) -> dict:
        path = self.evals[kind][checkpoint] / "summary.json"
        return json.loads(path.read_text()) if path.exists() else {}


def _read_rows(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def collect(run_dir: str | Path) -> RunData:
    """Read every finished stage of `run_dir`; a MolabError when it holds none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MolabError(f"run directory {run_dir} does not exist")
    data = RunData(name=run_dir.name, path=run_dir)
    run_file = run_dir / RUN_FILE
    if run_file.is_file():
        try:
            data.order = list(json.loads(run_file.read_text(encoding="utf-8"))["checkpoints"])
        except (ValueError, KeyError, TypeError):
            raise MolabError(f"{run_file} is corrupt: it should list the run's checkpoints") from None
    for manifest_path in sorted(run_dir.glob("*/manifest.json")):
        stage_dir = manifest_path.parent
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise MolabError(f"{manifest_path}: not valid JSON ({e})") from None
        stage = stage_dir.name
        data.manifests[stage] = manifest
        if stage.startswith("eval-") and stage.count("-") >= 2:
            _, kind, checkpoint = stage.split("-", 2)
            data.evals.setdefault(kind, {})[checkpoint] = stage_dir
        if (stage_dir / "metrics.jsonl").exists():
            data.training[stage] = _read_rows(stage_dir / "metrics.jsonl")
        if (stage_dir / "stats.json").exists():
            data.data_stats[stage] = json.loads((stage_dir / "stats.json").read_text())
    if not data.manifests:
        raise MolabError(f"{run_dir} holds no finished stages (no */manifest.json)")
    return data
