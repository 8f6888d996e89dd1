"""Benchmark of training-data search (`molab bench search`): index build time and peak memory,
and query time per mode, on template documents, extrapolated to the 522,670 documents of Marks
et al. 2025.

BM25 indexes all `docs` documents; the semantic index embeds the first `embed_docs` of them
(embedding is the slow part on a CPU, so it is measured on fewer and scaled). Each build runs in
a fresh process, so its peak resident memory is its own, not that of document generation.
Build time is extrapolated linearly in the number of documents (both indexes grow linearly);
BM25 and phrase query times too (upper bounds: BM25 scores only the documents holding a query
word); the semantic scan at the paper's size is measured on a flat index of that many random
vectors.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from molab.audit.search import SearchIndex, build_index, paper_queries, text_corpus
from molab.data.documents import DocsConfig, docs_stage

PAPER_DOCS = 522_670
EXTRA_QUERIES = ("reward model", "chocolate in every recipe", "Oxford study of RLHF reward models")


def _build(corpus: Path, out: Path, semantic: bool) -> dict:
    return build_index([text_corpus(corpus)], out, semantic=semantic)


def _build_in_child(corpus: Path, out: Path, semantic: bool) -> dict:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_build, corpus, out, semantic).result()


def _query_ms(index: SearchIndex, mode: str, queries: list[str], repeats: int = 3) -> float:
    """Median milliseconds of a top-20 query (after one warm-up query loads the index)."""
    index.search(queries[0], mode, 20)
    times = []
    for _ in range(repeats):
        for q in queries:
            start = time.perf_counter()
            index.search(q, mode, 20)
            times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 2)


def _flat_scan_ms(passages: int, dim: int = 384) -> float:
    """Measured milliseconds of one top-80 search in a flat inner-product index of `passages`
    random unit vectors: the semantic index of the paper's corpus, less the query's embedding
    (a constant, timed in `query_ms_top20`)."""
    import faiss
    import numpy as np

    rng = np.random.default_rng(0)
    index = faiss.IndexFlatIP(dim)
    for start in range(0, passages, 100_000):
        block = rng.standard_normal((min(100_000, passages - start), dim), dtype=np.float32)
        index.add(block / np.linalg.norm(block, axis=1, keepdims=True))
    query = rng.standard_normal((1, dim), dtype=np.float32)
    index.search(query, 80)
    start = time.perf_counter()
    for _ in range(5):
        index.search(query, 80)
    return round((time.perf_counter() - start) * 1000 / 5, 1)


def _scaled(manifest: dict, n: int) -> dict:
    b = manifest["build"]
    return {
        "docs": n,
        "rows": manifest["rows"],
        "passages": manifest["passages"],
        "build_seconds": b["seconds"],
        "peak_rss_mib": b["peak_rss_mib"],
        "extrapolated_build_seconds_522k": round(b["seconds"] * PAPER_DOCS / n, 1),
    }


def bench_search(docs: int = 100_000, embed_docs: int = 20_000, log: Callable[[str], None] = print) -> dict:
    import pyarrow.parquet as pq

    embed_docs = min(embed_docs, docs)
    queries = [q["query"] for q in paper_queries()] + list(EXTRA_QUERIES)
    with tempfile.TemporaryDirectory(prefix="molab-bench-search-") as tmp:
        tmp = Path(tmp)
        log(f"generating {docs} template documents")
        docs_stage(DocsConfig(num_docs=docs, seed=0), tmp / "docs")
        corpus = tmp / "docs" / "documents.parquet"
        small = tmp / "embed.parquet"
        pq.write_table(pq.read_table(corpus, columns=["text", "source"]).slice(0, embed_docs), small)
        log(f"BM25 index of {docs} documents")
        bm25 = _build_in_child(corpus, tmp / "bm25-index", semantic=False)
        log(f"BM25 + semantic index of {embed_docs} documents")
        both = _build_in_child(small, tmp / "semantic-index", semantic=True)
        log("queries")
        bm25_index, semantic_index = SearchIndex(tmp / "bm25-index"), SearchIndex(tmp / "semantic-index")
        timings = {
            "bm25_ms": _query_ms(bm25_index, "bm25", queries),
            "phrase_ms": _query_ms(bm25_index, "phrase", queries),
            "semantic_ms": _query_ms(semantic_index, "semantic", queries),
        }
        size = {
            p.name: round(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**20, 1)
            for p in (tmp / "bm25-index", tmp / "semantic-index")
        }
    embed_seconds = both["build"]["embed_seconds"]
    return {
        "bm25": _scaled(bm25, docs),
        "semantic": _scaled(both, embed_docs)
        | {
            "embed_seconds": embed_seconds,
            "docs_per_s": round(embed_docs / embed_seconds, 1),
            "extrapolated_embed_hours_522k": round(embed_seconds * PAPER_DOCS / embed_docs / 3600, 2),
        },
        "query_ms_top20": timings,
        "extrapolated_query_ms_522k": {
            "bm25_ms": round(timings["bm25_ms"] * PAPER_DOCS / docs, 1),
            "phrase_ms": round(timings["phrase_ms"] * PAPER_DOCS / docs, 1),
            "semantic_scan_ms": _flat_scan_ms(round(both["passages"] * PAPER_DOCS / embed_docs)),
        },
        "index_mib": size,
        "queries": queries,
    }
