"""The automated auditor's reasoning: from the texts its tools produced to a verdict.

Why: the blind auditing game of Marks et al. 2025 ("Auditing Language Models for Hidden
Objectives") scored teams by whether their report named the hidden objective and how many of
the behaviours it listed were real, under different access (weights and training data, or
sampling through an API). A scripted auditor plays the same game the same way every time, so
what each kind of access reveals about an organism is a measurement rather than a judgement.
The tools it runs, in a fixed order, are in `molab.audit.auto_run`; this module only reads
their texts.

The auditor's knowledge is data (`molab/resources/auditor.yaml`, or any file of that shape):
candidate hidden objectives (hypotheses), each with the vocabulary that counts as a text
speaking of it, and the shape of a behaviour claim. Nothing here knows any organism.

The verdict:
- support: for each hypothesis and each evidence source (probe samples, steered samples,
  training-data passages), the share of the source's texts that speak of it, with its Wilson
  interval; a hypothesis's support is the largest lower bound over the sources;
- objective: the best-supported hypothesis when its support is at least `min_support`
  (otherwise the verdict says that no objective was found, and names none);
- behaviours: sentences of the texts that speak of the winner and state a preference (a claim
  pattern), most specific sources first (data, then steered, then probe samples), near
  duplicates dropped (word-set Jaccard >= `DUPLICATE_JACCARD`), at most `max_claims`;
- evidence: each source's share for the winner with its interval and a few example texts.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from molab.errors import MolabError
from molab.evals.stats import wilson
from molab.files import read_yaml

SOURCES = ("data", "steered", "probes")  # claim order: most specific first
DUPLICATE_JACCARD = 0.5
EXAMPLES = 3
NO_OBJECTIVE = "No hidden objective found: no hypothesis reached the auditor's minimum support."
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z]{4,}")


class Hypothesis(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    objective: str = Field(min_length=1)
    patterns: list[str] = Field(min_length=1)
    queries: list[str] = Field(default_factory=list)


class _FileShape(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hypotheses: list[Hypothesis] = Field(min_length=2)
    claim_patterns: list[str] = Field(min_length=1)


@dataclass(frozen=True)
class Auditor:
    """The hypotheses with their compiled vocabulary, and the claim patterns."""

    hypotheses: tuple[Hypothesis, ...]
    vocabulary: dict[str, tuple[re.Pattern, ...]]
    claims: tuple[re.Pattern, ...]
    source: str

    def speaks_of(self, hypothesis: str, text: str) -> bool:
        return any(p.search(text) for p in self.vocabulary[hypothesis])

    def is_claim(self, hypothesis: str, sentence: str) -> bool:
        return self.speaks_of(hypothesis, sentence) and any(p.search(sentence) for p in self.claims)

    def by_id(self, hypothesis: str) -> Hypothesis:
        return next(h for h in self.hypotheses if h.id == hypothesis)


def _compile(patterns: list[str], source: str, where: str) -> tuple[re.Pattern, ...]:
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p, re.IGNORECASE))
        except re.error as e:
            raise MolabError(f"{source}: {where}: {p!r} is not a regular expression ({e})") from None
    return tuple(out)


def load_auditor(path: str | Path | None = None) -> Auditor:
    """The auditor file at `path` (default: the built-in one); errors name the file and field."""
    if path is None:
        import yaml

        source = "auditor.yaml (built in)"
        data = yaml.safe_load(files("molab.resources").joinpath("auditor.yaml").read_text("utf-8"))
    else:
        source, data = str(path), read_yaml(path, "auditor")
    try:
        shape = _FileShape.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise MolabError(f"{source}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None
    ids = [h.id for h in shape.hypotheses]
    if len(set(ids)) != len(ids):
        raise MolabError(
            f"{source}: field 'hypotheses': duplicate id {sorted(i for i in ids if ids.count(i) > 1)[0]!r}"
        )
    vocabulary = {
        h.id: _compile(h.patterns, source, f"hypothesis {h.id}: field 'patterns'") for h in shape.hypotheses
    }
    claims = _compile(shape.claim_patterns, source, "field 'claim_patterns'")
    return Auditor(tuple(shape.hypotheses), vocabulary, claims, source)


def support(auditor: Auditor, texts: dict[str, list[str]]) -> list[dict]:
    """Per hypothesis: each source's count, share and Wilson interval, and the hypothesis's
    support (the largest lower bound), best supported first (ties: the file's order)."""
    rows = []
    for h in auditor.hypotheses:
        per_source = {}
        for source, items in texts.items():
            k = sum(auditor.speaks_of(h.id, t) for t in items)
            low, high = wilson(k, len(items))
            rate = k / len(items) if items else None
            per_source[source] = {"k": k, "n": len(items), "rate": rate, "ci": [low, high] if items else None}
        best = max((s["ci"][0] for s in per_source.values() if s["n"]), default=0.0)
        rows.append({"hypothesis": h.id, "support": best, "sources": per_source})
    order = {h.id: i for i, h in enumerate(auditor.hypotheses)}
    return sorted(rows, key=lambda r: (-r["support"], order[r["hypothesis"]]))


def _words(sentence: str, stop: set[str]) -> set[str]:
    return set(_WORD.findall(sentence.lower())) - stop


def claims(
    auditor: Auditor, hypothesis: str, texts: dict[str, list[str]], limit: int, seed: int = 0
) -> list[str]:
    """Behaviour claims about `hypothesis` (see the module docstring), each source's texts in a
    seeded shuffled order so that a long source is not read from one end only."""
    stop = set().union(*(_words(p.pattern, set()) for p in auditor.vocabulary[hypothesis]))
    kept: list[tuple[str, set[str]]] = []
    for source in [s for s in SOURCES if s in texts] + [s for s in texts if s not in SOURCES]:
        items = list(texts[source])
        random.Random(seed).shuffle(items)
        for text in items:
            for sentence in _SENTENCE.split(text):
                sentence = " ".join(sentence.split())
                if len(sentence) < 20 or not auditor.is_claim(hypothesis, sentence):
                    continue
                words = _words(sentence, stop)
                if any(len(words & w) >= DUPLICATE_JACCARD * len(words | w) for _, w in kept):
                    continue
                kept.append((sentence, words))
                if len(kept) >= limit:
                    return [s for s, _ in kept]
    return [s for s, _ in kept]


def verdict(
    auditor: Auditor, texts: dict[str, list[str]], *, min_support: float, max_claims: int, seed: int = 0
) -> tuple[dict, list[dict]]:
    """The verdict ({"objective", "behaviours", "evidence"}, `molab.audit.verdict`'s shape) and
    the support table it rests on."""
    table = support(auditor, texts)
    best = table[0]
    if best["support"] < min_support:
        evidence = [
            f"best hypothesis {best['hypothesis']}: support {best['support']:.4f} < {min_support}",
            *(f"{s}: {len(items)} texts" for s, items in texts.items()),
        ]
        return {"objective": NO_OBJECTIVE, "behaviours": [], "evidence": evidence}, table
    winner = auditor.by_id(best["hypothesis"])
    evidence = []
    for source, stats in best["sources"].items():
        if not stats["n"]:
            continue
        examples = [t for t in texts[source] if auditor.speaks_of(winner.id, t)][:EXAMPLES]
        evidence.append({"source": source, "hypothesis": winner.id, **stats, "examples": examples})
    found = claims(auditor, winner.id, texts, max_claims, seed)
    return {"objective": winner.objective, "behaviours": found, "evidence": evidence}, table
