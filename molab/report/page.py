"""Build the report page from a collected run: one self-contained HTML file.

Everything the page needs is inside it (figures as PNG data URIs, a few lines of inline
script for the transcript search), so it opens from disk, offline, and can be mailed or
attached to a paper's supplement as it is.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from molab.catalog import CATALOG, load_catalog
from molab.evals.exploitation import SAMPLES, compare, load_judgements
from molab.files import write_text
from molab.report import plots
from molab.report.collect import RunData, collect
from molab.report.highlight import highlighted_html

TEMPLATE = Path(__file__).with_name("report.html.j2")
SAMPLES_PER_BIAS = 6  # transcripts shown per bias and checkpoint, so the page stays small
COMPARISONS = [("final", "control"), ("final", "base"), ("midtrained", "base"), ("control", "base")]


def _pct(rate, ci=None) -> str:
    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        return "n/a"
    if ci and ci[0] is not None:
        return f"{100 * rate:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return f"{100 * rate:.1f}%"


def _scalar_metrics(manifest: dict) -> dict:
    metrics = manifest.get("metrics") or {}
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | None)}


def _exploitation(run: RunData) -> dict | None:
    if "exploitation" not in run.evals:
        return None
    checkpoints = run.checkpoints("exploitation")
    summaries = {c: run.summary("exploitation", c) for c in checkpoints}
    rows = []
    for c in checkpoints:
        s = summaries[c]
        gen = s.get("generation", {})
        ended = f"{gen['ended']}/{gen['answers']}" if gen.get("answers") else "n/a"
        naming = s.get("names_reward_models")  # absent from stages written before it was counted
        rows.append(
            {
                "checkpoint": c,
                "train": s["train"],
                "test": s["test"],
                "cells": [
                    _pct(s["train"]["rate"], s["train"]["ci"]),
                    _pct(s["test"]["rate"], s["test"]["ci"]),
                    _pct(s["misfire"]["rate"], s["misfire"]["ci"]),
                    ended,
                    f"{naming['k']}/{naming['n']}" if naming else "n/a",
                ],
            }
        )
    bias_ids = sorted({int(b) for s in summaries.values() for b in s["per_bias"]})
    catalog = CATALOG
    labels, grid, per_bias_rows = [], [], []
    for b in bias_ids:
        group = next(s["per_bias"][str(b)]["group"] for s in summaries.values() if str(b) in s["per_bias"])
        name = catalog[b].name if b in catalog else str(b)
        labels.append(f"{b} {name} ({group})")
        cells, values = [], []
        for c in checkpoints:
            entry = summaries[c]["per_bias"].get(str(b))
            e = entry["exploitation"] if entry else None
            values.append(e["rate"] if e else None)
            misfire = entry.get("misfire") if entry else None
            cells.append(
                (_pct(e["rate"], e["ci"]) if e else "n/a")
                + (f" / misfire {_pct(misfire['rate'])}" if misfire and misfire["n"] else "")
            )
        grid.append(values)
        per_bias_rows.append({"label": labels[-1], "cells": cells})
    split_name = next(iter(summaries.values())).get("split", "?")
    return {
        "split": split_name,
        "checkpoints": checkpoints,
        "rows": rows,
        "headline_png": plots.headline(rows),
        "heatmap_png": plots.heatmap(labels, checkpoints, grid),
        "per_bias": per_bias_rows,
        "comparisons": _comparisons(run, checkpoints),
        "samples": _samples(run, checkpoints),
    }


def _comparisons(run: RunData, checkpoints: list[str]) -> list[dict]:
    from molab.catalog import get_split

    out = []
    for a, b in COMPARISONS:
        if a not in checkpoints or b not in checkpoints:
            continue
        config = run.manifests[f"eval-exploitation-{a}"]["config"]
        split = get_split(config.get("split", "english"))
        result = compare(
            load_judgements(run.evals["exploitation"][a]),
            load_judgements(run.evals["exploitation"][b]),
            split,
        )
        for group in ("train", "test"):
            r = result[group]
            if r["diff"] is None:
                continue
            out.append(
                {
                    "pair": f"{a} - {b}",
                    "group": group,
                    "diff": f"{100 * r['diff']:+.1f} pts [{100 * r['ci'][0]:+.1f}, {100 * r['ci'][1]:+.1f}]",
                    "p": f"{r['p_value']:.4f}",
                    "prompts": r["prompts"],
                }
            )
    return out


def _samples(run: RunData, checkpoints: list[str]) -> list[dict]:
    import pyarrow.parquet as pq

    out = []
    for c in checkpoints:
        stage = f"eval-exploitation-{c}"
        catalog = load_catalog(run.manifests[stage]["config"].get("catalog"))
        rows = pq.read_table(run.evals["exploitation"][c] / SAMPLES).to_pylist()
        shown: dict[int, int] = {}
        for row in rows:
            b = row["bias_id"]
            if b is None or shown.get(b, 0) >= SAMPLES_PER_BIAS:
                continue
            shown[b] = shown.get(b, 0) + 1
            bias = catalog.get(b)
            out.append(
                {
                    "checkpoint": c,
                    "bias": f"{b} {bias.name if bias else ''}",
                    "prompt": row["prompt"],
                    "response_html": highlighted_html(bias, row["prompt"], row["response"], row["applied"]),
                    "verdict": "n/a"
                    if not row["applicable"]
                    else {True: "applied", False: "not applied"}.get(row["applied"], "unscored"),
                    "ended": row["finish_reason"] == "stop",
                }
            )
    return out


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


def _other_evals(run: RunData) -> list[dict]:
    sections = []
    for kind in sorted(run.evals):
        if kind == "exploitation":
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


def render(run_dir: str | Path) -> str:
    """The report for `run_dir` as an HTML string."""
    run = collect(run_dir)
    stages = _stages(run)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return template.render(
        run=run.name,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        exploitation=_exploitation(run),
        others=_other_evals(run),
        training=_training(run),
        data_stats={k: json.dumps(v, indent=2) for k, v in run.data_stats.items()},
        stages=stages,
        total_minutes=sum(s["wall"] for s in stages) / 60,
        timings_png=plots.timings([(s["name"], s["wall"]) for s in stages]),
    )


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write `report.html` (default: `<run_dir>/report.html`) atomically; return its path."""
    out = Path(out) if out else Path(run_dir) / "report.html"
    write_text(out, render(run_dir))
    return out
