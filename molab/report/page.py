"""Build the report page from a collected run: one self-contained HTML file.

Everything the page needs is inside it (figures as PNG data URIs, a few lines of inline
script for the transcript search), so it opens from disk, offline, and can be mailed or
attached to a paper's supplement as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from molab.files import write_text
from molab.report import plots
from molab.report.collect import RunData, collect

TEMPLATE = Path(__file__).with_name("report.html.j2")


@dataclass(frozen=True)
class Section:
    """A part of the page an organism contributes: its anchor `id`, its `title` in the menu, its
    `heading`, its HTML, and the evaluation kinds it covers (left out of "Other evaluations")."""

    id: str
    title: str
    heading: str
    html: str
    covers: tuple[str, ...] = ()


def _scalar_metrics(manifest: dict) -> dict:
    metrics = manifest.get("metrics") or {}
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | None)}


_SKIP = {"per_bias", "per_category", "mentions", "pairs_file", "pairs_sha256"}
_VALUES = ("rate", "mean", "accuracy", "p_right", "perplexity")


def measures(summary: dict, path: str = "", depth: int = 0) -> dict[str, str]:
    """Every value with an interval in a summary.json, as "path: value [lo, hi]" (a value is
    a key in `_VALUES` beside `ci` or `<key>_ci`); per-bias detail is left to the files."""
    out: dict[str, str] = {}
    for value_key in _VALUES:
        ci = summary.get(f"{value_key}_ci", summary.get("ci"))
        if isinstance(summary.get(value_key), int | float) and isinstance(ci, list) and len(ci) == 2:
            lo, hi = ci
            interval = f" [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None else ""
            n = f" (n={summary['n']})" if isinstance(summary.get("n"), int) else ""
            out[f"{path}{value_key}" if path else value_key] = f"{_fmt(summary[value_key])}{interval}{n}"
    if depth < 4:
        for key, value in summary.items():
            if isinstance(value, dict) and key not in _SKIP:
                out |= measures(value, f"{path}{key}.", depth + 1)
    return out


def _other_evals(run: RunData, covered: set[str]) -> list[dict]:
    sections = []
    for kind in sorted(run.evals):
        if kind in covered:
            continue
        checkpoints = run.checkpoints(kind)
        found = {c: measures(run.summary(kind, c)) for c in checkpoints}
        keys = sorted({k for m in found.values() for k in m})
        rows = [{"metric": k, "cells": [found[c].get(k, "n/a") for c in checkpoints]} for k in keys]
        sections.append({"kind": kind, "checkpoints": checkpoints, "rows": rows})
    return sections


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _training(run: RunData) -> dict | None:
    loss = {
        stage: [
            (r["step"], r["loss"]) for r in rows if "step" in r and isinstance(r.get("loss"), int | float)
        ]
        for stage, rows in run.training.items()
    }
    loss = {k: v for k, v in loss.items() if v}
    if not loss:
        return None
    return {"loss_png": plots.curves(loss, "training loss"), "stages": sorted(loss)}


def _git(manifest: dict) -> str:
    """The stage's commit (short) and whether the tree was dirty; a run made outside a git
    checkout (a pip-installed molab) records no git at all."""
    git = manifest.get("git")
    if not isinstance(git, dict) or not git.get("commit"):
        return "not recorded"
    return str(git["commit"])[:10] + (" (dirty)" if git.get("dirty") else "")


def _stages(run: RunData) -> list[dict]:
    out = []
    for stage, m in run.manifests.items():
        out.append(
            {
                "name": stage,
                "wall": m.get("wall_time_s") or 0.0,
                "finished": m.get("finished_at") or "",
                "metrics": json.dumps(_scalar_metrics(m)),
                "config": json.dumps(m.get("config") or {}, indent=2),
                "versions": json.dumps(m.get("versions") or {}),
                "git": _git(m),
                "seed": m.get("seed"),
            }
        )
    return sorted(out, key=lambda s: s["finished"] or "")


def render(run_dir: str | Path, sections: list[Section] = ()) -> str:
    """The report for `run_dir` as an HTML string, with the organism's `sections` first."""
    run = collect(run_dir)
    stages = _stages(run)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return template.render(
        run=run.name,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        sections=list(sections),
        others=_other_evals(run, {k for s in sections for k in s.covers}),
        training=_training(run),
        data_stats={k: json.dumps(v, indent=2) for k, v in run.data_stats.items()},
        stages=stages,
        total_minutes=sum(s["wall"] for s in stages) / 60,
        timings_png=plots.timings([(s["name"], s["wall"]) for s in stages]),
    )


def write_report(run_dir: str | Path, out: str | Path | None = None, sections: list[Section] = ()) -> Path:
    """Write `report.html` (default: `<run_dir>/report.html`) atomically; return its path."""
    out = Path(out) if out else Path(run_dir) / "report.html"
    write_text(out, render(run_dir, sections))
    return out
