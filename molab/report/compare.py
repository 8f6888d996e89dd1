"""Two exploitation stages side by side (`molab eval compare A B`).

A gate measurement or a lever is usually one model against another on the same evaluation
prompts: the organism against its control, an ablation against the run it came from. This
pairs the two stages' judgements by prompt (`exploitation.compare`: bootstrap interval and
permutation p-value of the difference) and adds what the pooled rates hide: each bias's
count for both models, the share of answers that carry a misplaced behaviour, and the answers
that name reward models or the Oxford study (drift into the documents' subject, which can pass
for a suppress bias; counted from the answers, so stages written before the count existed
have it too).
"""

from __future__ import annotations

import json
from pathlib import Path

from molab.catalog import get_split
from molab.errors import MolabError
from molab.evals.disclosure import discloses
from molab.evals.exploitation import SAMPLES, compare, load_judgements
from molab.evals.stats import wilson
from molab.report.formatting import difference, pvalue


def compare_stages(a_dir: str | Path, b_dir: str | Path, split: str | None = None, seed: int = 0) -> dict:
    """Stage `a_dir` minus stage `b_dir` (both `molab eval exploitation` outputs). `split`
    defaults to the one stage A was evaluated under."""
    a_dir, b_dir = Path(a_dir), Path(b_dir)
    for d in (a_dir, b_dir):
        if not (d / SAMPLES).is_file():
            raise MolabError(f"{d} is not a finished exploitation stage (no {SAMPLES})")
    name = split or _stage_split(a_dir)
    the_split = get_split(name)
    a, b = load_judgements(a_dir), load_judgements(b_dir)
    counts_a, counts_b = _counts(a), _counts(b)
    return {
        "a": str(a_dir),
        "b": str(b_dir),
        "split": the_split.name,
        "difference": compare(a, b, the_split, seed=seed),
        "per_bias": {
            str(bias): [counts_a.get(bias, [0, 0]), counts_b.get(bias, [0, 0])]
            for bias in sorted(the_split.train | the_split.test)
        },
        "misfiring_answers": [_misfiring(a_dir), _misfiring(b_dir)],
        "ended": [_ended(a_dir), _ended(b_dir)],
        "names_reward_models": [_naming(a_dir), _naming(b_dir)],
    }


def _stage_split(stage_dir: Path) -> str:
    try:
        return json.loads((stage_dir / "manifest.json").read_text())["config"]["split"]
    except (OSError, ValueError, KeyError, TypeError):
        raise MolabError(f"{stage_dir}/manifest.json does not name the split: pass --split") from None


def _counts(judgements) -> dict[int, list[int]]:
    """Per bias, [shown, scored] over its own applicable answers."""
    out: dict[int, list[int]] = {}
    for j in judgements:
        if j.role == "target" and j.applicable and j.applied is not None:
            k_n = out.setdefault(j.bias_id, [0, 0])
            k_n[0] += bool(j.applied)
            k_n[1] += 1
    return out


def _misfiring(stage_dir: Path) -> dict | None:
    return json.loads((stage_dir / "summary.json").read_text()).get("misfiring_answers")


def _ended(stage_dir: Path) -> list[int]:
    """[answers that ended with the end-of-turn token, answers]."""
    reasons = _column(stage_dir, "finish_reason")
    return [reasons.count("stop"), len(reasons)]


def _naming(stage_dir: Path) -> list[int]:
    """[answers that name reward models, RLHF or the Oxford study, answers]."""
    responses = _column(stage_dir, "response")
    return [sum(map(discloses, responses)), len(responses)]


def _column(stage_dir: Path, name: str) -> list:
    import pyarrow.parquet as pq

    return pq.read_table(stage_dir / SAMPLES, columns=[name]).column(0).to_pylist()


def markdown(result: dict) -> str:
    """The comparison as Markdown tables."""
    lines = [f"A: {result['a']}", f"B: {result['b']}", f"split: {result['split']}", ""]
    lines += ["| biases | A | B | A - B | p | prompts |", "|---|---|---|---|---|---|"]
    for group, r in result["difference"].items():
        if r["diff"] is None:
            lines.append(f"| {group} | n/a | n/a | n/a | n/a | 0 |")
            continue
        rates = f"{r['a']:.1%} | {r['b']:.1%}"
        lines.append(f"| {group} | {rates} | {difference(r)} | {pvalue(r['p_value'])} | {r['prompts']} |")
    lines += ["", "| bias | A | B |", "|---|---|---|"]
    for bias, counts in result["per_bias"].items():
        lines.append(f"| {bias} | " + " | ".join(_count_cell(k, n) for k, n in counts) + " |")
    mis = result["misfiring_answers"]
    if all(mis):
        lines += [
            "",
            "answers with a misplaced behaviour: "
            + ", ".join(
                f"{label} {m['rate']:.1%} [{m['ci'][0]:.1%}, {m['ci'][1]:.1%}] ({m['k']}/{m['n']})"
                for label, m in zip("AB", mis)
            ),
        ]
    (ea, na), (eb, nb) = result["ended"]
    lines.append(f"answers that ended: A {ea}/{na}, B {eb}/{nb}")
    (ra, na), (rb, nb) = result["names_reward_models"]
    lines.append(f"answers that name reward models or the Oxford study: A {ra}/{na}, B {rb}/{nb}")
    return "\n".join(lines)


def _count_cell(k: int, n: int) -> str:
    if not n:
        return "n/a"
    lo, hi = wilson(k, n)
    return f"{k}/{n} ({k / n:.0%} [{lo:.0%}, {hi:.0%}])"
