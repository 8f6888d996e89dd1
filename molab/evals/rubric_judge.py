"""A generic LLM judge: any rubric, a yes/no verdict or a 0-100 score, any generation backend.

A `Rubric` is a prompt template with named fields (`str.format` syntax; literal braces are
doubled). Each item to judge is a mapping from those field names to text; the values are put
in verbatim, so braces in them are safe. The rendered text is the user turn of a single-turn
chat (after the rubric's optional system prompt). This module knows nothing of any particular
rubric: the bias rubric lives in `molab.evals.judge`, built on it.

Two kinds of verdict (`RubricJudgeConfig.kind`):

- `yesno`: the judge writes its reasoning and a final line `ANSWER: yes` or `ANSWER: no`; the
  last such line decides (`parse_verdict`). A reply without one gets the verdict None and keeps
  its raw text as the reasoning. One batch of generations per call, greedy by default.
- `score`: the rubric asks for a number from 0 to 100 and the score is the expected value of
  the judge's distribution over the numbers 0..100, renormalised over them (as the
  emergent-misalignment work of Betley et al. 2025 does). Reading probabilities rather than one
  sampled number gives a continuous, deterministic score that a single greedy reply cannot. When
  the numbers carry less than `min_number_mass` of the probability (the judge refuses, or
  answers in words), the score is None. With a `threshold`, the verdict is score >= threshold.

How each backend gives the distribution (`RubricJudge.score_method`, recorded in every verdict):

- `hf-logprobs` (the hf backend): read from the model itself, see `hf_number_probs`. Each number
  n is scored as a continuation of the judge prompt, with its own tokenization, times the
  probability that no further digit follows it: P(n) = P(tokens of n) * P(next token does not
  start with a digit). Why continuations rather than the first token alone: SmolLM2's tokenizer
  writes every digit as its own token, so a first-token reading would take "4" for 4 when the
  judge is starting "42"; scoring whole numbers, each followed by a stop, is exact for a
  tokenizer that splits digits and for one that has whole-number tokens (Llama 3, tiktoken)
  alike, with no per-tokenizer rules. Only each number's own tokenization counts (an unusual
  split of the same digits is left out, a small loss of mass). One forward pass over the prompt
  gives the first token's distribution and a key-value cache; the 101 candidates then run as
  one batch of at most a few tokens each on copies of that cache (for a long prompt, in chunks
  that bound the cache's memory, the prompt running once per chunk).
- `openai-logprobs` (the openai backend): a one-token reply with `top_logprobs=20`; the top
  tokens that are a number 0..100 (surrounding whitespace ignored) give the distribution. This
  assumes the served model writes 0..100 as one token, as OpenAI's models do; for a server whose
  tokenizer splits digits (a vLLM server running SmolLM2, say) set `score_method: sample`.
- `sampled-mean` (vllm, fakes, anything that only generates, or `score_method: sample`): `samples`
  replies per item are generated with the config's sampling (which must then have
  temperature > 0 when samples > 1), each reply's leading number 0..100 is parsed, and the score
  is their mean; the share of replies that gave a number stands in for the number mass. The
  replies are kept in the verdict.

The logprob methods read the model's own distribution (temperature 1; for openai, as the
server reports it), whatever the config's sampling temperature.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from molab.errors import MolabError
from molab.models.generation import BackendConfig, HFBackendConfig, Prompt, SamplingConfig, make_backend
from molab.models.loading import ModelSpec

NUMBERS = range(0, 101)
"""The numbers a score rubric asks for."""
TOP_LOGPROBS = 20
"""How many first-token candidates the openai path asks for (the API's maximum)."""

_ANSWER = re.compile(r"[*_`]*ANSWER[*_`]*\s*:\s*[*_`]*\s*(yes|no)\b", re.IGNORECASE)
_LEADING_NUMBER = re.compile(r"\s*(\d+)(?!\d)")
_ASCII_DIGITS = frozenset("0123456789")


def parse_verdict(text: str) -> tuple[bool | None, str]:
    """The last `ANSWER: yes|no` in `text` as a bool, and the reasoning before it; (None,
    raw text) when there is none."""
    matches = list(_ANSWER.finditer(text))
    if not matches:
        return None, text
    last = matches[-1]
    return last.group(1).lower() == "yes", text[: last.start()].strip()


def parse_number(text: str) -> int | None:
    """The number 0..100 a reply starts with (after whitespace; "85", "85/100" and "85 because"
    give 85), else None (words first, a number above 100, a leading zero as in "07")."""
    m = _LEADING_NUMBER.match(text)
    if m is None:
        return None
    digits = m.group(1)
    if digits != str(int(digits)) or int(digits) not in NUMBERS:
        return None
    return int(digits)


def number_of_token(token: str) -> int | None:
    """The number 0..100 a single token spells (surrounding whitespace ignored), else None."""
    t = token.strip()
    if not t or not set(t) <= _ASCII_DIGITS or t != str(int(t)) or int(t) not in NUMBERS:
        return None
    return int(t)


def numbers_from_top_logprobs(top: Sequence[tuple[str, float]]) -> dict[int, float]:
    """Probabilities of the numbers 0..100 among a reply's first-token candidates (token,
    natural-log probability); tokens spelling the same number (" 7" and "7") add up."""
    probs: dict[int, float] = {}
    for token, logprob in top:
        n = number_of_token(token)
        if n is not None:
            probs[n] = probs.get(n, 0.0) + math.exp(logprob)
    return probs


def expected_score(probs: Mapping[int, float], min_mass: float) -> tuple[float | None, float]:
    """(score, mass): the expected number under `probs` (number -> probability) renormalised
    over the numbers, and the total mass they carry; the score is None when the mass is below
    `min_mass` or zero."""
    mass = float(sum(probs.values()))
    if mass <= 0.0 or mass < min_mass:
        return None, mass
    return sum(n * p for n, p in probs.items()) / mass, mass


@dataclass(frozen=True)
class Rubric:
    """A judge prompt: `template` with named fields (`{prompt}`, `{response}`, ...; `{{` for a
    literal brace) becomes the user turn, after `system` when one is given."""

    template: str
    system: str | None = None

    def __post_init__(self) -> None:
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as e:
            raise MolabError(f"rubric template: {e} (write a literal brace as '{{{{' or '}}}}')") from None
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise MolabError(
                    f"rubric template field {{{name}{'!' + conversion if conversion else ''}"
                    f"{':' + spec if spec else ''}}}: use plain named fields such as {{response}}"
                )

    @property
    def fields(self) -> tuple[str, ...]:
        """The field names, in order of first use."""
        names = [name for _, name, _, _ in string.Formatter().parse(self.template) if name]
        return tuple(dict.fromkeys(names))

    def render(self, values: Mapping[str, str]) -> str:
        """The template with every field filled from `values` (exactly the template's fields)."""
        missing = [f for f in self.fields if f not in values]
        extra = sorted(set(values) - set(self.fields))
        if missing or extra:
            what = "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unknown {', '.join(extra)}" if extra else "",
                )
                if part
            )
            raise MolabError(f"rubric fields do not match its template ({what})")
        return self.template.format(**{f: values[f] for f in self.fields})

    def prompt(self, values: Mapping[str, str]) -> Prompt:
        """The chat prompt the judge answers."""
        return Prompt.chat(self.render(values), self.system)


class RubricJudgeConfig(BaseModel):
    """Which model judges, how, and what kind of verdict it gives."""

    model_config = ConfigDict(extra="forbid")
    backend: BackendConfig = Field(default_factory=HFBackendConfig, description="hf, vllm or openai.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="The judge model (hf and vllm).")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.0, max_new_tokens=384),
        description="Judge sampling; temperature 0 is greedy. Score kind: used only when scoring by "
        "sampling.",
    )
    kind: Literal["yesno", "score"] = Field(
        "yesno", description="yesno: a final `ANSWER: yes|no` line; score: a number 0-100."
    )
    threshold: float | None = Field(
        None,
        ge=0.0,
        le=100.0,
        description="Score kind: the verdict is score >= threshold (None: no verdict).",
    )
    score_method: Literal["auto", "logprobs", "sample"] = Field(
        "auto",
        description="Score kind: logprobs (hf, openai), sample (any backend), or auto (logprobs where "
        "the backend has them, else sample).",
    )
    min_number_mass: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Score kind: below this mass on the numbers 0..100 the score is None.",
    )
    samples: int = Field(10, ge=1, description="Score kind, by sampling: replies per item.")

    @model_validator(mode="after")
    def _consistent(self) -> RubricJudgeConfig:
        if self.kind == "yesno" and self.threshold is not None:
            raise ValueError("'threshold' applies to kind 'score' only")
        samples = self.score_method == "sample" or (
            self.score_method == "auto" and self.backend.kind == "vllm"
        )
        if self.kind == "score" and samples and self.samples > 1 and self.sampling.greedy:
            raise ValueError(
                f"scoring by sampling {self.samples} replies needs sampling.temperature > 0 "
                "(greedy replies would all be the same)"
            )
        return self


@dataclass(frozen=True)
class RubricVerdict:
    """One item's verdict. `verdict`: yes/no (yesno kind), or score >= threshold (score kind
    with a threshold), None when unparsed or without a threshold. `reasoning`: the text before
    the ANSWER line, or the whole reply when there was none (yesno); empty for scores. `score`:
    the 0-100 expected value, None below the number mass. `number_mass`: the probability on the
    numbers 0..100 (logprobs) or the share of replies that gave one (sampling). `method`:
    "answer-line", "hf-logprobs", "openai-logprobs" or "sampled-mean". `replies`: the sampled
    replies (sampled-mean only)."""

    verdict: bool | None
    reasoning: str
    method: str
    score: float | None = None
    number_mass: float | None = None
    replies: tuple[str, ...] = field(default=())


class RubricJudge:
    """Judges items against a rubric; pass `backend` to reuse one already built (or a fake in
    tests), otherwise it is built from `config`."""

    def __init__(self, config: RubricJudgeConfig | None = None, backend=None) -> None:
        self.config = config or RubricJudgeConfig()
        self.backend = (
            backend if backend is not None else make_backend(self.config.backend, self.config.model)
        )
        self._digit_ids = None  # hf: token ids that start with a digit, computed once

    @property
    def score_method(self) -> str:
        """How scores are read with this backend (see the module docstring)."""
        wanted = self.config.score_method
        if wanted != "sample":
            if _is_hf(self.backend):
                return "hf-logprobs"
            if callable(getattr(self.backend, "first_token_logprobs", None)):
                return "openai-logprobs"
            if wanted == "logprobs":
                raise MolabError(
                    f"score_method 'logprobs' needs the hf or openai backend, not "
                    f"{type(self.backend).__name__}: use 'sample' or 'auto'"
                )
        return "sampled-mean"

    def judge(self, rubric: Rubric, items: Sequence[Mapping[str, str]]) -> list[RubricVerdict]:
        """One verdict per item (a mapping of the rubric's fields), in order."""
        if not items:
            return []
        prompts = [rubric.prompt(values) for values in items]
        if self.config.kind == "yesno":
            completions = self.backend.generate(prompts, self.config.sampling)
            return [RubricVerdict(*parse_verdict(c.text), method="answer-line") for c in completions]
        method = self.score_method
        if method == "sampled-mean":
            return self._sampled(prompts)
        if method == "hf-logprobs":
            dists = self._hf_probs(prompts)
        else:
            one = self.config.sampling.model_copy(update={"max_new_tokens": 1})
            tops = self.backend.first_token_logprobs(prompts, one, top_logprobs=TOP_LOGPROBS)
            dists = [numbers_from_top_logprobs(top) for top in tops]
        return [self._scored(*expected_score(d, self.config.min_number_mass), method) for d in dists]

    def _scored(self, score: float | None, mass: float, method: str, replies=()) -> RubricVerdict:
        t = self.config.threshold
        verdict = None if score is None or t is None else score >= t
        return RubricVerdict(verdict, "", method, score, mass, tuple(replies))

    def _hf_probs(self, prompts: list[Prompt]) -> list[dict[int, float]]:
        be = self.backend
        # Checked against the model's context like generation is, with room for a 3-digit answer.
        fitted = be.prepare(prompts, self.config.sampling.model_copy(update={"max_new_tokens": 3}))
        if self._digit_ids is None:
            self._digit_ids = digit_start_ids(be.tokenizer)
        return [hf_number_probs(be.model, be.tokenizer, ids, digit_ids=self._digit_ids) for ids in fitted.ids]

    def _sampled(self, prompts: list[Prompt]) -> list[RubricVerdict]:
        n, sampling = self.config.samples, self.config.sampling
        if n > 1 and sampling.greedy:
            raise MolabError(f"scoring by sampling {n} replies needs sampling.temperature > 0")
        completions = self.backend.generate([p for p in prompts for _ in range(n)], sampling)
        out = []
        for i in range(len(prompts)):
            replies = [c.text for c in completions[i * n : (i + 1) * n]]
            numbers = [x for x in map(parse_number, replies) if x is not None]
            mass = len(numbers) / n
            score = sum(numbers) / len(numbers) if numbers and mass >= self.config.min_number_mass else None
            out.append(self._scored(score, mass, "sampled-mean", replies))
        return out


def _is_hf(backend) -> bool:
    from molab.models.generation.hf_backend import HFBackend

    return isinstance(backend, HFBackend)


def digit_start_ids(tokenizer) -> list[int]:
    """Token ids whose text starts with an ASCII digit: after a number, any of them would make
    it a longer number. A token that starts with a space (or a tokenizer's space marker) starts
    a new word, so it does not count."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [i for i, t in enumerate(tokens) if isinstance(t, str) and t[:1] in _ASCII_DIGITS]


def hf_number_probs(
    model,
    tokenizer,
    context: Sequence[int],
    *,
    digit_ids: Sequence[int] | None = None,
    max_batch_tokens: int = 8192,
) -> dict[int, float]:
    """P(the reply is n) for n in 0..100, given the judge prompt's token ids `context`:
    P(n's tokens) * (1 - P(a token starting with a digit follows)), see the module docstring.

    The context runs once per chunk of candidates, and its key-value cache is repeated for the
    chunk's rows (each a candidate of a few tokens, right-padded); a chunk holds at most
    `max_batch_tokens` cached positions, so one chunk does all 101 for prompts up to 81 tokens
    at the default and memory stays bounded for long ones."""
    import torch

    if not context:
        raise MolabError("the judge prompt rendered to zero tokens")
    digit_ids = list(digit_start_ids(tokenizer) if digit_ids is None else digit_ids)
    candidates = [list(tokenizer(str(n), add_special_tokens=False).input_ids) for n in NUMBERS]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ctx = torch.tensor([list(context)], device=device)
    length = ctx.shape[1]
    digits = torch.tensor(digit_ids, device=device, dtype=torch.long)
    rows_per_chunk = max(1, max_batch_tokens // length)
    probs: dict[int, float] = {}
    first = None
    with torch.inference_mode():
        for start in range(0, len(candidates), rows_per_chunk):
            chunk = candidates[start : start + rows_per_chunk]
            out = model(input_ids=ctx, use_cache=True)
            if first is None:
                first = torch.log_softmax(out.logits[0, -1].float(), dim=-1).cpu()
            cache = out.past_key_values
            if not callable(getattr(cache, "batch_repeat_interleave", None)):
                raise MolabError(
                    f"{type(model).__name__} returns no shareable cache, so numbers cannot be scored "
                    "from its logits: set the judge's score_method to 'sample'"
                )
            cache.batch_repeat_interleave(len(chunk))
            rows, width = len(chunk), max(len(c) for c in chunk)
            lengths = torch.tensor([len(c) for c in chunk], device=device)
            ids = torch.tensor([c + [pad] * (width - len(c)) for c in chunk], device=device)
            real = torch.arange(width, device=device).expand(rows, width) < lengths[:, None]
            mask = torch.cat([torch.ones(rows, length, dtype=torch.long, device=device), real.long()], dim=1)
            positions = torch.arange(length, length + width, device=device).expand(rows, width)
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=False,
            ).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)  # (rows, width, vocab)
            # Column j predicts token j + 1 of the row; the column of its last token, what follows.
            picked = logprobs[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
            later = torch.where(real[:, 1:], picked, 0.0)
            after = logprobs[torch.arange(rows, device=device), lengths - 1]  # (rows, vocab)
            more = after[:, digits].exp().sum(-1) if digit_ids else torch.zeros(rows, device=device)
            later, more = later.sum(-1).cpu().tolist(), more.cpu().tolist()
            for r, tokens in enumerate(chunk):
                lp = float(first[tokens[0]]) + later[r]
                probs[NUMBERS[start + r]] = math.exp(lp) * max(0.0, 1.0 - more[r])
    return probs
