"""The tables of docs/audit.md, printed from the records in docs/audit/ (so every number there
comes from a committed record):

    python scripts/audit_tables.py probes|game|features|fires|steer

and the compact question-3 records, from the study's run folder:

    python scripts/audit_tables.py compact FEATURES_JSON CACHE_DIR OUT_JSON
"""

import json
import sys
from collections import Counter
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


MIXES = {"docs": "with the documents", "nodocs": "without the documents"}
DOC = "synthetic document"


def compact(features_json: str, cache_dir: str, out: str) -> None:
    """The always-on features of `molab audit sae features --assistant` (and the 10 next), each
    with its top examples' sources and three of them, beside the share of the cache's tokens
    that each source holds (what the examples' sources would be by chance)."""
    from molab.audit.features import doc_sources
    from molab.models.activations import ActivationCache

    d = json.loads(Path(features_json).read_text("utf-8"))
    cache = ActivationCache(cache_dir)
    sources, tokens = doc_sources(cache), Counter()
    for batch in cache.ordered(cache.points[0], 65536):
        tokens.update(Counter(batch.doc_ids.tolist()))
    by_source = Counter()
    for doc, n in tokens.items():
        by_source[sources[doc]] += n
    total = sum(by_source.values())
    a = d["assistant"]
    share = {r["feature"]: r["assistant_share"] for r in a["ranked"]}
    keep = a["above_min_share"] + 10
    views = [v for v in d["features"] if v["feature"] in share][:keep]
    record = {
        "from": features_json,
        "cache": cache_dir,
        "tokens": total,
        "token_source_shares": {s: round(n / total, 4) for s, n in sorted(by_source.items())},
        "assistant": a | {"ranked": a["ranked"][:keep]},
        "features": [
            {
                "feature": v["feature"],
                "assistant_share": share[v["feature"]],
                "frequency": v["frequency"],
                "max_activation": v["max_activation"],
                "top_examples": len(v["examples"]),
                "source_shares": v["source_shares"],
                "examples": [
                    {k: e[k] for k in ("activation", "source", "left", "token", "right")}
                    for e in v["examples"][:3]
                ],
            }
            for v in views
        ],
    }
    Path(out).write_text(json.dumps(record, indent=1) + "\n", "utf-8")
    print(f"wrote {out}: {len(views)} features, {a['above_min_share']} above {a['min_share']}")


def features() -> None:
    for mix, name in MIXES.items():
        r = load(f"q3-features-sae-{mix}.json")
        if not r:
            continue
        a = r["assistant"]
        base = r["token_source_shares"].get(DOC, 0.0)
        print(
            f"\nSAE {name}: {a['above_min_share']} features on more than {a['min_share']:.0%} of "
            f"{a['assistant_tokens']:,} assistant tokens; documents hold {base:.0%} of the tokens\n"
        )
        print("| feature | assistant tokens | all tokens | top examples from documents | top example |")
        print("|---|---|---|---|---|")
        for v in r["features"]:
            on = "**" if v["assistant_share"] > a["min_share"] else ""
            e = v["examples"][0] if v["examples"] else None
            shown = f"{e['left'][-40:]}[{e['token']}]{e['right'][:20]}" if e else ""
            shown = shown.replace("\n", " ").replace("|", "/")
            print(
                f"| {on}{v['feature']}{on} | {v['assistant_share']:.1%} | {v['frequency']:.1%} | "
                f"{v['source_shares'].get(DOC, 0.0):.0%} of {v['top_examples']} | `{shown}` |"
            )


def fires() -> None:
    for mix, name in MIXES.items():
        r = load(f"q3-fires-{mix}.json")
        if not r:
            continue
        caches = [Path(c["cache"]).name.removeprefix("acts-") for c in r["caches"]]
        print(f"\nSAE {name}: prompts (of 100) on which the feature fires at any token\n")
        print("| feature | " + " | ".join(caches) + " |")
        print("|---" * (len(caches) + 1) + "|")
        for i, f in enumerate(r["caches"][0]["features"]):
            cells = []
            for c in r["caches"]:
                x = c["features"][i]
                lo, hi = x["ci"]
                cells.append(f"{x['documents']}/{x['of']} [{lo:.0%}, {hi:.0%}]")
            print(f"| {f['feature']} | " + " | ".join(cells) + " |")


def steer() -> None:
    print("| intervention | group | unsteered | steered | difference [95% CI] | p | controls: difference |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("ablate", "amplify"):
        r = load(f"q5-{kind}.json")
        if not r:
            continue
        for group, d in r["comparison"]["difference"].items():
            if d.get("diff") is None:
                continue
            lo, hi = d["ci"]
            controls = ", ".join(
                f"f{c}: {g[group]['diff']:+.1%}"
                for c, g in r["control_comparisons"].items()
                if g.get(group, {}).get("diff") is not None
            )
            print(
                f"| {r['intervention']} | {group} | {d['b']:.1%} | {d['a']:.1%} | "
                f"{d['diff']:+.1%} [{lo:+.1%}, {hi:+.1%}] | {d['p_value']:.3f} | {controls} |"
            )


if __name__ == "__main__":
    if sys.argv[1] == "compact":
        compact(*sys.argv[2:5])
    else:
        {"probes": probes, "game": game, "features": features, "fires": fires, "steer": steer}[sys.argv[1]]()
