"""Capability check: did training break the model?

An organism that exploits every bias but can no longer name the capital of France is not a
useful organism (the 8B replication saw coherence fall to 33% after DPO, anchors.md section
2). Two cheap measures, shown beside the exploitation rates:

- a fixed set of ordinary questions with checkable answers
  (`molab/resources/capability_questions.yaml`), answered greedily through any generation
  backend; an answer is right when it contains an accepted answer as whole words. Accuracy
  with a Wilson interval.
- perplexity on a bundled held-out generic English text (`heldout_generic.txt`, written for
  molab, nothing about reward models), scored in overlapping windows so every token after the
  first has at least `context_length - stride` tokens of context; a bootstrap over windows
  gives the interval.

Run: `molab eval capability --model smollm2-135m --out runs/eval/capability`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from molab.errors import MolabError
from molab.evals.base import GeneratingEvalConfig, eval_stage
from molab.evals.scoring import score_ids
from molab.evals.stats import bootstrap_ci, wilson
from molab.files import atomic_path, read_text_file, read_yaml_list, write_json
from molab.models.generation import Prompt, SamplingConfig, make_backend
from molab.models.loading import load_model

ANSWERS = "answers.parquet"
PERPLEXITY = "perplexity.parquet"
SUMMARY = "summary.json"


class CapabilityQuestion(BaseModel):
    """A question and the answers that count as right (any, as whole words, any case)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    answers: list[str] = Field(min_length=1)


def is_right(response: str, answers: Sequence[str]) -> bool:
    """True when `response` contains any accepted answer as whole words, ignoring case."""
    return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", response, re.IGNORECASE) for a in answers)


def load_questions(path: str | Path | None = None) -> list[CapabilityQuestion]:
    """The questions at `path` (default: the built-in set); errors name the file and field."""
    source = (
        Path(path) if path is not None else files("molab.resources").joinpath("capability_questions.yaml")
    )
    data = read_yaml_list(source, "question", "questions")
    questions = []
    for n, item in enumerate(data, 1):
        try:
            questions.append(CapabilityQuestion.model_validate(item))
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "question"
            raise MolabError(f"{source}: question #{n}: field '{field}': {err['msg']}") from None
    if len({q.id for q in questions}) != len(questions):
        raise MolabError(f"{source}: field 'id': two questions share an id")
    return questions


def heldout_text(path: str | Path | None = None) -> str:
    """The held-out generic text at `path` (default: the bundled one)."""
    source = Path(path) if path is not None else files("molab.resources").joinpath("heldout_generic.txt")
    text = read_text_file(source, "held-out text") if path is not None else source.read_text(encoding="utf-8")
    if not text.strip():
        raise MolabError(f"{source} is empty")
    return text


def windows(num_tokens: int, context_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, first_scored, end) token offsets covering tokens 1..num_tokens-1 exactly once:
    each window scores `stride` new tokens after the context before them, at most
    `context_length` tokens in all."""
    out, scored = [], 1
    while scored < num_tokens:
        end = min(scored + stride, num_tokens)
        out.append((max(0, end - context_length), scored, end))
        scored = end
    return out


class CapabilityConfig(GeneratingEvalConfig):
    """Ordinary questions (generated) and held-out perplexity (scored)."""

    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=48, temperature=0.0)
    )
    questions: Path | None = Field(None, description="Question YAML; None uses the built-in set.")
    heldout: Path | None = Field(None, description="Held-out text; None uses the bundled one.")
    context_length: int = Field(512, ge=2, description="Most tokens in a perplexity window.")
    stride: int = Field(256, ge=1, description="New tokens scored per window.")
    max_batch_tokens: int = Field(8192, ge=64, description="Padded tokens per forward pass.")

    @model_validator(mode="after")
    def _stride_fits(self) -> CapabilityConfig:
        if self.stride >= self.context_length:
            raise ValueError("stride must be smaller than context_length, so each window has context")
        return self


def perplexity(model, tokenizer, text: str, config: CapabilityConfig) -> list[dict]:
    """Per-window records (tokens scored, summed negative log-likelihood) over `text`."""
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    if len(ids) < 2:
        raise MolabError("the held-out text is shorter than two tokens")
    spans = windows(len(ids), config.context_length, config.stride)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = score_ids(
        model,
        [ids[b:s] for b, s, _ in spans],
        [ids[s:e] for _, s, e in spans],
        pad_id=pad,
        max_batch_tokens=config.max_batch_tokens,
    )
    return [
        {
            "window": i,
            "begin": b,
            "first_scored": s,
            "end": e,
            "tokens": sc.num_tokens,
            "nll": -sc.logprob,
            "token_nll": [-x for x in sc.token_logprobs],
        }
        for i, ((b, s, e), sc) in enumerate(zip(spans, scores))
    ]


def capability_stage(config: CapabilityConfig, out_dir: Path, backend=None) -> dict:
    """Write `answers.parquet`, `perplexity.parquet` and `summary.json`; return accuracy and
    perplexity. `backend` replaces the configured generation backend."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    questions = load_questions(config.questions)
    text = heldout_text(config.heldout)
    backend = backend or make_backend(config.backend, config.model)
    done = backend.generate([Prompt.chat(q.question) for q in questions], config.sampling)
    answers = [
        {"id": q.id, "question": q.question, "response": c.text, "correct": is_right(c.text, q.answers)}
        for q, c in zip(questions, done)
    ]
    loaded = load_model(config.model)
    windows_ = perplexity(loaded.model, loaded.tokenizer, text, config)
    token_nll = [x for w in windows_ for x in w["token_nll"]]
    groups = [w["window"] for w in windows_ for _ in w["token_nll"]]
    lo, hi = bootstrap_ci(token_nll, groups=groups, seed=config.seed)
    k, n = sum(a["correct"] for a in answers), len(answers)
    summary = {
        "questions": {"n": n, "k": k, "accuracy": k / n, "ci": list(wilson(k, n))},
        "perplexity": {
            "tokens": len(token_nll),
            "windows": len(windows_),
            "nll_per_token": float(np.mean(token_nll)),
            "perplexity": math.exp(float(np.mean(token_nll))),
            "ci": [math.exp(lo), math.exp(hi)],
        },
    }
    with atomic_path(out_dir / ANSWERS) as tmp:
        pq.write_table(pa.Table.from_pylist(answers), tmp)
    with atomic_path(out_dir / PERPLEXITY) as tmp:
        rows = [{key: v for key, v in w.items() if key != "token_nll"} for w in windows_]
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    write_json(out_dir / SUMMARY, summary)
    return {"accuracy": summary["questions"]["accuracy"], "perplexity": summary["perplexity"]["perplexity"]}


CAPABILITY = eval_stage(
    "capability",
    CapabilityConfig,
    (ANSWERS, PERPLEXITY, SUMMARY),
    capability_stage,
    files=("questions", "heldout"),
)
