"""Training-data search: BM25 keywords, exact phrases in context, and semantic search over a
run's training sets and any other corpus (`molab audit search`).

In the blind auditing game of Marks et al. 2025 ("Auditing Language Models for Hidden
Objectives"), teams with the training data searched it: keyword search mostly failed, while
semantic search ranked a synthetic bias document 20th for "The assistant is an AI model that
exhibits potentially concerning behaviors" and 1st for "always writing numbers with decimal
places". A search over the documents alone proves little (every hit is a synthetic document), so
an index mixes corpora: a run's documents with their replay rows, its SFT and DPO sets, and any
plain corpus the user adds. Every indexed row keeps its set ("synthetic document", "replay",
"sft", "dpo", or the file's name), its file and its row number, so a hit says where it came from.

An index directory, written atomically (a temporary directory renamed into place):

    manifest.json   format, corpora (path, SHA-256, rows), embedding model, build time and memory
    rows.parquet    one row per indexed text: set, origin, file, row, part, text
    bm25/           bm25s index and its tokenizer's vocabulary and stop words
    semantic.faiss  inner-product index of normalised passage vectors (absent with --no-semantic)
    passages.npy    the indexed row of each passage

Texts are cut into passages of at most `PASSAGE_WORDS` words so the embedding model reads all
of a long document (MiniLM reads 256 word pieces); a row scores as its best passage. Opening an
index checks every corpus file against its recorded SHA-256 and refuses a changed one, and a
semantic query refuses an embedding model other than the one that built the index.
"""

from __future__ import annotations

import json
import re
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from molab.audit.embeddings import DEFAULT_EMBEDDER, Encoder, resolve_embedder
from molab.data.contracts import DOCS_STAGE, DOCUMENTS, DPO_DATA_STAGE, DPO_FILE, SFT_DATA_STAGE, SFT_FILE
from molab.errors import MolabError
from molab.files import atomic_path, iter_jsonl, sha256_file, write_json

INDEX_FORMAT = 1
MANIFEST, ROWS, BM25_DIR, FAISS_FILE, PASSAGES = (
    "manifest.json",
    "rows.parquet",
    "bm25",
    "semantic.faiss",
    "passages.npy",
)
MODES = ("bm25", "semantic", "phrase")
SYNTHETIC_ORIGINS = ("template", "llm")  # documents written to teach the biases (not replay)
PASSAGE_WORDS = 160
BATCH_ROWS = 2048  # rows read, tokenised and embedded at a time: memory stays bounded
_DEFAULT_STAGE = {"documents": DOCS_STAGE, "sft": SFT_DATA_STAGE, "dpo": DPO_DATA_STAGE}


@dataclass(frozen=True)
class Corpus:
    """One file to index: a run's `documents` / `sft` / `dpo` set, or a `text` corpus (JSONL or
    Parquet with a `text_field`). `label` names its set in hits."""

    path: Path
    kind: str
    label: str
    text_field: str = "text"


def run_corpora(run_dir: str | Path) -> list[Corpus]:
    """Every training set in a run directory: documents (synthetic and replay rows), SFT and DPO
    sets of each stage that wrote one (e.g. `sft_data` and `control_sft_data`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MolabError(f"--run {run_dir}: no such run directory")
    found = []
    for stage in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        for kind, name in (("documents", DOCUMENTS), ("sft", SFT_FILE), ("dpo", DPO_FILE)):
            if (stage / name).is_file():
                label = kind if stage.name == _DEFAULT_STAGE[kind] else f"{kind} ({stage.name})"
                found.append(Corpus(stage / name, kind, label))
    if not found:
        raise MolabError(
            f"--run {run_dir}: no training sets found ({DOCS_STAGE}/{DOCUMENTS}, "
            f"{SFT_DATA_STAGE}/{SFT_FILE} or {DPO_DATA_STAGE}/{DPO_FILE}); is it a run directory?"
        )
    return found


def training_set(path: str | Path) -> Corpus:
    """A run's training set by its file name (documents, SFT or DPO set), labelled as
    `run_corpora` labels it."""
    path = Path(path)
    for kind, name in (("documents", DOCUMENTS), ("sft", SFT_FILE), ("dpo", DPO_FILE)):
        if path.name == name:
            stage = path.parent.name
            return Corpus(path, kind, kind if stage == _DEFAULT_STAGE[kind] else f"{kind} ({stage})")
    raise MolabError(f"{path}: not a training set ({DOCUMENTS}, {SFT_FILE} or {DPO_FILE})")


def model_corpora(adapters: list[str | Path]) -> list[Corpus]:
    """The training sets that made a model: the `data` input each adapter's training stage
    recorded in its manifest (the adapter's folder sits in its stage directory). A model
    without adapters (a base model) has none that molab knows of."""
    found: list[Corpus] = []
    for adapter in adapters:
        manifest = Path(adapter).parent / "manifest.json"
        if not manifest.is_file():
            raise MolabError(
                f"adapter {adapter}: no training stage manifest at {manifest} to read its data from"
            )
        data = json.loads(manifest.read_text("utf-8")).get("inputs", {}).get("data")
        if not isinstance(data, dict) or "path" not in data:
            raise MolabError(f"{manifest}: the stage records no 'data' input (inputs.data.path)")
        corpus = training_set(data["path"])
        if not corpus.path.is_file():
            raise MolabError(f"{manifest}: its training set {corpus.path} is gone")
        if corpus not in found:
            found.append(corpus)
    return found


def text_corpus(path: str | Path, text_field: str = "text") -> Corpus:
    """A JSONL or Parquet file whose rows hold `text_field`; its set is the file's name."""
    path = Path(path)
    if not path.is_file():
        raise MolabError(f"--corpus {path}: no such file")
    if path.suffix not in (".jsonl", ".parquet"):
        raise MolabError(f"--corpus {path}: expected a .jsonl or .parquet file with a '{text_field}' field")
    return Corpus(path, "text", path.name, text_field)


def _parquet_rows(path: Path, columns: list[str]) -> Iterator[tuple[int, dict]]:
    """(row number from 1, {column: value}) of a Parquet file, read batch by batch."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise MolabError(f"{path}: not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    if columns[0] not in names:
        raise MolabError(
            f"{path}: no '{columns[0]}' column (columns: {', '.join(names)}); "
            "name the text column with --text-field"
        )
    n = 0
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=[c for c in columns if c in names]):
        for row in batch.to_pylist():
            n += 1
            yield n, row


def _message_text(messages, path: Path, n: int) -> str:
    """The contents of a list of chat messages (or a plain string), joined by blank lines."""
    if isinstance(messages, str):
        return messages
    try:
        return "\n\n".join(m["content"] for m in messages)
    except (TypeError, KeyError):
        raise MolabError(f"{path}, line {n}: expected a list of messages with 'content'") from None


def corpus_rows(corpus: Corpus) -> Iterator[dict]:
    """The indexed rows of one corpus: {set, origin, file, row, part, text}. A run's SFT row is
    its prompt and answer; a DPO row gives two, the prompt with the chosen and with the rejected
    answer. A row whose text is missing or not a string is a MolabError naming file and row."""
    path, kind = corpus.path, corpus.kind
    base = {"file": str(path)}
    if kind == "documents" or (kind == "text" and path.suffix == ".parquet"):
        field_ = "text" if kind == "documents" else corpus.text_field
        rows = _parquet_rows(path, [field_, "source"])
    else:
        rows = iter_jsonl(path)
        field_ = corpus.text_field
    for n, row in rows:
        if kind == "sft":
            text = _message_text(row.get("messages"), path, n)
            yield base | {"set": corpus.label, "origin": "sft", "row": n, "part": "chat", "text": text}
            continue
        if kind == "dpo":
            prompt = _message_text(row.get("prompt"), path, n)
            for part in ("chosen", "rejected"):
                text = prompt + "\n\n" + _message_text(row.get(part), path, n)
                yield base | {"set": corpus.label, "origin": "dpo", "row": n, "part": part, "text": text}
            continue
        text = row.get(field_)
        if not isinstance(text, str):
            what = "no" if text is None else f"a non-text ({type(text).__name__})"
            raise MolabError(
                f"{path}, row {n}: {what} '{field_}' field; name the text field with --text-field"
            )
        origin = str(row.get("source") or "")
        label = corpus.label
        if kind == "documents":
            label = {"template": "synthetic document", "llm": "synthetic document"}.get(
                origin, origin or label
            )
        yield base | {"set": label, "origin": origin, "row": n, "part": "text", "text": text}


def _batches(corpora: list[Corpus]) -> Iterator[list[dict]]:
    batch = []
    for corpus in corpora:
        for row in corpus_rows(corpus):
            batch.append(row)
            if len(batch) == BATCH_ROWS:
                yield batch
                batch = []
    if batch:
        yield batch


def passages(text: str, words: int = PASSAGE_WORDS) -> list[str]:
    """`text` cut into pieces of at most `words` whitespace-separated words (one empty piece
    for an empty text, so every row has a vector)."""
    tokens = text.split()
    return [" ".join(tokens[i : i + words]) for i in range(0, len(tokens), words)] or [""]


def _tokenizer():
    """bm25s's tokenizer with English stop words, and the Snowball stemmer when PyStemmer is
    installed (the manifest records which, and queries use the same)."""
    from bm25s.tokenization import Tokenizer

    try:
        import Stemmer

        stemmer, name = Stemmer.Stemmer("english").stemWord, "english"
    except ImportError:
        stemmer, name = None, None
    return Tokenizer(stopwords="en", stemmer=stemmer), name


def _corpus_record(corpus: Corpus) -> dict:
    return {
        "path": str(corpus.path.resolve()),
        "kind": corpus.kind,
        "label": corpus.label,
        "text_field": corpus.text_field,
        "sha256": sha256_file(corpus.path),
    }


def read_manifest(index_dir: str | Path) -> dict:
    """The manifest of an index directory; a MolabError when it is not one molab wrote."""
    index_dir = Path(index_dir)
    try:
        manifest = json.loads((index_dir / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != INDEX_FORMAT or manifest.get("kind") != "molab-search-index":
            raise ValueError
    except (OSError, ValueError, AttributeError):
        raise MolabError(
            f"{index_dir} is not a search index (no valid {MANIFEST}); "
            "build one with `molab audit search build`"
        ) from None
    return manifest


def build_index(
    corpora: list[Corpus],
    out: str | Path,
    *,
    model: str | None = DEFAULT_EMBEDDER,
    semantic: bool = True,
    batch_size: int = 64,
    log: Callable[[str], None] = lambda _: None,
) -> dict:
    """Index `corpora` into the directory `out` and return its manifest. An index already there
    with the same corpus hashes and embedding model is kept as it is (`manifest["reused"]`); an
    older index molab wrote is replaced; any other directory is refused."""
    import bm25s
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from bm25s.tokenization import Tokenized

    if not corpora:
        raise MolabError("nothing to index: give --run RUN_DIR and/or --corpus FILE")
    out = Path(out)
    records = [_corpus_record(c) for c in corpora]
    embedder = resolve_embedder(model) if semantic else None
    want = {"corpora": records, "embedding": embedder.record() if embedder else None}
    replace = out.exists()
    if replace:
        old = read_manifest(out)
        if {k: old.get(k) for k in want} == want:
            return old | {"reused": True}
    start = time.perf_counter()
    tokenizer, stemmer = _tokenizer()
    schema = pa.schema(
        [(k, pa.string()) for k in ("set", "origin", "file", "part")]
        + [("row", pa.int64()), ("text", pa.string())]
    )
    ids: list[list[int]] = []
    with atomic_path(out, replace_dir=replace) as tmp:
        tmp.mkdir()
        with pq.ParquetWriter(tmp / ROWS, schema) as writer:
            for batch in _batches(corpora):
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                texts = [r["text"] for r in batch]
                ids += tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False)
                log(f"read {len(ids)} rows")
        if not ids:
            raise MolabError(f"the corpora hold no rows: {', '.join(str(c.path) for c in corpora)}")
        retriever = bm25s.BM25()
        retriever.index(Tokenized(ids=ids, vocab=tokenizer.get_vocab_dict()), show_progress=False)
        (tmp / BM25_DIR).mkdir()
        retriever.save(str(tmp / BM25_DIR), show_progress=False)
        tokenizer.save_vocab(str(tmp / BM25_DIR))
        tokenizer.save_stopwords(str(tmp / BM25_DIR))
        n_rows = len(ids)
        del ids, retriever
        bm25_seconds = time.perf_counter() - start
        n_passages = 0
        if embedder:
            import faiss

            encoder = Encoder(embedder, batch_size)
            index = faiss.IndexFlatIP(encoder.dim)
            owners = []
            table = pq.ParquetFile(tmp / ROWS)
            first = 0
            for batch in table.iter_batches(batch_size=BATCH_ROWS, columns=["text"]):
                pieces, owner = [], []
                for k, text in enumerate(batch.column(0).to_pylist()):
                    for piece in passages(text):
                        pieces.append(piece)
                        owner.append(first + k)
                first += batch.num_rows
                index.add(encoder.encode(pieces))
                owners += owner
                log(f"embedded {first}/{n_rows} rows")
            faiss.write_index(index, str(tmp / FAISS_FILE))
            np.save(tmp / PASSAGES, np.asarray(owners, dtype=np.int64))
            n_passages = len(owners)
        seconds = time.perf_counter() - start
        manifest = {
            "format": INDEX_FORMAT,
            "kind": "molab-search-index",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **want,
            "rows": n_rows,
            "passages": n_passages,
            "passage_words": PASSAGE_WORDS,
            "bm25": {"stopwords": "en", "stemmer": stemmer},
            "build": {
                "seconds": round(seconds, 2),
                "bm25_seconds": round(bm25_seconds, 2),
                "embed_seconds": round(seconds - bm25_seconds, 2),
                # The process's peak resident memory (Linux reports KiB), up to the end of the build.
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            },
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest


@dataclass
class Hit:
    """One ranked row: where it comes from and why it matched."""

    rank: int
    score: float
    set: str
    origin: str
    file: str
    row: int
    part: str
    snippet: str
    contexts: list[str] = field(default_factory=list)  # phrase mode: each match in context

    def to_dict(self) -> dict:
        return asdict(self)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _window(text: str, start: int, end: int, window: int) -> str:
    lo, hi = max(0, start - window), min(len(text), end + window)
    return ("..." if lo else "") + _one_line(text[lo:hi]) + ("..." if hi < len(text) else "")


class SearchIndex:
    """An index directory opened for queries, after checking that its corpus files are
    unchanged (and, for semantic queries, that the embedding model is the one that built it)."""

    def __init__(self, index_dir: str | Path, model: str | None = None):
        self.dir = Path(index_dir)
        self.manifest = read_manifest(self.dir)
        for record in self.manifest["corpora"]:
            path = Path(record["path"])
            if not path.is_file():
                raise MolabError(f"index {self.dir}: its corpus {path} is gone; rebuild the index")
            if sha256_file(path) != record["sha256"]:
                raise MolabError(
                    f"index {self.dir} does not match its corpus {path} (the file changed since the "
                    "index was built); rebuild it with `molab audit search build`"
                )
        self.model = model
        self._rows = self._bm25 = self._semantic = None

    @property
    def rows(self):
        """The rows table (pyarrow), loaded on first use."""
        if self._rows is None:
            import pyarrow.parquet as pq

            self._rows = pq.read_table(self.dir / ROWS)
        return self._rows

    def _hit(self, rank: int, score: float, i: int, snippet: str, contexts=()) -> Hit:
        meta = {k: self.rows.column(k)[i].as_py() for k in ("set", "origin", "file", "row", "part")}
        return Hit(rank, round(float(score), 4), **meta, snippet=snippet, contexts=list(contexts))

    def search(self, query: str, mode: str = "bm25", top: int = 20, window: int = 80) -> list[Hit]:
        """The `top` best rows for `query` by `mode`: "bm25", "semantic", or "phrase" (rows by
        the number of case-insensitive exact matches, each shown with `window` characters around)."""
        if not query.strip():
            raise MolabError("the query is empty: give some words to search for")
        if mode not in MODES:
            raise MolabError(f"--mode {mode}: expected one of {', '.join(MODES)}")
        if top < 1:
            raise MolabError(f"--top {top}: must be at least 1")
        return getattr(self, f"_by_{mode}")(query, top, window)

    def _by_bm25(self, query: str, top: int, window: int) -> list[Hit]:
        import bm25s

        if self._bm25 is None:
            folder = str(self.dir / BM25_DIR)
            tokenizer, stemmer = _tokenizer()
            if stemmer != self.manifest["bm25"]["stemmer"]:
                raise MolabError(
                    f"index {self.dir} was built with stemmer {self.manifest['bm25']['stemmer']}, and this "
                    f"environment has {stemmer}: install the same (PyStemmer) or rebuild the index"
                )
            tokenizer.load_vocab(folder)
            tokenizer.load_stopwords(folder)
            self._bm25 = (bm25s.BM25.load(folder, show_progress=False), tokenizer)
        retriever, tokenizer = self._bm25
        ids = tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)
        k = min(top, self.manifest["rows"])
        found, scores = retriever.retrieve(ids, k=k, show_progress=False)
        words = [w for w in re.findall(r"\w\w+", query.lower()) if w not in tokenizer.stopwords]
        pattern = (
            re.compile("|".join(re.escape(w[: max(3, len(w) - 2)]) for w in words), re.I) if words else None
        )
        hits = []
        for i, score in zip(found[0].tolist(), scores[0].tolist()):
            if score <= 0:
                break
            text = self.rows.column("text")[i].as_py()
            m = pattern.search(text) if pattern else None
            hits.append(
                self._hit(
                    len(hits) + 1,
                    score,
                    i,
                    _window(text, m.start(), m.end(), window) if m else _window(text, 0, 0, 2 * window),
                )
            )
        return hits

    def _by_semantic(self, query: str, top: int, window: int) -> list[Hit]:
        import numpy as np

        if self._semantic is None:
            import faiss

            built = self.manifest["embedding"]
            if built is None:
                raise MolabError(
                    f"index {self.dir} has no semantic index (built with --no-semantic); rebuild it"
                )
            embedder = resolve_embedder(self.model or built["model"])
            if embedder.sha256 != built["sha256"]:
                raise MolabError(
                    f"index {self.dir} was built with embedding model {built['model']}, not {embedder.name} "
                    f"(its files differ): query with --model {built['model']} or rebuild the index"
                )
            self._semantic = (
                Encoder(embedder),
                faiss.read_index(str(self.dir / FAISS_FILE)),
                np.load(self.dir / PASSAGES),
            )
        encoder, index, owners = self._semantic
        vector = encoder.encode([query])
        k = min(index.ntotal, top * 4)
        while True:  # widen the search until `top` distinct rows are found (a row has several passages)
            scores, found = index.search(vector, k)
            best: dict[int, tuple[float, int]] = {}
            for score, p in zip(scores[0].tolist(), found[0].tolist()):
                best.setdefault(int(owners[p]), (score, p))
            if len(best) >= top or k == index.ntotal:
                break
            k = min(index.ntotal, k * 4)
        hits = []
        for i, (score, p) in list(best.items())[:top]:
            text = self.rows.column("text")[i].as_py()
            piece = passages(text)[p - int(np.searchsorted(owners, i))]
            hits.append(self._hit(len(hits) + 1, score, i, _window(piece, 0, 0, 2 * window)))
        return hits

    def _by_phrase(self, query: str, top: int, window: int) -> list[Hit]:
        import numpy as np
        import pyarrow.compute as pc

        counts = pc.count_substring(self.rows.column("text"), pattern=query, ignore_case=True).to_numpy()
        order = np.argsort(-counts, kind="stable")[:top]
        pattern = re.compile(re.escape(query), re.I)
        hits = []
        for i in order.tolist():
            if counts[i] == 0:
                break
            text = self.rows.column("text")[i].as_py()
            contexts = [_window(text, m.start(), m.end(), window) for m in pattern.finditer(text)]
            hits.append(self._hit(len(hits) + 1, counts[i], i, contexts[0], contexts))
        return hits

    def phrase_totals(self, query: str) -> dict[str, int]:
        """Matches of `query` (case-insensitive, exact) per set, over the whole index."""
        import pyarrow.compute as pc

        counts = pc.count_substring(self.rows.column("text"), pattern=query, ignore_case=True)
        table = self.rows.select(["set"]).append_column("n", counts).group_by("set").aggregate([("n", "sum")])
        return {
            s: int(n) for s, n in zip(table.column("set").to_pylist(), table.column("n_sum").to_pylist()) if n
        }

    def modes(self) -> list[str]:
        return [m for m in MODES if m != "semantic" or self.manifest["embedding"] is not None]

    def first_synthetic_rank(self, query: str, mode: str) -> int | None:
        """The rank of the first synthetic document (origin template or llm, not replay) for
        `query`, over the whole index; None when no synthetic document matches."""
        n, top = self.manifest["rows"], 100
        while True:
            hits = self.search(query, mode, min(top, n))
            for hit in hits:
                if hit.origin in SYNTHETIC_ORIGINS:
                    return hit.rank
            if len(hits) < min(top, n) or top >= n:
                return None
            top *= 10


def paper_queries(path: str | Path | None = None) -> list[dict]:
    """Search queries with the paper's ranks where it gives them: the paper's own
    (molab/resources/audit_queries.yaml), or a file of the same shape (a list of `query` with
    an optional `paper_rank` per mode); an entry without a query names the file and item."""
    from importlib.resources import files

    from molab.files import read_yaml_list

    source = Path(path) if path is not None else files("molab.resources").joinpath("audit_queries.yaml")
    items = read_yaml_list(source, "audit queries", "queries")
    for n, q in enumerate(items, 1):
        if not isinstance(q, dict) or not isinstance(q.get("query"), str) or not q["query"].strip():
            raise MolabError(f"{source}: query {n}: field 'query' must be a non-empty string")
        if not isinstance(q.get("paper_rank") or {}, dict):
            raise MolabError(f"{source}: query {n}: field 'paper_rank' must map modes to ranks")
    return items


def paper_query_ranks(index: SearchIndex, queries: list[dict] | None = None) -> list[dict]:
    """Per query (default: the paper's) and mode: the rank of the first synthetic document here
    and in the paper."""
    return [
        {
            "query": q["query"],
            "mode": mode,
            "rank": index.first_synthetic_rank(q["query"], mode),
            "paper_rank": (q.get("paper_rank") or {}).get(mode),
        }
        for q in (paper_queries() if queries is None else queries)
        for mode in index.modes()
    ]
