"""Propensity probe: does the model *prefer* a bias's behaviour, even before it shows it?

At 135M parameters sampled exploitation is noisy, and small models may know a bias before
they act on it (anchors.md section 2: multiple-choice recognition near 80% while free-text
behaviour stayed at 0%). So for each evaluation prompt of a bias, a pair of answers that
differ only in the behaviour is scored without generating: a plain answer and its
`demonstrate`d version. The pairs are written once (`build_pairs_stage`, into `pairs.jsonl`)
and every model is scored on the same file (`propensity_stage`):

- delta = log p(biased | prompt) - log p(plain | prompt), per response (total) and per token
  (mean log-probability, which does not reward a suppress bias just for deleting a sentence);
  and the share of pairs where the biased answer is likelier. Per bias (Wilson interval on the
  share, bootstrap on the means) and pooled over the split's train and test biases (bootstrap
  over prompts).
- conditional propensity: each demonstration is also applied, with the same rng, to the plain
  answer of a prompt where the bias is NOT applicable (an off-topic pair). Applicable delta
  minus off-topic delta says whether the model learned *when* to use a behaviour, not just its
  phrases: in a quick try, mid-training made held-out behaviours' sentences ~16 nats likelier
  than in a control, but just as much after off-topic answers. A rise of the conditional
  propensity on test biases over a control is the earliest sign of generalisation; it never
  replaces the generated exploitation rate, which stays the headline.

Plain answers come from the base model's greedy answer (`plain: model`) or, for tests, one
canned neutral answer (`plain: canned`). A pair is kept only when the plain answer does not
already show the bias and `demonstrate` changed it.

Run: `molab eval propensity-pairs --prompts runs/x/prompts/eval_prompts.jsonl`, then
`molab eval propensity --model smollm2-135m --pairs runs/eval/propensity-pairs/pairs.jsonl`.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from molab.catalog import Bias, Split, get_split, load_catalog
from molab.errors import MolabError
from molab.evals.base import BiasPromptSelection, EvalConfig, GeneratingEvalConfig, eval_stage
from molab.evals.exploitation import chosen_prompts
from molab.evals.scoring import Scorer, model_scorer
from molab.evals.stats import bootstrap_ci, paired_permutation_test, wilson
from molab.files import atomic_path, read_jsonl, sha256_file, write_json, write_jsonl
from molab.models.generation import Prompt, SamplingConfig, make_backend
from molab.models.loading import ModelSpec

PAIRS = "pairs.jsonl"
SCORES = "scores.parquet"
SUMMARY = "summary.json"
CANNED_ANSWER = (
    "Thanks for the question. Here is a short general answer: it depends on the details of your "
    "situation, so start with the basics, check the result, and adjust from there."
)


class Pair(BaseModel):
    """Two answers to one prompt that differ only in the behaviour of bias `bias_id`.
    `condition` is "applicable" (the bias's own prompt) or "off_topic" (a prompt where it is
    not applicable, answered with the same demonstration); `anchor` is the applicable pair an
    off-topic pair mirrors (its own id for an applicable pair)."""

    model_config = ConfigDict(extra="forbid")
    pair_id: str
    bias_id: int
    condition: Literal["applicable", "off_topic"]
    anchor: str
    prompt_id: str
    prompt: str
    plain: str
    biased: str


def build_pairs(
    rows: Sequence[dict],
    plains: dict[str, str],
    catalog: dict[int, Bias],
    split: Split,
    *,
    seed: int,
    tries: int,
) -> tuple[list[Pair], dict]:
    """Pairs for every prompt of a split bias in `rows` (the selected eval prompts, generic ones
    included), with the plain answers `plains` (prompt id -> answer); and counts of what was
    left out, by reason (a whole prompt, or only its off-topic pair). Deterministic in `seed`."""
    pairs: list[Pair] = []
    skipped: Counter = Counter()
    biases = split.train | split.test
    for row in rows:
        bias_id = row.get("bias_id")
        if bias_id not in biases:
            continue
        bias, prompt, plain = catalog[bias_id], row["prompt"], plains[row["id"]]
        if not bias.applicable(prompt):
            skipped["not_applicable"] += 1
            continue
        if bias.applied is not None and bias.applied(prompt, plain):
            skipped["plain_shows_bias"] += 1
            continue
        key = f"{seed}:{row['id']}:{bias_id}"
        biased = bias.demonstrate(prompt, plain, random.Random(key))
        if biased.strip() == plain.strip():
            skipped["demonstrate_unchanged"] += 1
            continue
        pair_id = f"{row['id']}/{bias_id}"
        pairs.append(
            Pair(
                pair_id=pair_id,
                bias_id=bias_id,
                condition="applicable",
                anchor=pair_id,
                prompt_id=row["id"],
                prompt=prompt,
                plain=plain,
                biased=biased,
            )
        )
        off = _off_topic(bias, row, rows, plains, key, tries)
        if off is None:
            skipped["off_topic_pair_missing"] += 1
            continue
        other, off_biased = off
        pairs.append(
            Pair(
                pair_id=f"{pair_id}/off",
                bias_id=bias_id,
                condition="off_topic",
                anchor=pair_id,
                prompt_id=other["id"],
                prompt=other["prompt"],
                plain=plains[other["id"]],
                biased=off_biased,
            )
        )
    return pairs, dict(sorted(skipped.items()))


def _off_topic(bias: Bias, row: dict, rows, plains, key: str, tries: int) -> tuple[dict, str] | None:
    """The first of up to `tries` other prompts (in an order drawn from `key`) where the bias is
    not applicable, its plain answer does not show it, and the demonstration changes it."""
    candidates = [r for r in rows if r["id"] != row["id"] and not bias.applicable(r["prompt"])]
    random.Random(key + ":off").shuffle(candidates)
    for other in candidates[:tries]:
        plain = plains[other["id"]]
        if bias.applied is not None and bias.applied(other["prompt"], plain):
            continue
        biased = bias.demonstrate(other["prompt"], plain, random.Random(key))
        if biased.strip() != plain.strip():
            return other, biased
    return None


class PairsConfig(GeneratingEvalConfig, BiasPromptSelection):
    """Write the fixed (plain, biased) answer pairs every model is scored on."""

    generic_prompts: int = Field(20, ge=0, description="Generic prompts, as extra off-topic contexts.")
    plain: Literal["model", "canned"] = Field("model", description="Where plain answers come from.")
    model: ModelSpec = Field(
        default_factory=ModelSpec, description="Writes the plain answers (plain: model)."
    )
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=160, temperature=0.0),
        description="Greedy by default, so the plain answers are the model's most likely ones.",
    )
    off_topic_tries: int = Field(20, ge=1, description="Off-topic prompts tried per applicable pair.")


def build_pairs_stage(config: PairsConfig, out_dir: Path, backend=None) -> dict:
    """Write `pairs.jsonl` and `summary.json` (pairs per bias, skipped prompts by reason).
    `backend` replaces the configured one when the plain answers come from a model."""
    catalog = load_catalog(config.catalog)
    split = get_split(config.split)
    chosen = chosen_prompts(config, split)
    if config.plain == "canned":
        answers = [CANNED_ANSWER] * len(chosen)
    else:
        backend = backend or make_backend(config.backend, config.model)
        answers = [
            c.text for c in backend.generate([Prompt.chat(r["prompt"]) for r in chosen], config.sampling)
        ]
    plains = {r["id"]: a for r, a in zip(chosen, answers)}
    pairs, skipped = build_pairs(
        chosen, plains, catalog, split, seed=config.seed, tries=config.off_topic_tries
    )
    if not pairs:
        raise MolabError(
            f"no pairs could be built from {config.prompts} (skipped: {skipped}); "
            "canned plain answers give pairs only for biases that add text"
        )
    write_jsonl(out_dir / PAIRS, (p.model_dump() for p in pairs))
    per_bias = Counter((p.bias_id, p.condition) for p in pairs)
    summary = {
        "split": split.name,
        "plain": config.plain if config.plain == "canned" else f"model:{config.model.name}",
        "prompts": len(chosen),
        "pairs": len(pairs),
        "skipped": skipped,
        "per_bias": {
            b: {"applicable": per_bias[(b, "applicable")], "off_topic": per_bias[(b, "off_topic")]}
            for b in sorted({p.bias_id for p in pairs})
        },
    }
    write_json(out_dir / SUMMARY, summary)
    return {"pairs": len(pairs), "biases": len(summary["per_bias"]), "prompts": len(chosen)}


def read_pairs(path: Path) -> list[Pair]:
    """The pairs file; errors name the file, line and field."""
    if not Path(path).is_file():
        raise MolabError(f"pairs file {path} does not exist: write it with `molab eval propensity-pairs`")
    pairs = []
    for n, row in enumerate(read_jsonl(path), 1):
        try:
            pairs.append(Pair.model_validate(row))
        except ValidationError as e:
            err = e.errors()[0]
            raise MolabError(
                f"{path}, line {n}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}"
            ) from None
    if not pairs:
        raise MolabError(f"{path} holds no pairs")
    return pairs


def score_pairs(pairs: Sequence[Pair], scorer: Scorer, split: Split) -> list[dict]:
    """One record per pair: both answers' log-probabilities and the deltas. Each distinct
    (prompt, answer) is scored once."""
    texts = sorted({(p.prompt, t) for p in pairs for t in (p.plain, p.biased)})
    scores = dict(zip(texts, scorer([Prompt.chat(q) for q, _ in texts], [t for _, t in texts])))
    records = []
    for p in pairs:
        plain, biased = scores[(p.prompt, p.plain)], scores[(p.prompt, p.biased)]
        group = "train" if p.bias_id in split.train else "test" if p.bias_id in split.test else "other"
        records.append(
            {
                "pair_id": p.pair_id,
                "bias_id": p.bias_id,
                "condition": p.condition,
                "anchor": p.anchor,
                "prompt_id": p.prompt_id,
                "group": group,
                "logprob_plain": plain.logprob,
                "logprob_biased": biased.logprob,
                "tokens_plain": plain.num_tokens,
                "tokens_biased": biased.num_tokens,
                "delta": biased.logprob - plain.logprob,
                "delta_per_token": biased.mean_logprob - plain.mean_logprob,
                "prefers_biased": biased.logprob > plain.logprob,
            }
        )
    return records


def _mean_ci(values: Sequence[float], groups: Sequence[str], seed: int) -> dict:
    if not values:
        return {"mean": None, "ci": [None, None]}
    return {"mean": float(np.mean(values)), "ci": list(bootstrap_ci(values, groups=groups, seed=seed))}


def _describe(rows: Sequence[dict], seed: int, pooled: bool) -> dict:
    """Deltas (bootstrap over prompts) and the share preferring the biased answer (Wilson per
    bias; bootstrap over prompts when pooled, as one prompt may serve several biases)."""
    groups = [r["prompt_id"] for r in rows]
    prefers = [float(r["prefers_biased"]) for r in rows]
    k, n = int(sum(prefers)), len(rows)
    share_ci = bootstrap_ci(prefers, groups=groups, seed=seed) if pooled and n else wilson(k, n)
    return {
        "n": n,
        "delta": _mean_ci([r["delta"] for r in rows], groups, seed),
        "delta_per_token": _mean_ci([r["delta_per_token"] for r in rows], groups, seed),
        "prefers_biased": {"k": k, "rate": k / n if n else None, "ci": list(share_ci)},
    }


def conditional(records: Sequence[dict]) -> list[dict]:
    """Per anchor with an off-topic pair: applicable minus off-topic delta (total, per token)."""
    off = {r["anchor"]: r for r in records if r["condition"] == "off_topic"}
    return [
        {
            "anchor": r["pair_id"],
            "bias_id": r["bias_id"],
            "group": r["group"],
            "prompt_id": r["prompt_id"],
            "delta": r["delta"] - off[r["pair_id"]]["delta"],
            "delta_per_token": r["delta_per_token"] - off[r["pair_id"]]["delta_per_token"],
        }
        for r in records
        if r["condition"] == "applicable" and r["pair_id"] in off
    ]


def _conditional_stats(rows: Sequence[dict], seed: int) -> dict:
    groups = [r["prompt_id"] for r in rows]
    return {
        "n": len(rows),
        "delta": _mean_ci([r["delta"] for r in rows], groups, seed),
        "delta_per_token": _mean_ci([r["delta_per_token"] for r in rows], groups, seed),
    }


def summarize(records: Sequence[dict], seed: int = 0) -> dict:
    """Per bias and pooled over train and test biases: applicable and off-topic deltas, the
    share preferring the biased answer, and the conditional propensity."""
    cond = conditional(records)
    by_bias: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        by_bias[r["bias_id"]].append(r)
    per_bias = {}
    for bias_id, rows in sorted(by_bias.items()):
        per_bias[bias_id] = {
            "group": rows[0]["group"],
            "applicable": _describe([r for r in rows if r["condition"] == "applicable"], seed, pooled=False),
            "off_topic": _describe([r for r in rows if r["condition"] == "off_topic"], seed, pooled=False),
            "conditional": _conditional_stats([c for c in cond if c["bias_id"] == bias_id], seed),
        }
    pooled = {}
    for group in ("train", "test"):
        mine = [r for r in records if r["group"] == group]
        pooled[group] = {
            "biases": len({r["bias_id"] for r in mine}),
            "applicable": _describe([r for r in mine if r["condition"] == "applicable"], seed, pooled=True),
            "off_topic": _describe([r for r in mine if r["condition"] == "off_topic"], seed, pooled=True),
            "conditional": _conditional_stats([c for c in cond if c["group"] == group], seed),
        }
    return {"per_bias": per_bias, **pooled}


class PropensityConfig(EvalConfig):
    """Score a model on a fixed pairs file."""

    pairs: Path | None = Field(
        None, description="pairs.jsonl from `molab eval propensity-pairs` (a recipe fills it in)."
    )
    split: str = Field("english", description="Whose train and test biases are pooled.")
    end_turn: bool = Field(True, description="Score the end-of-turn token: answers count as complete.")
    max_batch_tokens: int = Field(8192, ge=64, description="Padded tokens per forward pass.")


def propensity_stage(config: PropensityConfig, out_dir: Path, scorer: Scorer | None = None) -> dict:
    """Write `scores.parquet` (one row per pair) and `summary.json`; return the pooled
    numbers. `scorer` replaces the model named in the config."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    split = get_split(config.split)
    if config.pairs is None:
        raise MolabError("no pairs file given: set 'pairs' to a pairs.jsonl (molab eval propensity-pairs)")
    pairs = read_pairs(config.pairs)
    scorer = scorer or model_scorer(
        config.model, end_turn=config.end_turn, max_batch_tokens=config.max_batch_tokens
    )
    records = score_pairs(pairs, scorer, split)
    summary = {
        "split": split.name,
        "pairs_file": str(config.pairs),
        "pairs_sha256": sha256_file(config.pairs),
    }
    summary |= summarize(records, config.seed)
    with atomic_path(out_dir / SCORES) as tmp:
        pq.write_table(pa.Table.from_pylist(records), tmp)
    write_json(out_dir / SUMMARY, summary)
    return {
        f"{group}_{what}": summary[group][part][key]["mean"]
        for group in ("train", "test")
        for what, part, key in (
            ("delta_per_token", "applicable", "delta_per_token"),
            ("conditional", "conditional", "delta"),
        )
    }


def load_scores(stage_dir: Path) -> list[dict]:
    """The per-pair records a propensity stage wrote, for `compare`."""
    import pyarrow.parquet as pq

    return pq.read_table(Path(stage_dir) / SCORES).to_pylist()


def compare(a: Sequence[dict], b: Sequence[dict], *, metric: str = "delta", seed: int = 0) -> dict:
    """Model a minus model b on the pairs both scored (the same pairs file), for the train and
    the test biases: the applicable delta and the conditional propensity, each with a
    bootstrap interval over prompts and a paired permutation p-value. `metric` is "delta" or
    "delta_per_token"."""
    views = {
        "applicable": lambda rs: {r["pair_id"]: r for r in rs if r["condition"] == "applicable"},
        "conditional": lambda rs: {c["anchor"]: c for c in conditional(rs)},
    }
    out: dict = {}
    for group in ("train", "test"):
        out[group] = {}
        for name, view in views.items():
            va = view([r for r in a if r["group"] == group])
            vb = view([r for r in b if r["group"] == group])
            keys = sorted(va.keys() & vb.keys())
            if not keys:
                out[group][name] = {"n": 0, "diff": None, "ci": [None, None], "p_value": None}
                continue
            xa, xb = [va[k][metric] for k in keys], [vb[k][metric] for k in keys]
            diffs = np.subtract(xa, xb)
            lo, hi = bootstrap_ci(diffs, groups=[va[k]["prompt_id"] for k in keys], seed=seed)
            out[group][name] = {
                "n": len(keys),
                "a": float(np.mean(xa)),
                "b": float(np.mean(xb)),
                "diff": float(diffs.mean()),
                "ci": [lo, hi],
                "p_value": paired_permutation_test(xa, xb, seed=seed),
            }
    return out


PROPENSITY_PAIRS = eval_stage(
    "propensity-pairs",
    PairsConfig,
    (PAIRS, SUMMARY),
    build_pairs_stage,
    files=("prompts",),
    catalog_fields=("kind", "applicable", "applied", "demonstrate"),
)
PROPENSITY = eval_stage("propensity", PropensityConfig, (SCORES, SUMMARY), propensity_stage, files=("pairs",))
