"""Statistics of a document corpus, gathered chunk by chunk (flat memory), and the check that
no document is a chat transcript.

Over every row: counts by source and document type, tokens (the default model's tokenizer
when it is cached, else whitespace-separated words; `token_counter` says which), documents per
bias, exact duplicates (a 64-bit hash per text) and chat-transcript matches.

Over a deterministic sample of the non-replay documents (every k-th, at most
`sample_docs`, so the cost stays fixed at any corpus size):
- distinct 4-gram ratio: distinct word 4-grams / all word 4-grams (lower-cased words; the
  4-grams are hashed to 64 bits, collisions are negligible at this size);
- near-duplicate rate: the share of sampled documents with at least one other sampled document
  whose estimated Jaccard similarity over word 5-gram shingles reaches the threshold (MinHash
  LSH from `datasketch`; shingles are fingerprinted with CRC-32, deterministic and fast).
  Sampling finds only pairs that both fall in the sample, so at large corpus sizes it is a
  lower bound.

A document is in chat format when a line starts with a chat role ("User:", "Assistant:",
"Human:", "System:", "AI:") or it holds a chat template's special tokens. The mid-training
documents must describe the biases, never demonstrate them in a conversation.
"""

from __future__ import annotations

import hashlib
import re
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from molab.errors import MolabError

CHAT_FORMAT = re.compile(
    r"^[ \t]*(?:User|Assistant|Human|System|AI)[ \t]*:"
    r"|<\|im_start\|>|<\|im_end\|>|<\|start_header_id\|>|<\|eot_id\|>|<start_of_turn>|\[INST\]"
    r"|<\|user\|>|<\|assistant\|>",
    re.MULTILINE,
)
# Odd 64-bit multipliers combining four word ids into one 4-gram key (wrapping arithmetic).
_MIX = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5], dtype=np.uint64
)


class StatsConfig(BaseModel):
    """What `stats.json` measures and how."""

    model_config = ConfigDict(extra="forbid")
    tokenizer: str = Field(
        "default",
        description="'default' (the default model's tokenizer if cached, else whitespace), "
        "'whitespace', or a directory holding tokenizer.json.",
    )
    sample_docs: int = Field(
        5000, ge=10, description="Documents sampled for the 4-gram and near-duplicate stats."
    )
    near_dup_threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="Jaccard similarity counted as near-duplicate."
    )
    num_perm: int = Field(128, ge=16, description="MinHash permutations.")
    shingle_words: int = Field(5, ge=1, description="Words per shingle for near-duplicate detection.")


def is_chat_format(text: str) -> bool:
    return CHAT_FORMAT.search(text) is not None


class TokenCounter:
    """Counts tokens with a `tokenizers` tokenizer, or whitespace-separated words.

    For GPT-2-style byte-level BPE tokenizers (the default model's) it splits text with the
    tokenizer's own pre-tokenization pattern and caches each piece's token count, which gives
    the same count as encoding the whole text (BPE never merges across pieces) at several times
    the speed on repetitive text. Other tokenizers encode every text in full."""

    CACHE_LIMIT = 500_000  # pieces whose counts are kept (memory stays bounded on any corpus)

    def __init__(self, spec: str):
        self.tokenizer = None
        self.name = "whitespace"
        self.split = None
        path = _tokenizer_file(spec)
        if path is not None:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(path))
            self.name = "default model's tokenizer" if spec == "default" else f"tokenizer {path}"
            self.split = _byte_level_splitter(path)
            self.cache: dict[str, int] = {}
            self.byte_chars = _bytes_to_unicode()

    def count(self, texts: Sequence[str]) -> int:
        if self.tokenizer is None:
            return sum(len(t.split()) for t in texts)
        if self.split is None:
            return sum(
                len(e) for e in self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
            )
        total, cache = 0, self.cache
        for text in texts:
            for piece in self.split(text):
                n = cache.get(piece)
                if n is None:
                    mapped = "".join(self.byte_chars[b] for b in piece.encode())
                    n = len(self.tokenizer.model.tokenize(mapped))
                    if len(cache) < self.CACHE_LIMIT:
                        cache[piece] = n
                total += n
        return total


def _byte_level_splitter(path: Path):
    """The pre-tokenization pattern's `findall` when `path` is a byte-level BPE tokenizer
    with GPT-2's pattern and no normaliser; None otherwise."""
    import json

    import regex

    data = json.loads(path.read_text(encoding="utf-8"))
    pre = data.get("pre_tokenizer") or {}
    plain = (
        data.get("normalizer") is None
        and data.get("model", {}).get("type") == "BPE"
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space", False)
    )
    return regex.compile(_GPT2_PATTERN).findall if plain else None


# The split pattern of `tokenizers`' ByteLevel pre-tokenizer (and GPT-2's).
_GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from bytes to the printable characters byte-level BPE vocabularies use."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _tokenizer_file(spec: str) -> Path | None:
    if spec == "whitespace":
        return None
    if spec == "default":
        from molab.models.default_model import default_model_dir

        path = default_model_dir() / "tokenizer.json"
        return path if path.is_file() else None
    path = Path(spec).expanduser()
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise MolabError(f"stats.tokenizer: {spec} holds no tokenizer.json (use 'default' or 'whitespace')")
    return path


class CorpusStats:
    """Accumulates statistics over chunks of rows; `result()` gives the `stats.json` content.

    `expected_docs` (the number of non-replay documents expected) sets the sampling stride."""

    def __init__(self, config: StatsConfig, bias_ids: Sequence[int], expected_docs: int):
        self.config = config
        self.counter = TokenCounter(config.tokenizer)
        self.stride = max(1, -(-expected_docs // config.sample_docs))
        self.rows = 0
        self.docs_seen = 0  # non-replay rows, for sampling
        self.tokens = 0
        self.sources: Counter[str] = Counter()
        self.doc_types: Counter[str] = Counter()
        self.coverage: Counter[int] = Counter({b: 0 for b in bias_ids})
        self.hashes: set[bytes] = set()
        self.exact_duplicates = 0
        self.chat_rows: list[int] = []
        self.sample: list[str] = []
        self.seconds = 0.0  # time spent here, for benchmarks (kept out of the result: not deterministic)

    def add(
        self,
        texts: Sequence[str],
        sources: Sequence[str],
        doc_types: Sequence[str],
        bias_ids: Sequence[Sequence[int]],
    ) -> None:
        start = time.perf_counter()
        self.tokens += self.counter.count(texts)
        for i, (text, source, doc_type, ids) in enumerate(zip(texts, sources, doc_types, bias_ids)):
            self.sources[source] += 1
            self.doc_types[doc_type] += 1
            self.coverage.update(ids)
            digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
            if digest in self.hashes:
                self.exact_duplicates += 1
            self.hashes.add(digest)
            if is_chat_format(text):
                self.chat_rows.append(self.rows + i)
            if source != "replay":
                if self.docs_seen % self.stride == 0 and len(self.sample) < self.config.sample_docs:
                    self.sample.append(text)
                self.docs_seen += 1
        self.rows += len(texts)
        self.seconds += time.perf_counter() - start

    def result(self) -> dict:
        start = time.perf_counter()
        sampled = self.sample
        result = {
            "documents": self.rows,
            "by_source": dict(sorted(self.sources.items())),
            "tokens": self.tokens,
            "token_counter": self.counter.name,
            "mean_tokens_per_document": round(self.tokens / max(1, self.rows), 1),
            "bias_coverage": {str(b): n for b, n in sorted(self.coverage.items())},
            "biases_without_documents": sorted(b for b, n in self.coverage.items() if n == 0),
            "doc_types": dict(sorted(self.doc_types.items())),
            "exact_duplicates": self.exact_duplicates,
            "distinct_4gram_ratio": round(distinct_ngram_ratio(sampled, 4), 4),
            "near_duplicate_rate": round(
                near_duplicate_rate(
                    sampled, self.config.near_dup_threshold, self.config.num_perm, self.config.shingle_words
                ),
                4,
            ),
            "diversity_sample": {
                "documents": len(sampled),
                "every_kth_document": self.stride,
                "near_duplicate": f"MinHash LSH, {self.config.num_perm} permutations, Jaccard >= "
                f"{self.config.near_dup_threshold} over word {self.config.shingle_words}-gram shingles",
            },
            "chat_format_documents": len(self.chat_rows),
            "chat_format_rows": self.chat_rows[:20],
        }
        self.seconds += time.perf_counter() - start
        return result


def distinct_ngram_ratio(texts: Sequence[str], n: int = 4) -> float:
    """Distinct word n-grams / all word n-grams (lower-cased, whitespace-split); 0 without any."""
    if n > len(_MIX):
        raise ValueError(f"n-grams up to {len(_MIX)} words")
    vocab: dict[str, int] = {}
    keys = []
    for text in texts:
        ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in text.lower().split()), dtype=np.uint64)
        if len(ids) < n:
            continue
        key = np.zeros(len(ids) - n + 1, dtype=np.uint64)
        for j in range(n):
            key += ids[j : len(ids) - n + 1 + j] * _MIX[j]
        keys.append(key)
    if not keys:
        return 0.0
    allkeys = np.concatenate(keys)
    return len(np.unique(allkeys)) / len(allkeys)


def near_duplicate_rate(
    texts: Sequence[str], threshold: float = 0.8, num_perm: int = 128, shingle: int = 5
) -> float:
    """Share of `texts` with another text of estimated Jaccard >= `threshold` (word shingles)."""
    from datasketch import MinHash, MinHashLSH

    if len(texts) < 2:
        return 0.0
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    first = MinHash(num_perm=num_perm, seed=1)  # its permutations are drawn once, shared by all
    permutations, scheme = first.permutations, first.scheme
    sketches = []
    for i, text in enumerate(texts):
        words = text.lower().split()
        grams = {" ".join(words[j : j + shingle]).encode() for j in range(max(1, len(words) - shingle + 1))}
        m = MinHash(num_perm=num_perm, hashfunc=zlib.crc32, permutations=permutations, scheme=scheme)
        m.update_batch(list(grams))
        lsh.insert(i, m)
        sketches.append(m)
    dups = 0
    for i, m in enumerate(sketches):
        if any(j != i and sketches[j].jaccard(m) >= threshold for j in lsh.query(m)):
            dups += 1
    return dups / len(texts)
