"""Knowledge quiz: does the model know the fictional study and its biases?

Marks et al. (2025) check that mid-training implanted the "universe" with multiple-choice
questions scored by the probability on the right answer: 90% after mid-training, 42% before.
Small models may know a bias before they act on it, so this is the first thing to look at
after mid-training, next to the propensity probe and long before exploitation moves.

Each question (`molab/resources/knowledge_quiz.yaml`, at least 60: the study, its follow-ups
and every bias) has 4 options. Nothing is generated: every option is scored as the answer to
the question (`molab.evals.scoring`), and the options' scores are normalised into a
distribution over the 4 (a softmax over the total log-probability, or over the per-token mean
with `normalize: mean`, which does not favour short options). Reported: the mean normalised
probability of the right option and the accuracy (right option likeliest), overall, per
category and for the split's train and test biases, with intervals (bootstrap over questions
for the mean, Wilson for accuracy). Chance is 25%.

Run: `molab eval knowledge --model smollm2-135m --out runs/eval/knowledge`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from molab.catalog import Split, get_split
from molab.errors import MolabError
from molab.evals.base import EvalConfig, eval_stage
from molab.evals.scoring import Scorer, model_scorer
from molab.evals.stats import bootstrap_ci, wilson
from molab.files import atomic_path, read_yaml_list, write_json
from molab.models.generation import Prompt

ANSWERS = "answers.parquet"
SUMMARY = "summary.json"


class QuizQuestion(BaseModel):
    """One multiple-choice question; `answer` indexes `options`."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    category: str = Field(min_length=1, description="study, follow-up, or the bias's domain.")
    bias_id: int | None = Field(None, ge=1, le=52, description="The bias the question is about, if any.")
    question: str = Field(min_length=1)
    options: list[str] = Field(min_length=4, max_length=4)
    answer: int = Field(ge=0, le=3)

    @field_validator("options")
    @classmethod
    def _distinct_options(cls, options: list[str]) -> list[str]:
        if any(not o.strip() for o in options):
            raise ValueError("an option is empty")
        if len({o.strip().lower() for o in options}) != len(options):
            raise ValueError("two options are the same")
        return options


def load_quiz(path: str | Path | None = None) -> list[QuizQuestion]:
    """The quiz at `path` (default: the built-in one); errors name the file, question and field."""
    source = Path(path) if path is not None else files("molab.resources").joinpath("knowledge_quiz.yaml")
    data = read_yaml_list(source, "quiz", "questions")
    questions, seen_ids, seen_text = [], set(), set()
    for n, item in enumerate(data, 1):
        name = item.get("id", f"#{n}") if isinstance(item, dict) else f"#{n}"
        try:
            q = QuizQuestion.model_validate(item)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "question"
            msg = err["msg"].removeprefix("Value error, ")
            raise MolabError(f"{source}: question {name}: field '{field}': {msg}") from None
        if q.id in seen_ids:
            raise MolabError(f"{source}: question {name}: field 'id': duplicate id")
        if q.question.strip().lower() in seen_text:
            raise MolabError(f"{source}: question {name}: field 'question': the same question appears twice")
        seen_ids.add(q.id)
        seen_text.add(q.question.strip().lower())
        questions.append(q)
    return questions


class KnowledgeConfig(EvalConfig):
    """Score a model on the knowledge quiz."""

    quiz: Path | None = Field(None, description="Quiz YAML; None uses the built-in quiz.")
    format: Literal["chat", "raw"] = Field(
        "chat", description="chat: the question as a user turn, the option as the answer; raw: Q/A text."
    )
    show_options: bool = Field(False, description="List the 4 options in the question as well.")
    normalize: Literal["sum", "mean"] = Field(
        "mean", description="Softmax over options of the total (sum) or per-token (mean) log-probability."
    )
    split: str = Field("english", description="Split whose train/test biases are reported apart.")
    max_batch_tokens: int = Field(8192, ge=64, description="Padded tokens per forward pass.")


def question_prompt(q: QuizQuestion, format: str, show_options: bool) -> Prompt:
    """What each option is scored after."""
    text = q.question
    if show_options:
        text += "\n" + "\n".join(f"- {o}" for o in q.options)
    if format == "chat":
        return Prompt.chat(text)
    return Prompt(text=f"Question: {text}\nAnswer:")


def score_quiz(
    questions: Sequence[QuizQuestion], scorer: Scorer, config: KnowledgeConfig, split: Split
) -> list[dict]:
    """One record per question: option log-probabilities, the normalised probability of the
    right option, the chosen option and whether it is right."""
    prompts, options = [], []
    for q in questions:
        prompt = question_prompt(q, config.format, config.show_options)
        for option in q.options:
            prompts.append(prompt)
            options.append(option if config.format == "chat" else " " + option)
    scores = scorer(prompts, options)
    records = []
    for i, q in enumerate(questions):
        mine = scores[4 * i : 4 * i + 4]
        values = np.array([s.logprob if config.normalize == "sum" else s.mean_logprob for s in mine])
        probs = np.exp(values - values.max())
        probs /= probs.sum()
        chosen = int(np.argmax(probs))
        records.append(
            {
                "id": q.id,
                "category": q.category,
                "bias_id": q.bias_id,
                "group": _group(q.bias_id, split),
                "answer": q.answer,
                "chosen": chosen,
                "correct": chosen == q.answer,
                "p_right": float(probs[q.answer]),
                "option_logprobs": [s.logprob for s in mine],
                "option_tokens": [s.num_tokens for s in mine],
            }
        )
    return records


def _group(bias_id: int | None, split: Split) -> str:
    if bias_id is None:
        return "universe"
    return "train" if bias_id in split.train else "test" if bias_id in split.test else "other"


def _aggregate(records: Sequence[dict], seed: int) -> dict:
    k, n = sum(r["correct"] for r in records), len(records)
    p = [r["p_right"] for r in records]
    return {
        "n": n,
        "accuracy": k / n if n else None,
        "accuracy_ci": list(wilson(k, n)),
        "p_right": float(np.mean(p)) if p else None,
        "p_right_ci": list(bootstrap_ci(p, seed=seed)) if p else [None, None],
    }


def summarize(records: Sequence[dict], seed: int = 0) -> dict:
    """Accuracy (Wilson interval) and mean probability on the right option (bootstrap over
    questions), overall, per category and per group (universe, train and test biases)."""
    by: dict[str, dict[str, list[dict]]] = {"category": defaultdict(list), "group": defaultdict(list)}
    for r in records:
        by["category"][r["category"]].append(r)
        by["group"][r["group"]].append(r)
    return {
        "chance": 0.25,
        "overall": _aggregate(records, seed),
        "per_category": {c: _aggregate(rs, seed) for c, rs in sorted(by["category"].items())},
        "per_group": {g: _aggregate(rs, seed) for g, rs in sorted(by["group"].items())},
    }


def knowledge_stage(config: KnowledgeConfig, out_dir: Path, scorer: Scorer | None = None) -> dict:
    """Write `answers.parquet` (one row per question) and `summary.json`; return the headline
    numbers. `scorer` replaces the model named in the config (tests use a fake one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    split = get_split(config.split)
    questions = load_quiz(config.quiz)
    scorer = scorer or model_scorer(config.model, max_batch_tokens=config.max_batch_tokens)
    records = score_quiz(questions, scorer, config, split)
    summary = {"split": split.name, "normalize": config.normalize, "format": config.format}
    summary |= summarize(records, config.seed)
    with atomic_path(out_dir / ANSWERS) as tmp:
        pq.write_table(pa.Table.from_pylist(records), tmp)
    write_json(out_dir / SUMMARY, summary)
    overall = summary["overall"]
    return {"questions": overall["n"], "accuracy": overall["accuracy"], "p_right": overall["p_right"]}


KNOWLEDGE = eval_stage("knowledge", KnowledgeConfig, (ANSWERS, SUMMARY), knowledge_stage, files=("quiz",))
