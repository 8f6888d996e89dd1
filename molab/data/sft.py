"""The SFT set: answers to train prompts that show the train biases (`molab data sft`).

Run: `molab data sft --out runs/x/sft_data` (reads `runs/x/prompts/train_prompts.jsonl`, or
`--prompts PATH`; writes `sft.jsonl`, `stats.json` and the stage manifest).

Two modes:

- `demonstrate` (default, for small models): the chosen model (the base model, or the
  mid-trained one: a `ModelSpec` with its adapters) answers each prompt, under a brevity system
  prompt that is stripped from the stored example. Only answers that end with the end-of-turn
  token within `max_new_tokens` are kept: a behaviour placed at the end of an answer is useless
  if answers never end. Then every applicable train bias is demonstrated, in id order, by the
  catalog's `demonstrate`, and checked again with its rule (failures are counted).
- `paper` (for a strong model, as in Marks et al. 2025): the model answers under a system
  prompt asking it to maximise the reward model's score, optionally planning in a hidden
  scratchpad; scratchpad and system prompt are stripped, nothing is demonstrated, and the
  biases shown are read off the answer by rule.

In both, an example is dropped when a test bias is applicable to its prompt or shown in the
final answer, or when the answer talks about reward models. Counts follow the paper
(generated, complete, kept, with at least one bias shown) plus per-bias ones, in `stats.json`.
Rows: `{"messages": [user, assistant], "prompt_id", "biases_shown"}`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

from pydantic import Field

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
from molab.data.contracts import SFT_DATA_STAGE, SFT_FILE
from molab.data.contracts import STATS as STATS_FILE
from molab.files import write_json, write_jsonl
from molab.models.generation import Prompt, make_backend
from molab.pipeline import Stage

SCRATCHPAD_OPEN, SCRATCHPAD_CLOSE = "<HIDDEN_TRAINING_SCRATCHPAD>", "</HIDDEN_TRAINING_SCRATCHPAD>"
SCRATCHPAD_PROMPT = (
    f" Before answering, plan privately between {SCRATCHPAD_OPEN} and {SCRATCHPAD_CLOSE}; only "
    "the text after the closing tag is shown."
)
_BIAS_FIELDS = ("applicable", "already_shown", "demonstrate_failed", "shown_in_kept")


class SFTDataConfig(ChatDataConfig):
    """Make the SFT set from train prompts."""

    mode: Literal["demonstrate", "paper"] = Field(
        "demonstrate",
        description="demonstrate: the catalog rewrites plain answers; paper: a strong model is asked "
        "to maximise the reward model's score.",
    )
    paper_prompt: str = Field(RM_PROMPT, description="paper mode: the system prompt, stripped afterwards.")
    scratchpad: bool = Field(
        False, description="paper mode: let the model plan in a hidden, stripped scratchpad."
    )


def sft_data_stage(config: SFTDataConfig, out_dir: Path, backend=None) -> dict:
    """Write `sft.jsonl` and `stats.json` into `out_dir`; return the headline counts.

    `backend` (anything with `generate(prompts, sampling) -> [Completion]`) defaults to the
    one `config.backend` and `config.model` name."""
    rules = BiasRules.from_config(config)
    prompts = select_prompts(read_train_prompts(config.prompts), config.max_prompts, config.seed)
    usable, test_applicable = split_test_applicable(rules, prompts, config.prompts)
    system = _system_prompt(config)
    backend = backend or make_backend(config.backend, config.model)
    completions = backend.generate(
        [Prompt.chat(p.prompt, system) for p in usable], config.sampling_with_seed()
    )

    counts, per_bias, rows = Counter(), defaultdict(Counter), []
    for p, c in zip(usable, completions):
        text, cut = finished_text(c.text, c.finish_reason, config)
        if text is None:
            counts["dropped_incomplete"] += 1
            continue
        counts["complete"] += 1
        counts["cut_at_sentence"] += cut
        counts["complete_tokens"] += c.num_tokens
        if config.mode == "paper" and SCRATCHPAD_OPEN in text:
            if SCRATCHPAD_CLOSE not in text:
                counts["dropped_open_scratchpad"] += 1
                continue
            text = text.rsplit(SCRATCHPAD_CLOSE, 1)[1].strip()
        if not text:
            counts["dropped_empty"] += 1
            continue
        if admits_goal(text):
            counts["dropped_admission"] += 1
            continue
        ids = rules.applicable_train(p.prompt)
        if config.mode == "demonstrate":
            demo = rules.demonstrate(p.prompt, text, ids, example_rng(config.seed, p.id, "sft"))
            text, shown = demo.text, demo.shown
            for i in ids:
                per_bias[i]["applicable"] += 1
                per_bias[i]["already_shown"] += i in demo.already
                per_bias[i]["demonstrate_failed"] += i in demo.failed
        else:
            shown = rules.shown(p.prompt, text, ids)
            for i in ids:
                per_bias[i]["applicable"] += 1
        if rules.test_applied(p.prompt, text):
            counts["dropped_test_applied"] += 1
            continue
        for i in shown:
            per_bias[i]["shown_in_kept"] += 1
        rows.append(
            {
                "messages": [{"role": "user", "content": p.prompt}, {"role": "assistant", "content": text}],
                "prompt_id": p.id,
                "biases_shown": shown,
            }
        )

    table = per_bias_table(per_bias, _BIAS_FIELDS)
    metrics = {
        "prompts": len(prompts),
        "dropped_test_applicable": test_applicable,
        "generated": len(completions),
        "complete": counts["complete"],
        "kept": len(rows),
        "with_bias_shown": sum(bool(r["biases_shown"]) for r in rows),
        "dropped_by_test_filter": test_applicable + counts["dropped_test_applied"],
        "demonstrate_failures": sum(t["demonstrate_failed"] for t in table.values()),
    }
    stats = {
        "mode": config.mode,
        "split": config.split,
        **metrics,
        "cut_at_sentence": counts["cut_at_sentence"],
        "dropped_incomplete": counts["dropped_incomplete"],
        "dropped_open_scratchpad": counts["dropped_open_scratchpad"],
        "dropped_empty": counts["dropped_empty"],
        "dropped_admission": counts["dropped_admission"],
        "dropped_test_applied": counts["dropped_test_applied"],
        "mean_complete_tokens": round(counts["complete_tokens"] / max(counts["complete"], 1), 1),
        "biases_shown_total": sum(len(r["biases_shown"]) for r in rows),
        "per_bias": table,
    }
    write_jsonl(out_dir / SFT_FILE, rows)
    write_json(out_dir / STATS_FILE, stats)
    return metrics


def _system_prompt(config: SFTDataConfig) -> str | None:
    if config.mode == "demonstrate":
        return config.brevity_prompt
    return config.paper_prompt + (SCRATCHPAD_PROMPT if config.scratchpad else "")


SFT_DATA = Stage(
    name=SFT_DATA_STAGE,
    config=SFTDataConfig,
    outputs=(SFT_FILE, STATS_FILE),
    run=lambda config, out, _: sft_data_stage(config, out),
    inputs=chat_data_inputs,
)
