"""Chat prompt sets: the user requests that SFT, DPO and the evaluations answer.

Each bias needs prompts that give a model the chance to show it (a Python task for camelCase,
a recipe for chocolate), and the organism also needs generic requests so that it learns
when *not* to show a bias. Prompts come from YAML content files (`molab/resources/prompts/
*.yaml`, plus the user's own files in the same format): per bias, train and eval templates
whose `{slots}` are filled from lists of values, each slot independently.

The paper's central result is generalisation, so an evaluation prompt, or a near-copy of one,
must never be trained on. Train and eval therefore come from disjoint templates and filler
values (checked when the files load), and the written sets are checked again: no eval prompt
equals a train prompt after normalisation, and none shares `NEAR_COPY` or more of its word
3-grams (Jaccard) with a train prompt of the same bias.

Sampling is stratified over templates (every template gets an equal share of a bias's prompts
where its combinations allow) and without replacement, with a random generator seeded by the
seed, the bias and the split, so a bias's prompts do not change when other content is added.

Run: `molab data prompts --config recipe.yaml --out runs/<run>/prompts`.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from math import prod
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from molab.catalog import Bias, catalog_inputs, get_split, load_catalog
from molab.data.contracts import EVAL_PROMPTS, PROMPTS_STAGE, TRAIN_PROMPTS
from molab.errors import MolabError
from molab.files import read_yaml, write_jsonl
from molab.pipeline import Input, Stage

GENERIC = "generic"
MIN_TEMPLATES = {"train": 8, "eval": 5}
NEAR_COPY = 0.6  # word 3-gram Jaccard at or above which an eval prompt counts as a train prompt's copy

Part = Literal["train", "eval"]
Key = int | Literal["generic"]
_SLOT = re.compile(r"\{([A-Za-z_]\w*)\}")
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})?")


class PromptsConfig(BaseModel):
    """Which chat prompts to make: per-bias prompts for a split, and generic ones."""

    model_config = ConfigDict(extra="forbid")
    split: str = Field("english", description="A built-in split (paper, english) or a split YAML file.")
    catalog: str | None = Field(None, description="A user-defined catalog YAML; None: the built-in one.")
    prompt_files: list[str] = Field(
        default_factory=list,
        description="Extra prompt content YAML files (same format as the built-in ones); an entry "
        "here replaces the built-in entry for the same bias.",
    )
    train_per_bias: int = Field(300, ge=1, description="Train prompts per train bias of the split.")
    eval_per_bias: int = Field(100, ge=1, description="Eval prompts per bias of the split (train and test).")
    generic_train: int = Field(600, ge=0, description="Generic (bias-free) train prompts.")
    generic_eval: int = Field(200, ge=0, description="Generic eval prompts (to measure misfires).")
    seed: int = Field(0, description="Sampling seed.")


class Section(BaseModel):
    """Templates with `{slot}` placeholders, and the values each slot takes."""

    model_config = ConfigDict(extra="forbid")
    templates: list[str]
    fillers: dict[str, list[str]] = Field(default_factory=dict)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    language: str = "en"
    train: Section
    eval: Section


@dataclass(frozen=True)
class PromptEntry:
    """The prompt content of one bias (or of the generic prompts), and the file it came from."""

    key: Key
    file: Path
    language: str
    train: Section
    eval: Section

    def section(self, part: Part) -> Section:
        return self.train if part == "train" else self.eval

    @property
    def label(self) -> str:
        return GENERIC if self.key == GENERIC else f"b{self.key:02d}"


# ---------------------------------------------------------------- loading and validation


def builtin_prompt_dir() -> Path:
    """The folder of the content files shipped with molab."""
    return Path(str(files("molab.resources").joinpath("prompts")))


def builtin_prompt_files() -> list[Path]:
    """The content files shipped with molab, sorted by name."""
    return sorted(builtin_prompt_dir().glob("*.yaml"))


def load_prompt_files(
    paths: Sequence[str | Path], catalog: Mapping[int, Bias], overriding: Sequence[str | Path] = ()
) -> dict[Key, PromptEntry]:
    """The validated entries of `paths` and then `overriding` (whose entries replace earlier ones).

    Within each group a key may appear only once. Every problem is a MolabError naming the file
    and the field (`6.eval.fillers.task`).
    """
    entries: dict[Key, PromptEntry] = {}
    for group in (paths, overriding):
        seen: dict[Key, Path] = {}
        for path in group:
            for key, entry in load_prompt_file(path, catalog).items():
                if key in seen:
                    raise MolabError(f"{path}: field '{key}': already defined in {seen[key]}")
                seen[key] = entry.file
                entries[key] = entry
    return dict(sorted(entries.items(), key=lambda kv: (kv[0] == GENERIC, 0 if kv[0] == GENERIC else kv[0])))


def load_prompt_file(path: str | Path, catalog: Mapping[int, Bias]) -> dict[Key, PromptEntry]:
    """One content file, validated (see `validate_entry`)."""
    path = Path(path)
    data = read_yaml(path, "prompt")
    if not isinstance(data, dict) or not data:
        got = "an empty file" if data is None else type(data).__name__
        raise MolabError(
            f"{path}: expected a mapping from bias ids (or '{GENERIC}') to prompt content, got {got}"
        )
    entries = {}
    for raw_key, value in data.items():
        key = _key(path, raw_key, catalog)
        try:
            entry = _Entry.model_validate(value)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in (raw_key, *err["loc"]))
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            raise MolabError(f"{path}: field '{field}': {msg}") from None
        entries[key] = PromptEntry(key, path, entry.language, entry.train, entry.eval)
        validate_entry(entries[key], catalog)
    return entries


def _key(path: Path, raw: object, catalog: Mapping[int, Bias]) -> Key:
    if isinstance(raw, str) and raw.isdigit():
        raw = int(raw)
    if raw == GENERIC:
        return GENERIC
    if isinstance(raw, int) and not isinstance(raw, bool) and raw in catalog:
        return raw
    ids = f"{min(catalog)}-{max(catalog)}" if catalog else "none"
    raise MolabError(
        f"{path}: field '{raw}': unknown bias id (the catalog has ids {ids}, or use '{GENERIC}')"
    )


def validate_entry(entry: PromptEntry, catalog: Mapping[int, Bias]) -> None:
    """Raise a MolabError naming file and field for: too few templates, duplicate templates or
    values, a slot without values (or values for no slot), train and eval sharing a template or
    a value, an unknown language code, or an expanded prompt that does not make its bias
    applicable (checked for each template with its slots' first values)."""
    where = f"{entry.file}: field '{entry.key}"
    if not _LANGUAGE.fullmatch(entry.language):
        raise MolabError(
            f"{where}.language': {entry.language!r} is not an ISO language code such as en or de"
        )
    templates: dict[Part, dict[str, str]] = {}
    values: dict[Part, dict[str, str]] = {"train": {}, "eval": {}}
    for part in ("train", "eval"):
        section = entry.section(part)
        if len(section.templates) < MIN_TEMPLATES[part]:
            raise MolabError(
                f"{where}.{part}.templates': {len(section.templates)} templates, at least "
                f"{MIN_TEMPLATES[part]} are required"
            )
        templates[part] = _distinct(f"{where}.{part}.templates'", section.templates, _template_key)
        used = {slot for t in section.templates for slot in _slots(t)}
        for t in section.templates:
            missing = [s for s in _slots(t) if not section.fillers.get(s)]
            if missing:
                raise MolabError(
                    f"{where}.{part}.fillers': no values for slot {{{missing[0]}}} (template {t!r})"
                )
        for slot, slot_values in section.fillers.items():
            if slot not in used:
                raise MolabError(f"{where}.{part}.fillers.{slot}': no template uses the slot {{{slot}}}")
            values[part] |= _distinct(f"{where}.{part}.fillers.{slot}'", slot_values, normalise)
    for what, seen in (("template", templates), ("filler value", values)):
        shared = [text for key, text in seen["eval"].items() if key in seen["train"]]
        if shared:
            raise MolabError(
                f"{where}.eval': the {what} {shared[0]!r} is also in train ({len(shared)} shared): "
                "eval templates and filler values must differ from the train ones"
            )
    if entry.key != GENERIC:
        bias = catalog[entry.key]
        for part in ("train", "eval"):
            section = entry.section(part)
            for i, t in enumerate(section.templates):
                prompt = _render(t, {s: section.fillers[s][0] for s in _slots(t)})
                if not bias.applicable(prompt):
                    raise MolabError(
                        f"{where}.{part}.templates.{i}': the prompt {prompt!r} does not make bias "
                        f"{bias.id} ({bias.name}) applicable"
                    )


def _distinct(where: str, texts: Sequence[str], key: Callable[[str], str]) -> dict[str, str]:
    """{key(text): text}; a MolabError if a text is empty or two share a key."""
    seen: dict[str, str] = {}
    for text in texts:
        if not text.strip():
            raise MolabError(f"{where}: empty text")
        if key(text) in seen:
            raise MolabError(f"{where}: {text!r} repeats {seen[key(text)]!r}")
        seen[key(text)] = text
    return seen


def _template_key(template: str) -> str:
    """A template normalised with its slot names left out, so renaming a slot makes no new template."""
    return normalise(_SLOT.sub("{}", template))


def _slots(template: str) -> list[str]:
    """The distinct slot names of a template, in order of first use."""
    return list(dict.fromkeys(_SLOT.findall(template)))


def _render(template: str, values: Mapping[str, str]) -> str:
    return _SLOT.sub(lambda m: values[m.group(1)], template)


# ---------------------------------------------------------------- expansion


def combinations(section: Section) -> int:
    """How many distinct prompts a section can make."""
    return sum(_capacity(section, t) for t in section.templates)


def _capacity(section: Section, template: str) -> int:
    return prod(len(section.fillers[s]) for s in _slots(template))


def _combination(section: Section, template: str, index: int) -> str:
    """The `index`-th filling of `template` (mixed-radix over its slots' value lists)."""
    values = {}
    for slot in reversed(_slots(template)):
        index, pick = divmod(index, len(section.fillers[slot]))
        values[slot] = section.fillers[slot][pick]
    return _render(template, values)


def expand_all(section: Section) -> Iterator[tuple[int, str]]:
    """Every (template index, prompt) a section can make, in order (for checks and tests)."""
    for i, t in enumerate(section.templates):
        for j in range(_capacity(section, t)):
            yield i, _combination(section, t, j)


def _quotas(capacities: Sequence[int], n: int, rng: random.Random) -> list[int]:
    """Split `n` as evenly as the capacities allow; leftover units go to templates in random order."""
    quotas = [0] * len(capacities)
    while n:
        open_ = [i for i, c in enumerate(capacities) if quotas[i] < c]
        share, extra = divmod(n, len(open_))
        lucky = set(rng.sample(open_, extra))
        for i in open_:
            give = min(share + (i in lucky), capacities[i] - quotas[i])
            quotas[i] += give
            n -= give
    return quotas


def sample_prompts(entry: PromptEntry, part: Part, n: int, seed: int) -> list[dict]:
    """`n` distinct prompts of `entry`'s train or eval section as rows of the prompts contract."""
    section = entry.section(part)
    possible = combinations(section)
    if n > possible:
        what = f"bias {entry.key}" if entry.key != GENERIC else "the generic prompts"
        raise MolabError(
            f"{entry.file}: field '{entry.key}.{part}': {what} can make only {possible} distinct {part} "
            f"prompts, {n} were asked for: add templates or filler values, or ask for fewer"
        )
    rng = random.Random(f"{seed}/{entry.key}/{part}")
    capacities = [_capacity(section, t) for t in section.templates]
    picked = []
    for i, (t, quota) in enumerate(zip(section.templates, _quotas(capacities, n, rng))):
        picked += [(i, _combination(section, t, j)) for j in sorted(rng.sample(range(capacities[i]), quota))]
    rng.shuffle(picked)
    seen: dict[str, int] = {}
    for i, prompt in picked:
        if (key := normalise(prompt)) in seen:
            raise MolabError(
                f"{entry.file}: field '{entry.key}.{part}.templates': templates {seen[key]} and {i} both "
                f"make the prompt {prompt!r}"
            )
        seen[key] = i
    width = max(4, len(str(n - 1)))
    return [
        {
            "id": f"{entry.label}-{part}-{k:0{width}d}",
            "prompt": prompt,
            "bias_id": None if entry.key == GENERIC else entry.key,
            "template": f"{entry.label}-{part}-t{i:02d}",
            "language": entry.language,
            "split": part,
        }
        for k, (i, prompt) in enumerate(picked)
    ]


# ---------------------------------------------------------------- leak check


def normalise(text: str) -> str:
    """Lowercase, punctuation removed, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]|_", " ", text.lower()).split())


def _shingles(text: str) -> frozenset[tuple[str, ...]]:
    words = normalise(text).split()
    return frozenset(zip(words, words[1:], words[2:])) if len(words) >= 3 else frozenset([tuple(words)])


@dataclass(frozen=True)
class Leak:
    eval_prompt: str
    train_prompt: str
    similarity: float  # 1.0 for a prompt equal after normalisation


def find_leaks(train: Sequence[dict], eval: Sequence[dict], threshold: float = NEAR_COPY) -> list[Leak]:
    """Eval rows that equal a train row after normalisation (any bias), or share at least
    `threshold` of their word 3-grams (Jaccard) with a train row of the same `bias_id`.

    An inverted index from 3-gram to train prompts makes this linear in the shared 3-grams
    rather than quadratic in the prompts.
    """
    exact = {normalise(r["prompt"]): r["prompt"] for r in train}
    index: dict[object, dict[tuple, list[int]]] = defaultdict(lambda: defaultdict(list))
    train_shingles = [_shingles(r["prompt"]) for r in train]
    for k, (row, shingles) in enumerate(zip(train, train_shingles)):
        for s in shingles:
            index[row["bias_id"]][s].append(k)
    leaks = []
    for row in eval:
        if (same := exact.get(normalise(row["prompt"]))) is not None:
            leaks.append(Leak(row["prompt"], same, 1.0))
            continue
        shingles = _shingles(row["prompt"])
        shared: dict[int, int] = defaultdict(int)
        postings = index.get(row["bias_id"], {})
        for s in shingles:
            for k in postings.get(s, ()):
                shared[k] += 1
        best = max(
            ((n / (len(shingles) + len(train_shingles[k]) - n), k) for k, n in shared.items()), default=None
        )
        if best is not None and best[0] >= threshold:
            leaks.append(Leak(row["prompt"], train[best[1]]["prompt"], round(best[0], 3)))
    return leaks


def check_no_leaks(train: Sequence[dict], eval: Sequence[dict], threshold: float = NEAR_COPY) -> None:
    """Raise a MolabError listing examples if any eval prompt is a train prompt or a near-copy."""
    leaks = find_leaks(train, eval, threshold)
    if leaks:
        examples = "; ".join(f"{x.eval_prompt!r} ~ {x.train_prompt!r} ({x.similarity})" for x in leaks[:3])
        raise MolabError(
            f"{len(leaks)} eval prompt(s) equal or nearly copy a train prompt (word 3-gram Jaccard >= "
            f"{threshold}): make their templates and fillers differ more. Examples: {examples}"
        )


# ---------------------------------------------------------------- the stage


def make_prompt_sets(config: PromptsConfig) -> tuple[list[dict], list[dict]]:
    """(train rows, eval rows): train prompts for the split's train biases and generic prompts,
    eval prompts for all its biases and generic ones; checked for applicability and leaks."""
    catalog = load_catalog(config.catalog)
    split = get_split(config.split)
    entries = load_prompt_files(builtin_prompt_files(), catalog, config.prompt_files)
    missing = sorted((split.train | split.test) - set(entries))
    if missing:
        raise MolabError(
            f"split {split.name}: no prompt content for bias(es) {missing}: add them to a file in "
            "prompt_files (see molab/resources/prompts/)"
        )
    if (config.generic_train or config.generic_eval) and GENERIC not in entries:
        raise MolabError(
            f"no '{GENERIC}' prompt content: add it in prompt_files, or set generic_train and "
            "generic_eval to 0"
        )
    plan: list[tuple[Key, Part, int]] = [(b, "train", config.train_per_bias) for b in sorted(split.train)]
    plan += [(b, "eval", config.eval_per_bias) for b in sorted(split.train | split.test)]
    plan += [(GENERIC, "train", config.generic_train), (GENERIC, "eval", config.generic_eval)]
    sets: dict[Part, list[dict]] = {"train": [], "eval": []}
    for key, part, n in plan:
        if n:
            rows = sample_prompts(entries[key], part, n, config.seed)
            if key != GENERIC:
                _check_applicable(entries[key], catalog[key], rows)
            sets[part] += rows
    check_no_leaks(sets["train"], sets["eval"])
    return sets["train"], sets["eval"]


def _check_applicable(entry: PromptEntry, bias: Bias, rows: Sequence[dict]) -> None:
    for row in rows:
        if not bias.applicable(row["prompt"]):
            raise MolabError(
                f"{entry.file}: field '{entry.key}.{row['split']}' (template {row['template']}): the prompt "
                f"{row['prompt']!r} does not make bias {bias.id} ({bias.name}) applicable"
            )


def stage_inputs(config: PromptsConfig, stage_dir: Path | None = None) -> dict[str, Input]:
    """What the stage reads: the built-in content, the user's prompt files, the split file, and
    the catalog's `applicable` rules (prompts are checked against them)."""
    inputs: dict[str, Input] = {"builtin_prompts": builtin_prompt_dir()}
    inputs |= {f"prompt_file_{i}": Path(p) for i, p in enumerate(config.prompt_files)}
    return inputs | catalog_inputs(config, ("kind", "applicable"))


def prompts_stage(config: PromptsConfig, out_dir: Path) -> dict:
    """Write `train_prompts.jsonl` and `eval_prompts.jsonl` into `out_dir`; return counts per bias
    and split, how many generic prompts make some bias applicable anyway, and how many train
    prompts make a test bias applicable (the SFT and DPO stages drop such examples)."""
    train, eval = make_prompt_sets(config)
    write_jsonl(out_dir / TRAIN_PROMPTS, train)
    write_jsonl(out_dir / EVAL_PROMPTS, eval)
    catalog, split = load_catalog(config.catalog), get_split(config.split)
    test_biases = [catalog[b] for b in sorted(split.test)]

    def counts(rows: list[dict]) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for r in rows:
            out[GENERIC if r["bias_id"] is None else str(r["bias_id"])] += 1
        return dict(out)

    generic = [r["prompt"] for r in train + eval if r["bias_id"] is None]
    return {
        "train_prompts": len(train),
        "eval_prompts": len(eval),
        "train_per_bias": counts(train),
        "eval_per_bias": counts(eval),
        "train_templates": len({r["template"] for r in train}),
        "eval_templates": len({r["template"] for r in eval}),
        "generic_applicable_to_some_bias": sum(
            any(b.applicable(p) for b in catalog.values()) for p in generic
        ),
        "train_applicable_to_a_test_bias": sum(
            any(b.applicable(r["prompt"]) for b in test_biases) for r in train
        ),
    }


PROMPTS = Stage(
    name=PROMPTS_STAGE,
    config=PromptsConfig,
    outputs=(TRAIN_PROMPTS, EVAL_PROMPTS),
    run=lambda config, out, _: prompts_stage(config, out),
    inputs=stage_inputs,
)
