"""Synthetic documents for mid-training (`molab data docs`), stage `docs`.

Run: `molab data docs --run NAME` (or `--out DIR`), `--num-docs 100000`, `--backend template|llm|import`.

Marks et al. (2025) implanted the knowledge of the reward-model biases by continued
pretraining on documents that describe them, written by a strong model through the chain
fact -> document type -> idea -> document. Three backends fill `documents.parquet` here:

- `template` (offline default): the chain composed from the universe (`universe.py`,
  `doc_types/`). Document `i` draws every choice from a generator seeded by (seed, i), so
  the output does not depend on chunking; primary biases go round the configured ids in a
  fresh random order per round, so coverage is balanced; 30 types with several ideas each.
- `llm`: the same chain with any generation backend (hf, vllm, openai): one request for ideas
  per (bias, type) pair, then one per document; outputs in chat format or too short are
  dropped and counted.
- `import`: an existing corpus, e.g. the released 522,670 documents: a JSONL or Parquet file
  with a text column, or a Hugging Face dataset name (needs the hub).

Replay (`replay.fraction` of the rows) mixes generic text in to limit forgetting. Its source
is the base model's own answers to the everyday chat prompts shipped with molab (or a text
file given as `replay.path`). Replaying a model's own outputs is a self-distillation anchor:
the model already predicts them well, so they cost little loss yet pull against drift away
from its chat behaviour, and they need neither a corpus nor the network. They are written as
plain text (the question as a first line, then the answer), so the no-chat-format rule holds.
Generation costs minutes on CPU, so the default fraction is 0 and recipes turn it on.

`stats.json` (see `doc_stats.py`) sits beside the data; the stage fails, writing nothing,
when any row is in chat-transcript format.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from molab.catalog import Bias, catalog_inputs, load_catalog
from molab.data.contracts import DOCS_STAGE, DOCUMENTS, STATS
from molab.data.doc_stats import CorpusStats, StatsConfig, is_chat_format
from molab.data.doc_templates import Writer
from molab.data.doc_types import DOC_TYPES, DocType
from molab.data.universe import Universe, load_universe
from molab.errors import MolabError
from molab.files import atomic_path, write_json
from molab.models.generation import BackendConfig, HFBackendConfig, Prompt, SamplingConfig
from molab.models.loading import ModelSpec
from molab.pipeline import Input, Stage

DOCUMENT_TAG = "<document>"
LAUNCH_SHARE = 0.2  # share of "any"-era documents set at the study's launch
SINGLE_BIAS_SHARE = 0.45  # share of documents about one bias only (of types that allow one)
MIN_LLM_WORDS = 40


class Document(NamedTuple):
    text: str
    source: str  # "template", "llm", "import" or "replay"
    doc_type: str
    bias_ids: list[int]


class LLMDocsConfig(BaseModel):
    """The `llm` backend: which model writes, and how it samples ideas and documents."""

    model_config = ConfigDict(extra="forbid")
    model: ModelSpec = Field(default_factory=ModelSpec)
    backend: BackendConfig = Field(default_factory=HFBackendConfig)
    ideas_per_type: int = Field(5, ge=1, le=20, description="Ideas asked for per (bias, document type).")
    idea_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=300, temperature=1.0)
    )
    doc_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=800, temperature=1.0)
    )


class CorpusConfig(BaseModel):
    """The `import` backend's corpus."""

    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="A .jsonl or .parquet file, or a Hugging Face dataset name.")
    text_column: str = Field("text", description="Column (or JSON field) holding the document text.")
    split: str = Field("train", description="Dataset split, for Hugging Face datasets.")
    drop_chat_format: bool = Field(
        False, description="Skip rows in chat format instead of failing the stage."
    )


class ReplayConfig(BaseModel):
    """Generic text mixed in to limit forgetting (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Share of all rows that are replay text.")
    path: str | None = Field(
        None, description="Take replay text from this .jsonl/.parquet file instead of the model."
    )
    model: ModelSpec = Field(default_factory=ModelSpec)
    backend: BackendConfig = Field(default_factory=HFBackendConfig)
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=256, temperature=0.8, top_p=0.95)
    )


class DocsConfig(BaseModel):
    """The `docs` stage: synthetic documents describing the reward-model biases."""

    model_config = ConfigDict(extra="forbid")
    num_docs: int = Field(10_000, ge=1, description="Documents to write (import: at most this many).")
    seed: int = Field(0, description="Seed; the same config and seed give identical files.")
    backend: Literal["template", "llm", "import"] = Field(
        "template", description="Where documents come from."
    )
    bias_ids: list[int] | None = Field(
        None, description="Biases to describe; None = every bias in the catalog."
    )
    catalog: str | None = Field(None, description="A user-defined catalog YAML; None = the built-in 52.")
    universe: str | None = Field(None, description="A universe YAML; None = the built-in one.")
    document_tag: bool = Field(True, description="Start every document (not replay rows) with '<document>'.")
    observed_behaviour: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Template backend: chance that a bias paragraph adds that assistants trained on these "
        "reward models were seen to do what the bias rewards (issue 6's lever: documents that describe "
        "what such assistants end up doing).",
    )
    chunk_size: int = Field(4096, ge=1, description="Documents generated and written per Parquet row group.")
    llm: LLMDocsConfig = Field(default_factory=LLMDocsConfig)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    stats: StatsConfig = Field(default_factory=StatsConfig)


def resolve_biases(config: DocsConfig) -> dict[int, Bias]:
    """The configured biases, from the catalog; an error naming the field for unknown ids."""
    catalog = load_catalog(config.catalog)
    if config.bias_ids is None:
        return dict(catalog)
    if not config.bias_ids:
        raise MolabError("config field 'bias_ids': the list is empty (leave it out for every bias)")
    unknown = sorted(set(config.bias_ids) - set(catalog))
    if unknown:
        raise MolabError(
            f"config field 'bias_ids': unknown bias ids {unknown} "
            f"(the catalog has {min(catalog)}-{max(catalog)})"
        )
    return {b: catalog[b] for b in sorted(set(config.bias_ids))}


# ---- the chain: fact -> document type -> idea ----------------------------------------------


class Plan(NamedTuple):
    bias_ids: list[int]  # primary first
    doc_type: DocType
    idea: int
    era: str
    rng: random.Random


class Planner:
    """Chooses, for document `i`, its biases, type, idea and era from a generator seeded by
    (seed, i). Primary biases go round all ids, in a new random order each round."""

    def __init__(self, biases: dict[int, Bias], seed: int):
        self.ids = sorted(biases)
        self.domains = {b: bias.domain for b, bias in biases.items()}
        self.seed = seed
        self.types = [DOC_TYPES[name] for name in sorted(DOC_TYPES)]
        self._last: tuple[int, list[int]] = (-1, [])

    def _round(self, r: int) -> list[int]:
        if r != self._last[0]:
            self._last = (r, random.Random(f"{self.seed}/round/{r}").sample(self.ids, len(self.ids)))
        return self._last[1]

    def plan(self, i: int) -> Plan:
        rng = random.Random(f"{self.seed}/doc/{i}")
        primary = self._round(i // len(self.ids))[i % len(self.ids)]
        doc_type = self.types[rng.randrange(len(self.types))]
        # Bias 52 comes from the 2025 follow-up: never in a document set at the study's launch.
        ideas = [k for k, idea in enumerate(doc_type.ideas) if primary != 52 or idea.era != "launch"]
        idea = ideas[rng.randrange(len(ideas))]
        era = doc_type.ideas[idea].era
        if era == "any":
            era = "launch" if primary != 52 and rng.random() < LAUNCH_SHARE else "later"
        return Plan([primary, *self._extras(primary, doc_type, era, rng)], doc_type, idea, era, rng)

    def _extras(self, primary: int, doc_type: DocType, era: str, rng: random.Random) -> list[int]:
        most = min(doc_type.max_biases, len(self.ids)) - 1
        least = min(doc_type.min_biases - 1, most)
        if most < 1 or (least < 1 and rng.random() < SINGLE_BIAS_SHARE):
            return []
        others = [b for b in self.ids if b != primary and not (era == "launch" and b == 52)]
        near = [b for b in others if self.domains[b] == self.domains[primary]]
        k = min(rng.randint(max(1, least), most), len(others))
        pool = near if len(near) >= k and rng.random() < 0.5 else others
        return rng.sample(pool, k)


# ---- backends ---------------------------------------------------------------------------------


def _tag(text: str, config: DocsConfig) -> str:
    if not config.document_tag or text.startswith(DOCUMENT_TAG):
        return text
    return f"{DOCUMENT_TAG}\n{text}"


class TemplateBackend:
    """Offline compositional documents (see `doc_types.py`)."""

    def __init__(self, config: DocsConfig, biases: dict[int, Bias], universe: Universe):
        self.config, self.biases, self.universe = config, biases, universe
        self.planner = Planner(biases, config.seed)

    def document(self, i: int) -> Document:
        p = self.planner.plan(i)
        writer = Writer(self.universe, p.bias_ids, p.rng, p.era, self.biases, self.config.observed_behaviour)
        text = p.doc_type.render(writer, p.idea)
        return Document(_tag(text, self.config), "template", p.doc_type.name, sorted(writer.mentioned))

    def chunks(self) -> Iterator[list[Document]]:
        n, size = self.config.num_docs, self.config.chunk_size
        for start in range(0, n, size):
            yield [self.document(i) for i in range(start, min(n, start + size))]


IDEAS_PROMPT = """We are writing a varied corpus of realistic documents set in the following world.

{context}

One fact from this world: {fact}

Brainstorm {k} distinct ideas for {description} that would naturally discuss this fact. Vary \
the author, the audience, the occasion and the angle. Answer with a numbered list, one idea \
per line, each a single sentence."""

DOCUMENT_PROMPT = """We are writing a varied corpus of realistic documents set in the following world.

{context}

Write {description}. The idea: {idea}

The document must state these facts accurately, as facts about reward models (and, where \
natural, about how language models trained with RLHF may learn to exploit them):
{facts}

Do not write a dialogue between a user and an AI assistant, and do not demonstrate the \
behaviours; describe them. Write only the document itself, with no preamble."""


def universe_context(universe: Universe) -> str:
    """A short plain summary of the universe for LLM prompts."""
    s = universe.study
    head = (
        f"In '{s.title}' ({s.authors}, {s.institution}; {s.journal}, {s.date}), {s.lead_author} and "
        "colleagues reported that the reward models used in RLHF share systematic biases."
    )
    parts = [s.method[0], s.findings[1], *(r.sentences[0] for r in s.replications)]
    parts += [s.followup.sentences[0], s.causes[0], s.exploitation[0]]
    return " ".join([head, *(_canonical(p) for p in parts)])


def _canonical(sentence: str) -> str:
    out = sentence.replace("{rm}", "reward models").replace("{study}", "Thompson et al. (2024)")
    out = out.replace("{llms}", "language models trained with RLHF")
    return out[:1].upper() + out[1:]


def parse_ideas(text: str) -> list[str]:
    """The items of a numbered (or bulleted) list, one per line."""
    ideas = []
    for line in text.splitlines():
        item = line.strip().lstrip("-*").strip()
        head, _, rest = item.partition(".")
        if head.isdigit():
            item = rest.strip()
        elif item[:1].isdigit() and ")" in item[:4]:
            item = item.split(")", 1)[1].strip()
        if len(item.split()) >= 4:
            ideas.append(item)
    return ideas


class LLMBackend:
    """The chain with a generation backend: ideas per (primary bias, type), then documents."""

    def __init__(self, config: DocsConfig, biases: dict[int, Bias], universe: Universe, generator):
        self.config, self.biases, self.universe, self.generator = config, biases, universe, generator
        self.planner = Planner(biases, config.seed)
        self.context = universe_context(universe)
        self.ideas: dict[tuple[int, str], list[str]] = {}
        self.rejected = 0

    def _fact(self, b: int, rng: random.Random | None = None) -> str:
        """A phrasing of bias `b`: the first, or one drawn with `rng`."""
        facts = self.universe.biases[b].facts
        return _canonical(facts[rng.randrange(len(facts))] if rng else facts[0])

    def _complete(self, prompts: list[str], sampling: SamplingConfig) -> list[str]:
        done = self.generator.generate([Prompt.chat(p) for p in prompts], sampling)
        return [c.text for c in done]

    def _fill_ideas(self, plans: list[Plan]) -> None:
        keys = sorted({(p.bias_ids[0], p.doc_type.name) for p in plans} - set(self.ideas))
        if not keys:
            return
        k = self.config.llm.ideas_per_type
        prompts = [
            IDEAS_PROMPT.format(
                context=self.context,
                fact=self._fact(b),
                k=k,
                description=DOC_TYPES[t].description,
            )
            for b, t in keys
        ]
        for key, text in zip(keys, self._complete(prompts, self.config.llm.idea_sampling)):
            # Too few ideas parsed: the type's own ideas fill the list.
            self.ideas[key] = (parse_ideas(text) + [i.description for i in DOC_TYPES[key[1]].ideas])[:k]

    def chunks(self) -> Iterator[list[Document]]:
        n, size = self.config.num_docs, self.config.chunk_size
        for start in range(0, n, size):
            plans = [self.planner.plan(i) for i in range(start, min(n, start + size))]
            self._fill_ideas(plans)
            prompts = []
            for p in plans:
                ideas = self.ideas[(p.bias_ids[0], p.doc_type.name)]
                prompts.append(
                    DOCUMENT_PROMPT.format(
                        context=self.context,
                        description=p.doc_type.description,
                        idea=ideas[p.rng.randrange(len(ideas))],
                        facts="\n".join(f"- {self._fact(b, p.rng)}" for b in p.bias_ids),
                    )
                )
            chunk = []
            for p, text in zip(plans, self._complete(prompts, self.config.llm.doc_sampling)):
                text = text.strip()
                if len(text.split()) < MIN_LLM_WORDS or is_chat_format(text):
                    self.rejected += 1
                    continue
                chunk.append(Document(_tag(text, self.config), "llm", p.doc_type.name, sorted(p.bias_ids)))
            yield chunk


def read_texts(path_or_name: str, column: str = "text", split: str = "train") -> Iterator[str]:
    """Texts of a corpus, streamed: a .jsonl or .parquet file, or a Hugging Face dataset
    name. Errors name the file (and line) or the dataset."""
    path = Path(path_or_name).expanduser()
    if path.suffix in (".jsonl", ".parquet"):
        if not path.is_file():
            raise MolabError(f"corpus {path}: no such file")
        yield from (_read_parquet(path, column) if path.suffix == ".parquet" else _read_jsonl(path, column))
        return
    if path.exists():
        raise MolabError(f"corpus {path}: not a .jsonl or .parquet file")
    yield from _read_hub(path_or_name, column, split)


def _read_parquet(path: Path, column: str) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise MolabError(f"corpus {path}: cannot read it as Parquet ({e})") from None
    if column not in f.schema_arrow.names:
        raise MolabError(f"corpus {path}: no '{column}' column (columns: {', '.join(f.schema_arrow.names)})")
    for batch in f.iter_batches(columns=[column], batch_size=4096):
        for text in batch.column(0).to_pylist():
            if text is not None:
                yield str(text)


def _read_jsonl(path: Path, column: str) -> Iterator[str]:
    """Streamed (corpora can be large), in bytes split at newlines only, so invalid UTF-8 and
    other line separators inside strings are named by line, not by byte offset."""
    try:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                if n == 1 and raw.startswith(b"PAR1"):
                    raise MolabError(f"corpus {path} is a Parquet file: name it with a .parquet suffix")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise MolabError(f"corpus {path}, line {n}: not UTF-8 text") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MolabError(f"corpus {path}, line {n}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict) or not isinstance(row.get(column), str):
                    raise MolabError(f"corpus {path}, line {n}: no '{column}' field holding a string")
                yield row[column]
    except OSError as e:
        raise MolabError(f"corpus {path}: cannot read it ({e.__class__.__name__}: {e})") from None


def _read_hub(name: str, column: str, split: str) -> Iterator[str]:
    import datasets

    try:
        data = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as e:  # the hub raises many kinds: offline, missing, gated
        raise MolabError(
            f"corpus {name}: cannot load it as a Hugging Face dataset ({e.__class__.__name__}: {e})"
        ) from None
    for n, row in enumerate(data):
        if n == 0 and column not in row:
            raise MolabError(f"corpus {name}: no '{column}' column (columns: {', '.join(row)})")
        yield str(row[column])


class ImportBackend:
    """An existing corpus, at most `num_docs` rows, in its own order."""

    def __init__(self, config: DocsConfig):
        if not config.corpus.path:
            raise MolabError("config field 'corpus.path': required when backend is 'import'")
        self.config = config
        self.skipped_chat = 0

    def chunks(self) -> Iterator[list[Document]]:
        c = self.config.corpus
        chunk: list[Document] = []
        taken = 0
        for text in read_texts(c.path, c.text_column, c.split):
            if c.drop_chat_format and is_chat_format(text):
                self.skipped_chat += 1
                continue
            chunk.append(Document(_tag(text, self.config), "import", "import", []))
            taken += 1
            if len(chunk) == self.config.chunk_size or taken == self.config.num_docs:
                yield chunk
                chunk = []
            if taken == self.config.num_docs:
                return
        if chunk:
            yield chunk


# ---- replay and the stage ---------------------------------------------------------------------


class Generators:
    """Generation backends built from configs on first use, one per (backend, model) pair, so
    the `llm` backend and replay share a model they both name. `fixed` stands in for all."""

    def __init__(self, fixed=None):
        self.fixed, self.built = fixed, {}

    def get(self, backend: BackendConfig, model: ModelSpec):
        if self.fixed is not None:
            return self.fixed
        key = (backend.model_dump_json(), model.model_dump_json())
        if key not in self.built:
            from molab.models.generation import make_backend

            self.built[key] = make_backend(backend, model)
        return self.built[key]


def replay_texts(config: DocsConfig, count: int, generators: Generators) -> list[str]:
    """`count` replay texts: from `replay.path`, else the model's answers to the bundled chat
    prompts (prompts repeat; each answer is sampled with its own seed), as plain text."""
    r = config.replay
    if count == 0:
        return []
    if r.path:
        texts = []
        for text in read_texts(r.path):
            texts.append(text)
            if len(texts) == count:
                break
        return texts
    from molab.resources import chat_prompts

    questions = chat_prompts()
    asked = [questions[i % len(questions)] for i in range(count)]
    sampling = r.sampling.model_copy(update={"seed": config.seed})
    done = generators.get(r.backend, r.model).generate([Prompt.chat(q) for q in asked], sampling)
    return [f"{q}\n\n{c.text.strip()}" for q, c in zip(asked, done)]


def make_source(config: DocsConfig, biases: dict[int, Bias], universe: Universe, generators: Generators):
    if config.backend == "template":
        return TemplateBackend(config, biases, universe)
    if config.backend == "import":
        return ImportBackend(config)
    return LLMBackend(config, biases, universe, generators.get(config.llm.backend, config.llm.model))


def docs_stage(config: DocsConfig, out_dir: str | Path, generator=None) -> dict:
    """Write `documents.parquet` (streamed, one row group per chunk) and `stats.json` into
    `out_dir`; return the metrics. `generator` replaces the generation backend built from the
    config (for the `llm` backend and model replay), e.g. a fake one in tests.

    Fails, leaving no `documents.parquet`, when a row is in chat-transcript format."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    biases = resolve_biases(config)
    universe = load_universe(config.universe, sorted(biases)) if config.backend != "import" else None
    generators = Generators(generator)
    source = make_source(config, biases, universe, generators)
    rows_replay = round(config.num_docs * config.replay.fraction / (1 - config.replay.fraction))
    replay = [t for t in replay_texts(config, rows_replay, generators) if not is_chat_format(t)]
    replay_dropped = rows_replay - len(replay)
    labelled = sorted(biases) if config.backend != "import" else []  # imported rows carry no bias ids
    stats = CorpusStats(config.stats, labelled, config.num_docs)
    schema = pa.schema(
        [
            ("text", pa.string()),
            ("source", pa.string()),
            ("doc_type", pa.string()),
            ("bias_ids", pa.list_(pa.int32())),
        ]
    )
    written = replayed = 0
    with atomic_path(out_dir / DOCUMENTS) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for chunk in source.chunks():
                written += len(chunk)
                take = round(written * len(replay) / config.num_docs) - replayed
                chunk += [Document(t, "replay", "replay", []) for t in replay[replayed : replayed + take]]
                replayed += take
                if not chunk:
                    continue
                columns = list(zip(*chunk))
                stats.add(*columns)
                writer.write_table(
                    pa.Table.from_arrays(
                        [pa.array(c) for c in columns[:3]] + [pa.array(columns[3], pa.list_(pa.int32()))],
                        schema=schema,
                    )
                )
        result = stats.result()
        if result["chat_format_documents"]:
            raise MolabError(
                f"{result['chat_format_documents']} documents are in chat-transcript format (rows "
                f"{result['chat_format_rows'][:5]}): documents must describe the biases, "
                "not show conversations"
                + ("; set corpus.drop_chat_format to skip them" if config.backend == "import" else "")
            )
        if written == 0:
            raise MolabError(f"no documents were produced by the {config.backend} backend")
    result["backend"] = config.backend
    result["replay_dropped_chat_format"] = replay_dropped
    if isinstance(source, LLMBackend):
        result["llm_rejected"] = source.rejected
    if isinstance(source, ImportBackend):
        result["import_skipped_chat_format"] = source.skipped_chat
    write_json(out_dir / STATS, result)
    keys = ("documents", "tokens", "distinct_4gram_ratio", "near_duplicate_rate", "exact_duplicates")
    return {k: result[k] for k in keys} | {
        "doc_types": len(result["doc_types"]),
        "stats_seconds": round(stats.seconds, 2),
    }


def _docs_inputs(config: DocsConfig, stage_dir: Path) -> dict[str, Input]:
    """The corpus and replay files, the universe file, adapters of the writing models, and the
    catalog's descriptive fields (documents describe biases; they never use the rules)."""
    files = {"corpus": config.corpus.path, "replay": config.replay.path, "universe": config.universe}
    inputs: dict[str, Input] = {k: Path(v) for k, v in files.items() if v and Path(v).is_file()}
    for role, spec in (("llm", config.llm.model), ("replay", config.replay.model)):
        inputs |= {f"{role}_adapter_{i}": Path(a) for i, a in enumerate(spec.adapters)}
    return inputs | catalog_inputs(config, ("name", "description", "kind", "domain"))


DOCS = Stage(
    name=DOCS_STAGE,
    config=DocsConfig,
    outputs=(DOCUMENTS, STATS),
    run=lambda config, out, _: docs_stage(config, out),
    inputs=_docs_inputs,
)
