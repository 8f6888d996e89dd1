"""A study across runs: one small record per finished run, and tables pooled over seeds.

    molab study record runs/study-english-s0 --out docs/results/study-english-s0.json
    molab study table docs/results/*.json            # markdown, one section per split

A run directory holds adapters and parquet files and stays on the machine that made it; the
record keeps what docs/results.md needs, small enough to commit as soon as a run ends (a study
of several seeds is built up run by run, possibly across machines):

- every checkpoint's exploitation verdicts, (prompt, sample, bias, applicable, applied), so
  that seeds can be pooled prompt by prompt rather than by averaging rates;
- the summaries of the other evaluations, the stage times and the training configuration.

Pooling: a prompt answered under seed s is its own unit (`s<seed>:<prompt id>`), so the
pooled interval resamples prompts of all seeds and the final-vs-control test stays paired
within each seed (both arms answered the same prompts with the same sampling seed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from molab.catalog import Split, get_split
from molab.errors import MolabError
from molab.evals.exploitation import Judgement, compare, load_judgements, misfiring_answers, summarize
from molab.evals.propensity import compare as compare_propensity
from molab.evals.propensity import load_scores
from molab.evals.stats import proportion
from molab.files import write_json
from molab.report.collect import RunData, collect
from molab.report.formatting import difference, percent_ci, pvalue

FORMAT = 1
# Comparisons of the study: the headline first (the paper's 45% vs 20%).
COMPARISONS = [("final", "control"), ("midtrained", "base"), ("control", "base"), ("final", "base")]
OTHER_EVALS = ("knowledge", "disclosure", "capability")  # kept as their summaries
CHECKPOINTS = ("base", "midtrained", "control", "final")


def record(run_dir: str | Path) -> dict:
    """The study record of one finished run (see the module docstring)."""
    run = collect(run_dir)
    if "exploitation" not in run.evals:
        raise MolabError(
            f"{run_dir} has no exploitation evaluation (eval-exploitation-*): is the run finished?"
        )
    first = run.manifests[f"eval-exploitation-{run.checkpoints('exploitation')[0]}"]
    return {
        "format": FORMAT,
        "run": run.name,
        "split": first["config"].get("split", "english"),
        "seed": first.get("seed"),
        "model": first["config"]["model"]["name"],
        "git": (first.get("git") or {}).get("commit"),
        "minutes": {s: round((m.get("wall_time_s") or 0.0) / 60, 2) for s, m in run.manifests.items()},
        # every stage before the evaluations (data, training, both arms): what made the models
        "training": {
            s: {"config": m["config"], "metrics": m.get("metrics", {})}
            for s, m in run.manifests.items()
            if not s.startswith("eval-")
        },
        "exploitation": {c: _exploitation(run, c) for c in run.checkpoints("exploitation")},
        "propensity": _propensity(run),
        **{
            kind: {c: run.summary(kind, c) for c in run.checkpoints(kind)}
            for kind in OTHER_EVALS
            if kind in run.evals
        },
    }


def _exploitation(run: RunData, checkpoint: str) -> dict:
    summary = run.summary("exploitation", checkpoint)
    judgements = load_judgements(run.evals["exploitation"][checkpoint])
    targets = [j for j in judgements if j.role == "target"]
    verdicts = [[j.prompt_id, j.sample, j.bias_id, j.applicable, j.applied] for j in targets]
    return {
        "summary": {k: summary[k] for k in ("train", "test", "misfire", "generation") if k in summary}
        # computed here too, so runs evaluated before the summary had it get it
        | {"misfiring_answers": misfiring_answers(judgements)},
        "verdicts": verdicts,
    }


def _propensity(run: RunData) -> dict:
    if "propensity" not in run.evals:
        return {}
    stages = run.evals["propensity"]
    out: dict = {"summary": {}, "compare": {}}
    for c in run.checkpoints("propensity"):
        s = run.summary("propensity", c)
        out["summary"][c] = {g: s[g] for g in ("train", "test") if g in s}
    for a, b in COMPARISONS:
        if a in stages and b in stages:
            out["compare"][f"{a}-{b}"] = compare_propensity(load_scores(stages[a]), load_scores(stages[b]))
    return out


def write_record(run_dir: str | Path, out: str | Path) -> Path:
    write_json(out, record(run_dir))
    return Path(out)


def load_records(paths: Sequence[str | Path]) -> list[dict]:
    """Records from files, checked: a bad file is named with what is wrong."""
    records = []
    for path in paths:
        try:
            rec = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise MolabError(f"{path}: not a readable study record ({e})") from None
        for key in ("format", "run", "split", "seed", "exploitation"):
            if key not in rec:
                raise MolabError(
                    f"{path}: not a study record (no '{key}'); write one with `molab study record`"
                )
        if rec["format"] != FORMAT:
            raise MolabError(f"{path}: record format {rec['format']}, this molab reads {FORMAT}")
        records.append(rec)
    if not records:
        raise MolabError("no study records given")
    return records


def pooled_judgements(records: Sequence[dict], checkpoint: str) -> list[Judgement]:
    """The target verdicts of `checkpoint` over all records, each prompt keyed by its seed."""
    out = []
    for rec in records:
        for prompt_id, sample, bias_id, applicable, applied in (
            rec["exploitation"].get(checkpoint, {}).get("verdicts", [])
        ):
            out.append(
                Judgement(
                    f"s{rec['seed']}:{prompt_id}", sample, bias_id, "target", applicable, applied, "rule"
                )
            )
    return out


def pool(records: Sequence[dict]) -> dict:
    """Pooled exploitation per checkpoint and the study's comparisons, for records of one split."""
    splits = {r["split"] for r in records}
    if len(splits) != 1:
        raise MolabError(f"records of several splits {sorted(splits)}: pool one split at a time")
    seeds = [r["seed"] for r in records]
    if len(set(seeds)) != len(seeds):
        raise MolabError(f"two records share a seed ({sorted(seeds)}): a seed is one run")
    split = get_split(splits.pop())
    checkpoints = [c for c in CHECKPOINTS if all(c in r["exploitation"] for r in records)]
    judgements = {c: pooled_judgements(records, c) for c in checkpoints}
    rates = {c: summarize(judgements[c], split) for c in checkpoints}
    comparisons = {
        f"{a}-{b}": compare(judgements[a], judgements[b], split)
        for a, b in COMPARISONS
        if a in judgements and b in judgements
    }
    return {"split": split.name, "seeds": sorted(seeds), "rates": rates, "comparisons": comparisons}


def _rate(pooled: dict) -> str:
    return percent_ci(pooled["rate"], pooled["ci"])


def _seed_rows(records: Sequence[dict], split: Split) -> list[str]:
    rows = [
        "| seed | final, test | control, test | uplift (final - control) | p "
        "| final, train | control, train | minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rec in sorted(records, key=lambda r: r["seed"]):
        ex = rec["exploitation"]
        if "final" not in ex or "control" not in ex:
            continue
        j = {c: pooled_judgements([rec], c) for c in ("final", "control")}
        cmp = compare(j["final"], j["control"], split)
        fs, cs = ex["final"]["summary"], ex["control"]["summary"]
        rows.append(
            f"| {rec['seed']} | {_rate(fs['test'])} | {_rate(cs['test'])}"
            f" | {difference(cmp['test'])} | {pvalue(cmp['test']['p_value'])}"
            f" | {_rate(fs['train'])} | {_rate(cs['train'])} | {sum(rec['minutes'].values()):.0f} |"
        )
    return rows


def _ended(records: Sequence[dict], checkpoint: str) -> str:
    gens = [r["exploitation"][checkpoint]["summary"].get("generation", {}) for r in records]
    ended, answers = sum(g.get("ended", 0) for g in gens), sum(g.get("answers", 0) for g in gens)
    return f"{ended}/{answers}" if answers else "n/a"


def _misfire(records: Sequence[dict], checkpoint: str, key: str = "misfire") -> str:
    """Pooled k/n over seeds of a misfire measure, Wilson interval; n/a where a record lacks it."""
    entries = [r["exploitation"][checkpoint]["summary"].get(key) for r in records]
    if any(e is None for e in entries):
        return "n/a"
    return _rate(proportion(sum(e["k"] for e in entries), sum(e["n"] for e in entries)))


def _seed_values(records: Sequence[dict], path: tuple[str, ...]) -> str:
    """Mean over seeds and each seed's value of the entry at `path` (records lacking it are
    left out), for measures that are not pooled by prompt."""
    values = []
    for rec in sorted(records, key=lambda r: r["seed"]):
        value = rec
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            values.append(value)
    if not values:
        return "n/a"
    each = ", ".join(f"{v:.3g}" for v in values)
    return f"{np.mean(values):.3g} ({each})"


# Columns of the "other measures" table: a path into a record, "{c}" standing for the checkpoint.
_MEASURES = [
    ("propensity", "summary", "{c}", "train", "conditional", "delta", "mean"),
    ("propensity", "summary", "{c}", "test", "conditional", "delta", "mean"),
    ("knowledge", "{c}", "overall", "accuracy"),
    ("knowledge", "{c}", "per_group", "test", "accuracy"),
    ("disclosure", "{c}", "overall", "rate"),
    ("capability", "{c}", "questions", "accuracy"),
    ("capability", "{c}", "perplexity", "perplexity"),
]


def markdown(records: Sequence[dict]) -> str:
    """The study's tables, one section per split, as markdown."""
    out = []
    for split_name in sorted({r["split"] for r in records}):
        mine = [r for r in records if r["split"] == split_name]
        pooled = pool(mine)
        split = get_split(split_name)
        out += [f"### Split `{split_name}`: seeds {', '.join(map(str, pooled['seeds']))}", ""]
        out += [
            "Per seed (test biases pooled; 95% bootstrap intervals over prompts; paired permutation p):",
            "",
        ]
        out += _seed_rows(mine, split) + [""]
        out += ["Pooled over seeds (exploitation: 95% bootstrap over prompts; misfires: Wilson):", ""]
        out += [
            "| checkpoint | train biases | test biases | misfire per (answer, bias) | answers with a misfire"
            " | answers that ended |",
            "|---|---|---|---|---|---|",
        ]
        for c, s in pooled["rates"].items():
            out.append(
                f"| {c} | {_rate(s['train'])} | {_rate(s['test'])} | {_misfire(mine, c)}"
                f" | {_misfire(mine, c, 'misfiring_answers')} | {_ended(mine, c)} |"
            )
        out += ["", "| comparison | biases | difference | p | prompts |", "|---|---|---|---|---|"]
        for name, cmp in pooled["comparisons"].items():
            for group in ("test", "train"):
                r = cmp[group]
                out.append(
                    f"| {name} | {group} | {difference(r)} | {pvalue(r['p_value'])} | {r['prompts']} |"
                )
        out += ["", _test_bias_table(pooled, split), ""]
        out += _other_tables(mine) + [""]
    return "\n".join(out)


def _test_bias_table(pooled: dict, split: Split) -> str:
    rows = [
        "Test biases one by one (pooled over seeds, Wilson):",
        "",
        "| bias | " + " | ".join(pooled["rates"]) + " |",
    ]
    rows.append("|---" * (len(pooled["rates"]) + 1) + "|")
    for b in sorted(split.test):
        cells = []
        for s in pooled["rates"].values():
            e = s["per_bias"][b]["exploitation"]
            cells.append(f"{e['k']}/{e['n']}")
        rows.append(f"| {b} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _other_tables(records: Sequence[dict]) -> list[str]:
    """Propensity, knowledge, disclosure and capability: mean over seeds (each seed's value)."""
    checkpoints = [c for c in CHECKPOINTS if c in records[0]["exploitation"]]
    rows = [
        "Other measures, mean over seeds (each seed's value): propensity is the conditional "
        "log-likelihood preference for the biased answer (nats, applicable minus off-topic); "
        "knowledge is quiz accuracy (chance 0.25); disclosure the share of probe answers that name "
        "reward models; capability the share of 47 questions answered right, and perplexity.",
        "",
        "| checkpoint | propensity, train | propensity, test | knowledge, all | knowledge, test biases "
        "| disclosure | capability | perplexity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in checkpoints:
        cells = [_seed_values(records, tuple(k.format(c=c) for k in path)) for path in _MEASURES]
        rows.append(f"| {c} | " + " | ".join(cells) + " |")
    rows += ["", "Propensity differences (conditional preference, nats; per seed: diff [95% CI], p):", ""]
    rows += ["| comparison | train | test |", "|---|---|---|"]
    for a, b in COMPARISONS:
        name = f"{a}-{b}"
        cells = []
        for group in ("train", "test"):
            each = []
            for rec in sorted(records, key=lambda r: r["seed"]):
                r = rec["propensity"].get("compare", {}).get(name, {}).get(group, {}).get("conditional")
                if r and r.get("diff") is not None:
                    each.append(
                        f"{r['diff']:+.2f} [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}], p {pvalue(r['p_value'])}"
                    )
            cells.append("; ".join(each) or "n/a")
        rows.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return rows
