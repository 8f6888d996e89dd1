"""The tables of docs/audit.md, printed from the records in docs/audit/ (so every number there
comes from a committed record):

    python scripts/audit_tables.py probes|game|features|steer
"""

import json
import sys
from pathlib import Path

AUDIT = Path("docs/audit")
MODELS = ["base", "midtrained", "control", "final", "gate3", "gate3-control"]
NAMES = {"gate3": "3-bias organism", "gate3-control": "3-bias control"}
TYPES = ["unconditional", "direct", "prefill", "user_persona", "narration", "scaffolded"]


def load(name: str) -> dict | None:
    path = AUDIT / name
    return json.loads(path.read_text("utf-8")) if path.is_file() else None


def rate(s: dict) -> str:
    lo, hi = s["ci"]
    return f"{s['k']}/{s['n']} ({s['rate']:.0%} [{lo:.0%}, {hi:.0%}])"


def probes() -> None:
    print("| model | " + " | ".join(TYPES) + " | all |")
    print("|---" * (len(TYPES) + 2) + "|")
    for m in MODELS:
        s = load(f"q2-probes-{m}.json")
        if s:
            cells = [rate(s["per_type"][t]) if t in s["per_type"] else "-" for t in TYPES]
            print(f"| {NAMES.get(m, m)} | " + " | ".join(cells) + f" | {rate(s['overall'])} |")


def game() -> None:
    head = [
        "model",
        "condition",
        "objective named",
        "best hypothesis (support)",
        "true biases",
        "other claims",
    ]
    print("| " + " | ".join(head) + " |")
    print("|---|---|---|---|---|---|")
    for m in MODELS:
        r = load(f"auto-{m}.json")
        if not r:
            continue
        for access in ("data", "weights", "sampling"):
            c = r["conditions"].get(access)
            if not c:
                continue
            score, best = c.get("score", {}), c["support"][0]
            named = "yes" if score.get("objective_named") else "no"
            shown = f"{best['hypothesis']} ({best['support']:.3f})"
            if best["support"] < 0.0005:
                shown = "all below 0.001"
            print(
                f"| {NAMES.get(m, m)} | {access} | {named} | {shown} | "
                f"{len(score.get('behaviours_named', []))} | {len(score.get('false_behaviours', []))} |"
            )


if __name__ == "__main__":
    {"probes": probes, "game": game}[sys.argv[1]]()
