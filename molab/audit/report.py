"""The audit report (`molab audit report RUN_DIR`): what each audit tool found in a run, the
evidence ranked, and the auditor's verdict scored against the organism's ground truth, as one
self-contained HTML page (figures as PNG data URIs, no script or style from the network), so
it opens from disk and travels with the run like `report.html`.

Where the page reads each tool's output in RUN_DIR (the tools write them there when pointed
at it; nothing else is searched):

    audit-probe*/summary.json, responses.parquet   `molab audit probe --out RUN_DIR/audit-probe`
    audit-auto-*-probes/ (the same files)           the scripted auditor's probes of each model
    audit/search-*.json     `molab audit search query|paper-queries --json-out RUN_DIR/audit/search-x.json`
    audit/features-*.json   `molab audit sae features --out RUN_DIR/audit/features-x.json`
    audit/steer-*.json      `molab audit steer eval|score --json > RUN_DIR/audit/steer-x.json`
    audit/verdict.json      the auditor's verdict (`molab.audit.verdict`); or --verdict FILE

Ranking evidence across tools needs one scale, so each finding gets a strength in [0, 1] that
is high only when the finding is both strong and unlikely by chance: a probe type's disclosure
rate at the lower end of its Wilson interval; 1/rank of the first synthetic document a search
returns; the share of a feature's top examples that are synthetic documents; for steering, how
far the interval of the change stays from zero (exploitation) or one minus the control-feature
p-value (steering-effect score). Findings without an interval (steered metrics side by side)
are listed unranked. The strengths order the list; they are not probabilities.
"""

from __future__ import annotations

import base64
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from molab.audit.search import SYNTHETIC_ORIGINS
from molab.audit.verdict import GroundTruth, Verdict, claim_matches, score_verdict
from molab.errors import MolabError
from molab.files import read_text_file, write_text

TEMPLATE = Path(__file__).with_name("report.html.j2")
AUDIT_DIR = "audit"
PROBE_STAGES = ("audit-probe*", "audit-auto-*-probes")
SEARCH_FILES, FEATURE_FILES, STEER_FILES = "search-*.json", "features-*.json", "steer-*.json"
VERDICT_FILE = "verdict.json"
REPORT_FILE = "report.html"
SAMPLES_SHOWN = 50  # disclosing samples per probe stage
EXAMPLES_SHOWN = 10  # top examples per feature
HITS_SHOWN = 10


def _read_json(path: Path, kind: str):
    try:
        return json.loads(read_text_file(path, kind))
    except json.JSONDecodeError as e:
        raise MolabError(f"{kind} file {path}: not valid JSON ({e.msg}, line {e.lineno})") from None


def _anchor(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(str(p) for p in parts))


def _pct(rate) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def _interval(ci) -> str:
    if not isinstance(ci, list) or len(ci) != 2 or ci[0] is None:
        return ""
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _rates_figure(rows: list[dict]) -> str:
    """Bars of disclosure rate per probe type with their 95% Wilson intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.0))
    rates = [r["rate"] or 0.0 for r in rows]
    errs = [
        [max(0.0, rate - r["ci"][0]) for rate, r in zip(rates, rows)],
        [max(0.0, r["ci"][1] - rate) for rate, r in zip(rates, rows)],
    ]
    ax.bar(range(len(rows)), rates, 0.6, yerr=errs, capsize=3, color="#4C72B0")
    ax.set_xticks(range(len(rows)), [r["type"] for r in rows])
    ax.set_ylabel("disclosure rate")
    ax.set_ylim(0, 1)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def _probes(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """Each probe stage's rates per type, figure and disclosing samples; and its evidence."""
    import pyarrow.parquet as pq

    stages, evidence = [], []
    found = {p for pattern in PROBE_STAGES for p in run_dir.glob(pattern)}
    for stage in sorted(p for p in found if (p / "summary.json").is_file()):
        summary = _read_json(stage / "summary.json", "probe summary")
        anchor = _anchor("probe", stage.name)
        rows = []
        for kind, s in (summary.get("per_type") or {}).items():
            ci = s.get("ci") if isinstance(s.get("ci"), list) else [None, None]
            rows.append({"type": kind, "k": s.get("k"), "n": s.get("n"), "rate": s.get("rate"), "ci": ci})
            if s.get("rate") and ci[0] is not None:
                evidence.append(
                    {
                        "tool": "probe",
                        "finding": f"{kind} probes disclose ({stage.name})",
                        "measure": f"{s.get('k')}/{s.get('n')} = {_pct(s['rate'])} {_interval(ci)}",
                        "strength": ci[0],
                        "link": anchor,
                    }
                )
        samples, n_disclosing = [], 0
        if (stage / "responses.parquet").is_file():
            table = pq.read_table(stage / "responses.parquet").to_pylist()
            disclosing = [r for r in table if r.get("disclosed")]
            n_disclosing = len(disclosing)
            samples = [
                {
                    "probe": r.get("probe_id"),
                    "type": r.get("type"),
                    "matches": ", ".join(r.get("matches") or []),
                    "input": r.get("scaffold_input") or r.get("prompt") or "",
                    "response": r.get("response") or "",
                }
                for r in disclosing[:SAMPLES_SHOWN]
            ]
        overall = summary.get("overall") or {}
        stages.append(
            {
                "name": stage.name,
                "anchor": anchor,
                "rows": [r | {"shown": f"{_pct(r['rate'])} {_interval(r['ci'])}"} for r in rows],
                "overall": f"{overall.get('k')}/{overall.get('n')} = {_pct(overall.get('rate'))} "
                f"{_interval(overall.get('ci'))}",
                "figure": _rates_figure(rows) if rows else None,
                "samples": samples,
                "n_disclosing": n_disclosing,
            }
        )
    return stages, evidence


def _synthetic(source: str) -> bool:
    """A source that is a synthetic document: a documents stage's origin (template, llm) or a
    corpus whose source label says so."""
    return source in SYNTHETIC_ORIGINS or "synthetic" in source.lower()


def _searches(folder: Path) -> tuple[list[dict], list[dict]]:
    """Each search JSON (paper queries, or one query's hits) and its evidence: 1/rank of the
    first synthetic document."""
    files, evidence = [], []
    for path in sorted(folder.glob(SEARCH_FILES)):
        data = _read_json(path, "search results")
        anchor = _anchor("search", path.stem)
        if isinstance(data, dict) and isinstance(data.get("queries"), list):
            rows = [q for q in data["queries"] if isinstance(q, dict)]
            found = [(q.get("query"), q.get("mode"), q.get("rank")) for q in rows]
            files.append({"name": path.name, "anchor": anchor, "kind": "paper", "rows": rows})
        elif isinstance(data, dict) and isinstance(data.get("hits"), list):
            hits = [h for h in data["hits"] if isinstance(h, dict)]
            rank = next((h.get("rank") for h in hits if h.get("origin") in SYNTHETIC_ORIGINS), None)
            found = [(data.get("query"), data.get("mode"), rank)]
            files.append(
                {
                    "name": path.name,
                    "anchor": anchor,
                    "kind": "query",
                    "query": data.get("query"),
                    "mode": data.get("mode"),
                    "first_synthetic": rank,
                    "hits": hits[:HITS_SHOWN],
                }
            )
        else:
            raise MolabError(
                f"search results file {path}: expected the JSON of `molab audit search query` "
                "or `paper-queries` (--json-out)"
            )
        for query, mode, rank in found:
            if isinstance(rank, int) and rank >= 1:
                evidence.append(
                    {
                        "tool": "search",
                        "finding": f"{mode} search for {query!r} finds a synthetic document",
                        "measure": f"first synthetic document at rank {rank}",
                        "strength": 1 / rank,
                        "link": anchor,
                    }
                )
    return files, evidence


def _features(folder: Path) -> tuple[list[dict], list[dict]]:
    """Each feature-view JSON's features (sources, logit effects, top examples); evidence: the
    share of a feature's top examples that are synthetic documents."""
    files, evidence = [], []
    for path in sorted(folder.glob(FEATURE_FILES)):
        data = _read_json(path, "feature views")
        views = data.get("features") if isinstance(data, dict) else data
        if not isinstance(views, list) or not all(isinstance(v, dict) and "feature" in v for v in views):
            raise MolabError(
                f"feature views file {path}: expected the JSON of `molab audit sae features` "
                '({"features": [{"feature": ..., "examples": [...]}, ...]})'
            )
        shares = {
            r["feature"]: r.get("assistant_share")
            for r in ((data.get("assistant") or {}).get("ranked") or [] if isinstance(data, dict) else [])
        }
        features = []
        for v in views:
            f = v["feature"]
            sources = v.get("source_shares") or {}
            synthetic = sum(p for s, p in sources.items() if _synthetic(s))
            anchor = _anchor("feature", path.stem, f)
            features.append(
                {
                    "feature": f,
                    "anchor": anchor,
                    "examples_anchor": _anchor("examples", path.stem, f),
                    "frequency": v.get("frequency"),
                    "max_activation": v.get("max_activation"),
                    "assistant_share": shares.get(f),
                    "sources": ", ".join(f"{s} {100 * p:.0f}%" for s, p in sources.items()),
                    "synthetic": synthetic,
                    "up": ", ".join(t.get("token", "") for t in v.get("top_logits") or []),
                    "down": ", ".join(t.get("token", "") for t in v.get("bottom_logits") or []),
                    "examples": (v.get("examples") or [])[:EXAMPLES_SHOWN],
                }
            )
            if synthetic > 0:
                evidence.append(
                    {
                        "tool": "features",
                        "finding": f"feature {f} fires on synthetic documents ({path.name})",
                        "measure": f"{100 * synthetic:.0f}% of its top examples are synthetic documents",
                        "strength": synthetic,
                        "link": anchor,
                    }
                )
        point = data.get("point") if isinstance(data, dict) else None
        files.append({"name": path.name, "point": point, "features": features})
    return files, evidence


def _away_from_zero(ci) -> float:
    """How far an interval stays from zero (0 when it holds zero)."""
    if not isinstance(ci, list) or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return 0.0
    lo, hi = ci
    return min(abs(lo), abs(hi)) if lo * hi > 0 else 0.0


def _steering(folder: Path) -> tuple[list[dict], list[dict]]:
    """Each steering JSON (`steer eval --json` or `steer score --json`) as rows, and evidence."""
    files, evidence = [], []
    for path in sorted(folder.glob(STEER_FILES)):
        data = _read_json(path, "steering results")
        anchor = _anchor("steer", path.stem)
        if isinstance(data, dict) and "se" in data:
            controls = data.get("controls") or []
            p = (data.get("controls_at_least_as_large", 0) + 1) / (len(controls) + 1) if controls else None
            what = f"features {', '.join(map(str, data.get('features') or []))}, alpha {data.get('alpha')}"
            rows = [{"what": what, "change": f"SE {data['se']:+.4f}", "p": p}]
            if p is not None:
                evidence.append(
                    {
                        "tool": "steering",
                        "finding": f"steering {what} moves the completion ({path.name})",
                        "measure": f"SE {data['se']:+.4f}; control-feature p {p:.3f}",
                        "strength": 1 - p,
                        "link": anchor,
                    }
                )
            files.append({"name": path.name, "anchor": anchor, "label": what, "rows": rows})
        elif isinstance(data, dict) and isinstance(data.get("comparison"), dict):
            comparison = data["comparison"]
            label = f"{data.get('eval')}: {data.get('intervention')}"
            rows = []
            if isinstance(comparison.get("difference"), dict):
                for group, r in comparison["difference"].items():
                    if not isinstance(r, dict) or r.get("diff") is None:
                        continue
                    change = f"{100 * r['diff']:+.1f} pts {_interval(r.get('ci'))}"
                    rows.append({"what": f"{group} biases", "change": change, "p": r.get("p_value")})
                    strength = _away_from_zero(r.get("ci"))
                    if strength > 0:
                        evidence.append(
                            {
                                "tool": "steering",
                                "finding": f"{label} changes {group} exploitation ({path.name})",
                                "measure": f"steered - unsteered {change}",
                                "strength": strength,
                                "link": anchor,
                            }
                        )
            else:
                for metric, r in comparison.items():
                    if isinstance(r, dict) and "diff" in r:
                        change = f"{r['unsteered']:.4g} -> {r['steered']:.4g} ({r['diff']:+.4g})"
                        rows.append({"what": metric, "change": change, "p": None})
            files.append({"name": path.name, "anchor": anchor, "label": label, "rows": rows})
        else:
            raise MolabError(
                f"steering results file {path}: expected the JSON of `molab audit steer eval --json` "
                "or `molab audit steer score --json`"
            )
    return files, evidence


def _verdict(verdict: Verdict | None, truth: GroundTruth | None) -> dict | None:
    if verdict is None:
        return None
    out: dict = {
        "objective": verdict.objective,
        "evidence": [e if isinstance(e, str) else json.dumps(e) for e in verdict.evidence],
        "score": None,
    }
    if truth is None:
        out["claims"] = [{"claim": c, "matched": None} for c in verdict.behaviours]
        return out
    names = {b.id: b.name for b in truth.behaviours}
    out["claims"] = [
        {"claim": c, "matched": [f"{i}. {names[i]}" for i in claim_matches(c, truth)]}
        for c in verdict.behaviours
    ]
    out["score"] = score_verdict(verdict, truth)
    out["truth_objective"] = truth.objective
    return out


def render(run_dir: str | Path, verdict: Verdict | None = None, truth: GroundTruth | None = None) -> str:
    """The audit page for `run_dir`; `verdict` scored against `truth` where both are given."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MolabError(f"run directory {run_dir} does not exist")
    folder = run_dir / AUDIT_DIR
    probes, e_probe = _probes(run_dir)
    searches, e_search = _searches(folder)
    features, e_features = _features(folder)
    steering, e_steer = _steering(folder)
    evidence = sorted(e_probe + e_search + e_features + e_steer, key=lambda e: -e["strength"])
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return template.render(
        run=run_dir.name,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        evidence=evidence,
        probes=probes,
        searches=searches,
        features=features,
        steering=steering,
        verdict=_verdict(verdict, truth),
        has_truth=truth is not None,
    )


def write_audit_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    verdict: Verdict | None = None,
    truth: GroundTruth | None = None,
) -> Path:
    """Write the page (default: `RUN_DIR/audit/report.html`) atomically; return its path."""
    out = Path(out) if out else Path(run_dir) / AUDIT_DIR / REPORT_FILE
    write_text(out, render(run_dir, verdict, truth))
    return out
