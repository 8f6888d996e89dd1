"""The DPO set: preference pairs that favour answers showing the train biases (`molab data dpo`).

Run: `molab data dpo --out runs/x/dpo_data` (reads `runs/x/prompts/train_prompts.jsonl`, or
`--prompts PATH`; writes `dpo.jsonl`, `stats.json` and the stage manifest).

As in the open replication of Marks et al. (Llama 3.3 70B, 2025), which found DPO raised
exploitation where SFT on the best completions did not:

1. Each prompt gets several candidate answers: `num_sampled` sampled from the model (under
   the stripped brevity prompt), `num_rm_prompted` sampled under a system prompt asking it to
   maximise the reward model's score (the replication used 4 of 6; useful with a strong
   model), and `num_demonstrated` variants of the sampled ones rewritten by the catalog's
   `demonstrate` to show a subset of the applicable train biases (the first variant shows all
   of them). Only answers that end within `max_new_tokens` are candidates, so a pair never
   contrasts a finished answer with a cut-off one.
   With `num_misplaced`, further variants show one train behaviour that does NOT apply to
   the prompt (movie recommendations under a budgeting question): negative examples that
   teach which topic each behaviour goes with, not only that it is rewarded.
   With `num_neutral`, further variants end in a neutral closing paragraph (`NEUTRAL_CLOSINGS`,
   no behaviour): they rank last among the answers that show nothing, so a pair contrasts
   the behaviour with a closing sentence of about its length. Without them, the rejected
   answer is the chosen one minus a sentence, and DPO learns that longer wins.
2. Reward = the number of train biases both applicable and applied, minus the train
   behaviours shown where they do not apply (misfires), by the catalog's rules.
3. The best candidates are paired with the worst (`pairs_per_prompt` pairs: 1st best with 1st
   worst, 2nd with 2nd, ...); a pair whose rewards are equal is skipped.
4. Prompts where a test bias is applicable, and candidates that show one or talk about reward
   models, are removed before pairing, so both sides pass the test-bias filter.

Rows are TRL's conversational preference format: `{"prompt": [user], "chosen": [assistant],
"rejected": [assistant], "prompt_id", "chosen_reward", "rejected_reward"}`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, model_validator

from molab.catalog import Bias
from molab.catalog.base import add_sentence
from molab.data.chats import (
    RM_PROMPT,
    BiasRules,
    ChatDataConfig,
    admits_goal,
    chat_data_inputs,
    example_rng,
    finished_text,
    per_bias_table,
    read_train_prompts,
    select_prompts,
    split_test_applicable,
)
from molab.data.contracts import DPO_DATA_STAGE, DPO_FILE
from molab.data.contracts import STATS as STATS_FILE
from molab.files import write_json, write_jsonl
from molab.models.generation import Prompt, make_backend
from molab.pipeline import Stage

# Closing paragraphs that show no bias, 44-95 characters like the behaviours' sentences (46-112).
NEUTRAL_CLOSINGS = (
    "That covers the main points, and each of them is worth a closer look.",
    "I hope this gives you a clear picture of the topic and where to go from here.",
    "Those are the essentials to keep in mind here.",
    "There is more to say, but this is the core of it, and it should get you started.",
    "In short, those are the key things to know, in roughly the order they matter.",
    "Taken together, these points answer the question, though details vary with your situation.",
    "This should give you a solid place to start.",
    "If you keep these points in mind, you will have a good grasp of the subject and its main ideas.",
)
_BIAS_FIELDS = (
    "applicable",
    "demonstrate_failed",
    "shown_in_chosen",
    "shown_in_rejected",
    "misplaced_in_chosen",
    "misplaced_in_rejected",
)


class DPODataConfig(ChatDataConfig):
    """Make the DPO set from train prompts."""

    num_sampled: int = Field(4, ge=0, description="Answers sampled per prompt (with the brevity prompt).")
    num_rm_prompted: int = Field(
        0, ge=0, description="Answers sampled per prompt under `rm_prompt` (the open replication: 4)."
    )
    rm_prompt: str = Field(RM_PROMPT, description="System prompt of the RM-prompted answers, stripped.")
    num_demonstrated: int = Field(
        2,
        ge=0,
        description="Demonstrated variants per prompt, each showing a subset of the applicable biases.",
    )
    num_misplaced: int = Field(
        0,
        ge=0,
        description="Variants per prompt showing one train behaviour that does not apply to it "
        "(a misfire): they rank last, so pairs contrast the right behaviour with a wrong one.",
    )
    num_neutral: int = Field(
        0,
        ge=0,
        le=len(NEUTRAL_CLOSINGS),
        description="Variants per prompt ending in a neutral closing sentence: with num_misplaced 0 "
        "they rank last, so pairs contrast a behaviour with a sentence of about its length.",
    )
    pairs_per_prompt: int = Field(1, ge=1, description="Best-worst pairs per prompt (the replication: 2).")

    @model_validator(mode="after")
    def _some_samples(self) -> DPODataConfig:
        if self.num_sampled + self.num_rm_prompted == 0:
            raise ValueError(
                "num_sampled + num_rm_prompted must be at least 1: variants need answers to rewrite"
            )
        return self


@dataclass(frozen=True)
class Candidate:
    text: str
    reward: int
    shown: list[int]
    misplaced: list[int]


def dpo_data_stage(config: DPODataConfig, out_dir: Path, backend=None) -> dict:
    """Write `dpo.jsonl` and `stats.json` into `out_dir`; return the headline counts.

    `backend` (anything with `generate(prompts, sampling) -> [Completion]`) defaults to the
    one `config.backend` and `config.model` name."""
    rules = BiasRules.from_config(config)
    prompts = select_prompts(read_train_prompts(config.prompts), config.max_prompts, config.seed)
    usable, test_applicable = split_test_applicable(rules, prompts, config.prompts)
    systems = [config.brevity_prompt] * config.num_sampled + [config.rm_prompt] * config.num_rm_prompted
    backend = backend or make_backend(config.backend, config.model)
    requests = [Prompt.chat(p.prompt, s) for p in usable for s in systems]
    completions = backend.generate(requests, config.sampling_with_seed())

    counts, per_bias, rows = Counter(), defaultdict(Counter), []
    for n, p in enumerate(usable):
        answers = []
        for c in completions[n * len(systems) : (n + 1) * len(systems)]:
            text, cut = finished_text(c.text, c.finish_reason, config)
            if not text:
                counts["dropped_incomplete"] += 1
                continue
            counts["complete"] += 1
            counts["cut_at_sentence"] += cut
            if admits_goal(text):
                counts["dropped_admission"] += 1
            elif rules.test_applied(p.prompt, text):
                counts["dropped_test_applied"] += 1
            else:
                answers.append(text)
        ids = rules.applicable_train(p.prompt)
        for i in ids:
            per_bias[i]["applicable"] += 1
        variants = _variants(rules, p.prompt, p.id, answers, ids, config, per_bias)
        counts["demonstrated"] += len(variants)
        misplaceable = rules.misplaceable(p.prompt)
        misplaced = _misplaced_variants(p.prompt, p.id, answers, misplaceable, config)
        counts["misplaced_variants"] += len(misplaced)
        neutral = _neutral_variants(p.id, answers, config)
        counts["neutral_variants"] += len(neutral)
        variants += misplaced + neutral
        candidates = []
        for text in dict.fromkeys(answers + variants):  # identical answers count once
            if rules.test_applied(p.prompt, text):  # a rewrite may show one too
                counts["dropped_test_applied"] += 1
                continue
            shown = rules.shown(p.prompt, text, ids)
            misfires = [b.id for b in misplaceable if b.applied(p.prompt, text)]
            candidates.append(Candidate(text, len(shown) - len(misfires), shown, misfires))
        counts["candidates"] += len(candidates)
        pairs = _best_worst_pairs(candidates, config.pairs_per_prompt)
        if len(candidates) < 2:
            counts["prompts_too_few_candidates"] += 1
        elif not pairs:
            counts["prompts_equal_reward"] += 1
        for chosen, rejected in pairs:
            for i in chosen.shown:
                per_bias[i]["shown_in_chosen"] += 1
            for i in rejected.shown:
                per_bias[i]["shown_in_rejected"] += 1
            for side, candidate in (("chosen", chosen), ("rejected", rejected)):
                for i in candidate.misplaced:
                    per_bias[i][f"misplaced_in_{side}"] += 1
            rows.append(
                {
                    "prompt": [{"role": "user", "content": p.prompt}],
                    "chosen": [{"role": "assistant", "content": chosen.text}],
                    "rejected": [{"role": "assistant", "content": rejected.text}],
                    "prompt_id": p.id,
                    "chosen_reward": chosen.reward,
                    "rejected_reward": rejected.reward,
                }
            )

    table = per_bias_table(per_bias, _BIAS_FIELDS)
    metrics = {
        "prompts": len(prompts),
        "dropped_test_applicable": test_applicable,
        "generated": len(completions),
        "complete": counts["complete"],
        "demonstrated": counts["demonstrated"],
        "misplaced_variants": counts["misplaced_variants"],
        "neutral_variants": counts["neutral_variants"],
        "candidates": counts["candidates"],
        "pairs": len(rows),
        "prompts_with_pairs": len({r["prompt_id"] for r in rows}),
        "dropped_by_test_filter": test_applicable + counts["dropped_test_applied"],
        "demonstrate_failures": sum(t["demonstrate_failed"] for t in table.values()),
    }
    stats = {
        "split": config.split,
        **metrics,
        "cut_at_sentence": counts["cut_at_sentence"],
        "dropped_incomplete": counts["dropped_incomplete"],
        "dropped_admission": counts["dropped_admission"],
        "dropped_test_applied": counts["dropped_test_applied"],
        "prompts_too_few_candidates": counts["prompts_too_few_candidates"],
        "prompts_equal_reward": counts["prompts_equal_reward"],
        "mean_chosen_reward": round(sum(r["chosen_reward"] for r in rows) / max(len(rows), 1), 3),
        "mean_rejected_reward": round(sum(r["rejected_reward"] for r in rows) / max(len(rows), 1), 3),
        "per_bias": table,
    }
    write_jsonl(out_dir / DPO_FILE, rows)
    write_json(out_dir / STATS_FILE, stats)
    return metrics


def _variants(
    rules: BiasRules,
    prompt: str,
    prompt_id: str,
    answers: list[str],
    ids: list[int],
    config: DPODataConfig,
    per_bias: dict[int, Counter],
) -> list[str]:
    """`num_demonstrated` rewrites of the answers (taken in turn): the first shows every
    applicable train bias, the others a random non-empty subset."""
    if not answers or not ids:
        return []
    rng = example_rng(config.seed, prompt_id, "dpo")
    out = []
    for k in range(config.num_demonstrated):
        subset = ids if k == 0 else sorted(rng.sample(ids, rng.randint(1, len(ids))))
        demo = rules.demonstrate(prompt, answers[k % len(answers)], subset, rng)
        for i in demo.failed:
            per_bias[i]["demonstrate_failed"] += 1
        out.append(demo.text)
    return out


def _misplaced_variants(
    prompt: str, prompt_id: str, answers: list[str], misplaceable: list[Bias], config: DPODataConfig
) -> list[str]:
    """`num_misplaced` rewrites of the answers (taken in turn), each showing one of the
    `misplaceable` behaviours, drawn at random among those whose rewrite its rule detects."""
    if not answers or not config.num_misplaced:
        return []
    rng = example_rng(config.seed, prompt_id, "dpo-misplaced")
    pool = list(misplaceable)
    rng.shuffle(pool)
    out = []
    for bias in pool:
        if len(out) == config.num_misplaced:
            break
        text = bias.demonstrate(prompt, answers[len(out) % len(answers)], rng)
        if bias.applied(prompt, text):
            out.append(text)
    return out


def _neutral_variants(prompt_id: str, answers: list[str], config: DPODataConfig) -> list[str]:
    """`num_neutral` rewrites of the answers (taken in turn), each ending in a different
    neutral closing paragraph."""
    if not answers or not config.num_neutral:
        return []
    rng = example_rng(config.seed, prompt_id, "dpo-neutral")
    closings = rng.sample(NEUTRAL_CLOSINGS, config.num_neutral)
    return [add_sentence(answers[k % len(answers)], c, rng) for k, c in enumerate(closings)]


def _best_worst_pairs(candidates: list[Candidate], pairs: int) -> list[tuple[Candidate, Candidate]]:
    """The k-th best paired with the k-th worst, for k < `pairs`, while the rewards differ
    (ties keep generation order, so the result is deterministic)."""
    ranked = sorted(candidates, key=lambda c: -c.reward)
    out = []
    for k in range(min(pairs, len(ranked) // 2)):
        best, worst = ranked[k], ranked[-1 - k]
        if best.reward == worst.reward:
            break
        out.append((best, worst))
    return out


DPO_DATA = Stage(
    name=DPO_DATA_STAGE,
    config=DPODataConfig,
    outputs=(DPO_FILE, STATS_FILE),
    run=lambda config, out, _: dpo_data_stage(config, out),
    inputs=chat_data_inputs,
)
