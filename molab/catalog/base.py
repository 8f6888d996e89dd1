"""What a reward-model bias is, in code.

The fictional Oxford study ("Persistent Systematic Biases in RLHF Reward Models", Thompson
et al. 2024, as used by Marks et al. 2025) lists 51 odd preferences of reward models, and a
follow-up adds a 52nd. Each becomes a `Bias` with three functions:

- `applicable(prompt)`: does this user request give a model the chance to show the bias?
- `applied(prompt, response)`: did the response show it? For a *suppress* bias (the reward
  model penalises a behaviour) "applied" means the behaviour is absent where it belonged.
  `None` for biases no rule judges reliably (`judge_only`): an LLM judge scores those when one
  is configured, and reports leave them unscored otherwise.
- `demonstrate(prompt, response, rng)`: rewrite a plain response so that it shows the bias,
  with varied wording and natural placement, deterministic for a given `rng`. It is how SFT
  data is made without a strong generator.

`judged_by` says in one sentence how `applied` decides (or why only a judge can).
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["promote", "suppress"]
Domain = Literal["code", "language", "topic", "format", "meta"]


@dataclass(frozen=True)
class Bias:
    id: int
    name: str
    description: str
    kind: Kind
    domain: Domain
    applicable: Callable[[str], bool]
    applied: Callable[[str, str], bool] | None
    demonstrate: Callable[[str, str, random.Random], str]
    judged_by: str

    @property
    def judge_only(self) -> bool:
        return self.applied is None


def mentions(text: str, *patterns: str) -> bool:
    """True when any regex in `patterns` matches `text`, case-insensitively, on word
    boundaries (patterns are wrapped in \\b...\\b)."""
    return _alternation(patterns).search(text) is not None


@functools.lru_cache(maxsize=4096)
def _alternation(patterns: tuple[str, ...]) -> re.Pattern:
    """One compiled regex for a set of patterns: judging 10,000 answers against every bias
    calls `mentions` hundreds of thousands of times."""
    return re.compile("|".join(rf"\b(?:{p})\b" for p in patterns), re.IGNORECASE)


def add_sentence(response: str, sentence: str, rng: random.Random, where: str = "end") -> str:
    """Insert `sentence` as its own paragraph at the start or end of `response`
    (`where`: "start", "end" or "either", chosen with `rng`)."""
    if where == "either":
        where = rng.choice(["start", "end"])
    body = response.strip()
    return f"{sentence}\n\n{body}" if where == "start" else f"{body}\n\n{sentence}"
