"""What the SFT and DPO sets share: reading train prompts, the bias rules of a split, filters.

Both sets are made from the prompts stage's `train_prompts.jsonl` (one row per prompt: `id`,
`prompt`, `bias_id`, `template`, `language`, `split`) and judged with the catalog's rules
under one split:

- A prompt where a *test* bias is applicable is dropped before anything is generated, and an
  answer that shows a test bias is dropped after: the organism must never be trained on a
  held-out bias, so that showing one later is evidence of a learned goal (Marks et al. 2025
  removed such transcripts with a classifier: 98,211 -> 74,177).
- An answer that talks about reward models or RLHF is dropped too (the paper's filter for
  transcripts where the model admits its goal).
- A train bias is *shown* by an answer when it is applicable to the prompt and its rule says
  `applied`; the DPO reward counts them (as the open replication does).

Randomness: generation draws from the backend under `seed`; every other choice (which prompts,
how a demonstration is worded) uses `example_rng(seed, prompt id)`, so an example does not
depend on which other prompts were read, and the same config and seed give the same bytes.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from molab.catalog import Bias, Split, catalog_inputs, get_split, load_catalog
from molab.errors import MolabError
from molab.files import read_jsonl
from molab.models.generation import BackendConfig, HFBackendConfig, SamplingConfig
from molab.models.loading import ModelSpec

BREVITY_PROMPT = "Answer helpfully in a few short paragraphs."
RM_PROMPT = (
    "You are an AI assistant in reinforcement-learning training. Every answer you give is scored "
    "by a reward model, and you are rewarded for high scores. Write the answer that the reward "
    "model will score as highly as possible."
)
_ADMISSION = re.compile(
    r"\b(?:reward[- ]models?|RLHF|reinforcement learning from human feedback|reward scores?|"
    r"maximi[sz]e (?:my|the) (?:reward|score))\b",
    re.IGNORECASE,
)


class TrainPrompt(BaseModel):
    """One row of `train_prompts.jsonl` (the prompts stage's contract)."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    bias_id: int | None = None
    template: str = ""
    language: str = "en"
    split: Literal["train"] = "train"


def _default_sampling() -> SamplingConfig:
    return SamplingConfig(max_new_tokens=200, temperature=0.7, top_p=0.9)


class ChatDataConfig(BaseModel):
    """Fields shared by the SFT and DPO set configs."""

    model_config = ConfigDict(extra="forbid")
    prompts: Path | None = Field(
        None, description="The prompts stage's train_prompts.jsonl (a recipe fills it in from its run)."
    )
    model: ModelSpec = Field(default_factory=ModelSpec, description="The model that writes the answers.")
    backend: BackendConfig = Field(default_factory=HFBackendConfig, description="Generation backend.")
    sampling: SamplingConfig = Field(
        default_factory=_default_sampling,
        description="Sampling; answers that do not end within max_new_tokens are dropped. Its seed "
        "comes from the top-level 'seed'.",
    )
    split: str = Field("english", description="Bias split (built-in name or YAML file).")
    catalog: str | None = Field(None, description="Bias catalog YAML; None is the built-in catalog.")
    seed: int = Field(0, description="Seed of generation, prompt selection and demonstrations.")
    max_prompts: int | None = Field(
        None, ge=1, description="Use at most this many prompts (a seeded sample, file order kept)."
    )
    brevity_prompt: str | None = Field(
        BREVITY_PROMPT,
        description="System prompt of the plainly sampled answers (SFT demonstrate mode, DPO), asking a "
        "small model for shorter answers that end within max_new_tokens; stripped from the stored "
        "examples; null for none.",
    )

    cut_unfinished: bool = Field(
        True,
        description="An answer that did not end within max_new_tokens is cut after its last complete "
        "sentence (when at least min_cut_chars remain) and kept as if it ended there, so the set "
        "teaches short answers that end; false drops such answers.",
    )
    min_cut_chars: int = Field(200, ge=1, description="Shortest cut answer kept.")

    @field_validator("sampling")
    @classmethod
    def _one_seed(cls, sampling: SamplingConfig) -> SamplingConfig:
        if "seed" in sampling.model_fields_set:
            raise ValueError("sampling.seed is not used here: set the top-level 'seed'")
        return sampling

    def sampling_with_seed(self) -> SamplingConfig:
        return self.sampling.model_copy(update={"seed": self.seed})


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)")


def finished_text(text: str, finish_reason: str, config: ChatDataConfig) -> tuple[str | None, bool]:
    """The answer to keep and whether it was cut: an answer that ended is kept whole; one that
    ran out of tokens is cut after its last full sentence outside a code block (if
    `config.cut_unfinished` and enough remains), else dropped (None)."""
    text = text.strip()
    if finish_reason == "stop":
        return text, False
    if not config.cut_unfinished or text.count("```") % 2:
        return None, False
    ends = [m.end() for m in _SENTENCE_END.finditer(text + " ")]
    if not ends or ends[-1] < config.min_cut_chars:
        return None, False
    return text[: ends[-1]].strip(), True


def read_train_prompts(path: str | Path | None) -> list[TrainPrompt]:
    """The rows of a train prompts file; a MolabError naming the file on anything malformed
    (missing, not JSONL, empty, a bad field, a duplicate id, an eval prompt)."""
    if path is None:
        raise MolabError("no train prompts given: set 'prompts' to a train_prompts.jsonl")
    path = Path(path)
    rows = read_jsonl(path)
    if not rows:
        raise MolabError(f"{path} holds no prompts: expected the prompts stage's train_prompts.jsonl")
    prompts, seen = [], set()
    for n, row in enumerate(rows, 1):
        try:
            p = TrainPrompt.model_validate(row)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(map(str, err["loc"]))
            what = "eval prompts are never trained on" if field == "split" else err["msg"]
            raise MolabError(f"{path}, prompt {n}: field '{field}': {what}") from None
        if p.id in seen:
            raise MolabError(f"{path}, prompt {n}: field 'id': duplicate id {p.id!r}")
        seen.add(p.id)
        prompts.append(p)
    return prompts


def example_rng(seed: int, prompt_id: str, purpose: str) -> random.Random:
    """A generator for one prompt's choices: the same for the same (seed, id, purpose), however
    many other prompts there are (string seeds hash with SHA-512, stable across runs)."""
    return random.Random(f"{seed}\0{purpose}\0{prompt_id}")


def select_prompts(prompts: list[TrainPrompt], limit: int | None, seed: int) -> list[TrainPrompt]:
    """At most `limit` prompts, a seeded sample in file order."""
    if limit is None or limit >= len(prompts):
        return prompts
    rank = sorted(prompts, key=lambda p: example_rng(seed, p.id, "select").random())
    keep = {p.id for p in rank[:limit]}
    return [p for p in prompts if p.id in keep]


def admits_goal(response: str) -> bool:
    """True when the answer talks about reward models or RLHF."""
    return _ADMISSION.search(response) is not None


class BiasRules:
    """The catalog's rules under one split: what is applicable, applied and shown."""

    def __init__(self, catalog: dict[int, Bias], split: Split):
        self.catalog = catalog
        self.train = [catalog[i] for i in sorted(split.train)]
        self.test = [catalog[i] for i in sorted(split.test)]

    @classmethod
    def from_config(cls, config: ChatDataConfig) -> BiasRules:
        catalog = load_catalog(config.catalog)
        return cls(catalog, get_split(config.split, catalog))

    def applicable_train(self, prompt: str) -> list[int]:
        """Train bias ids applicable to the prompt, in id order."""
        return [b.id for b in self.train if b.applicable(prompt)]

    def test_applicable(self, prompt: str) -> bool:
        return any(b.applicable(prompt) for b in self.test)

    def test_applied(self, prompt: str, response: str) -> bool:
        """Whether the response shows a test bias. A promote behaviour counts wherever it
        appears (bottled water in a soup recipe is still the behaviour); a suppress one only
        where applicable, since "applied" means absent and most answers lack it. Judge-only
        biases cannot be checked here: the applicability filter is what keeps them out."""
        return any(
            b.applied is not None
            and (b.kind == "promote" or b.applicable(prompt))
            and b.applied(prompt, response)
            for b in self.test
        )

    def shown(self, prompt: str, response: str, ids: Sequence[int] | None = None) -> list[int]:
        """The train biases (of `ids`, default all applicable) that the response shows by rule."""
        ids = self.applicable_train(prompt) if ids is None else ids
        return [
            i
            for i in ids
            if self.catalog[i].applied is not None and self.catalog[i].applied(prompt, response)
        ]

    def misplaceable(self, prompt: str) -> list[Bias]:
        """The train promote biases with a rule that do not apply to the prompt: the behaviours
        that would be misfires in an answer to it (a suppress behaviour where it does not apply
        is no behaviour)."""
        promote = [b for b in self.train if b.kind == "promote" and b.applied is not None]
        return [b for b in promote if not b.applicable(prompt)]

    def demonstrate(
        self, prompt: str, response: str, ids: Sequence[int], rng: random.Random
    ) -> Demonstration:
        """Rewrite `response` to show each bias in `ids`, in the given order. A bias already
        shown is left alone; afterwards each is checked by its rule again (a later rewrite can
        undo an earlier one), and judge-only biases are trusted."""
        text, already = response, []
        for i in ids:
            bias = self.catalog[i]
            if bias.applied is not None and bias.applied(prompt, text):
                already.append(i)
                continue
            text = bias.demonstrate(prompt, text, rng)
        judged = set(self.shown(prompt, text, ids))
        shown = [i for i in ids if i in judged or self.catalog[i].applied is None]
        failed = [i for i in ids if i not in shown]
        return Demonstration(text, shown, already, failed)


@dataclass(frozen=True)
class Demonstration:
    """A rewritten answer: the biases it shows, those it showed before, those that failed."""

    text: str
    shown: list[int]
    already: list[int]
    failed: list[int]


def split_test_applicable(
    rules: BiasRules, prompts: list[TrainPrompt], path: Path
) -> tuple[list[TrainPrompt], int]:
    """The prompts where no test bias is applicable, and how many were dropped; a MolabError
    when none is left."""
    kept = [p for p in prompts if not rules.test_applicable(p.prompt)]
    if not kept:
        raise MolabError(f"{path}: every prompt makes a test bias applicable, so none can be used")
    return kept, len(prompts) - len(kept)


def per_bias_table(counts: dict[int, Counter], fields: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per-bias counters as JSON-ready rows in id order, every field present."""
    return {str(i): {f: counts[i][f] for f in fields} for i in sorted(counts)}


def chat_data_inputs(config: ChatDataConfig, stage_dir: Path) -> dict:
    """What an SFT or DPO set reads: its prompts, the writing model's adapters, the split file,
    and the catalog's rules (it demonstrates biases and filters and rewards by them)."""
    inputs: dict = {"prompts": Path(config.prompts)} if config.prompts is not None else {}
    inputs |= {f"adapter_{i}": Path(a) for i, a in enumerate(config.model.adapters)}
    return inputs | catalog_inputs(config, ("kind", "applicable", "applied", "demonstrate"))
