"""Benchmark of the template documents stage: documents per second and peak memory.

The target (issue 3): 100,000 template documents in at most 2 minutes on 2 CPU cores, with
flat memory (documents are streamed to Parquet chunk by chunk; statistics use bounded samples).
The timing covers the whole stage: generation, token counting, statistics and the Parquet file.
"""

from __future__ import annotations

import resource
import tempfile
import time

from molab.data.documents import DocsConfig, docs_stage


def bench_docs(num_docs: int = 100_000, seed: int = 0) -> dict:
    """Run the `docs` stage with the template backend into a temporary directory."""
    config = DocsConfig(num_docs=num_docs, seed=seed)
    with tempfile.TemporaryDirectory(prefix="molab-bench-docs-") as out:
        start = time.perf_counter()
        metrics = docs_stage(config, out)
        seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "num_docs": num_docs,
        "seconds": round(seconds, 2),
        "docs_per_s": round(num_docs / seconds, 1),
        "stats_seconds": metrics["stats_seconds"],
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "tokens": metrics["tokens"],
        "distinct_4gram_ratio": metrics["distinct_4gram_ratio"],
        "near_duplicate_rate": metrics["near_duplicate_rate"],
    }
