"""SAE training benchmark: tokens per second of molab's trainer, streamed from a cache on disk.

Run: `molab bench sae` (defaults: the default model's width 576, 4096 latents, k = 32, 2 torch
threads, BatchTopK and TopK). The cache holds random activations (the speed of a step does not
depend on their values) in molab's cache layout, in float32 shards of 16,384 tokens, read by the
cache's shuffled reader with prefetching, exactly as `molab audit sae train` reads them. Each
architecture is timed after a warm-up step; the figure is training tokens over wall time,
reading included. SAELens is not compared here: its 6.x releases pin TransformerLens < 4,
which needs transformers < 5, so it cannot share molab's environment (see docs/benchmarks.md).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from molab.audit.sae_train import SAETrainConfig, Trainer, init_sae
from molab.files import write_json
from molab.models.activations import FORMAT, INDEX, TOKEN_FIELDS, ActivationCache


def synthetic_cache(
    path: Path,
    point: str,
    activations: torch.Tensor,
    *,
    shard_tokens: int,
    fields: dict | None = None,
    **index,
) -> ActivationCache:
    """A complete cache of given activations [n, d_model] at `point` (float32), in molab's layout;
    per-token `fields` default to token id 0, one document per shard, positions counting, no
    assistant tokens; `index` adds or overrides index entries (model, corpus, ...)."""
    from safetensors.torch import save_file

    n, d = activations.shape
    fields = dict(fields or {})
    fields.setdefault("token_ids", torch.zeros(n, dtype=torch.int32))
    fields.setdefault("doc_ids", torch.arange(n, dtype=torch.int32) // shard_tokens)
    fields.setdefault("positions", torch.arange(n, dtype=torch.int32) % shard_tokens)
    fields.setdefault("assistant", torch.zeros(n, dtype=torch.bool))
    shards = []
    (path / point).mkdir(parents=True)
    for k, lo in enumerate(range(0, n, shard_tokens)):
        hi = min(n, lo + shard_tokens)
        tensors = {"activations": activations[lo:hi].float().contiguous()}
        tensors |= {f: fields[f][lo:hi].to(t).contiguous() for f, t in TOKEN_FIELDS.items()}
        rel = f"{point}/{k:05d}.safetensors"
        save_file(tensors, path / rel)
        shards.append({"path": rel, "tokens": hi - lo, "sha256": ""})
    write_json(
        path / INDEX,
        {
            "format": FORMAT,
            "status": "complete",
            "model": {"name": "synthetic", "adapters": [], "merge_adapters": False},
            "corpus": "synthetic.jsonl",
            "corpus_sha256": "",
            "points": [point],
            "dtype": "float32",
            "d_model": d,
            "tokens": n,
            "skip_bos": False,
            "bos_token_id": None,
            "shards": {point: shards},
        }
        | index,
    )
    return ActivationCache(path)


def bench_sae(
    d_model: int = 576, d_sae: int = 4096, k: int = 32, tokens: int = 65536, threads: int = 2, log=print
) -> dict:
    """Tokens per second of BatchTopK and TopK training steps read from a random cache."""
    torch.set_num_threads(threads)
    point = "layers.15.resid_post"
    batch = 4096
    result = {"d_model": d_model, "d_sae": d_sae, "k": k, "batch_size": batch, "threads": threads}
    with tempfile.TemporaryDirectory(prefix="molab-bench-sae-") as tmp:
        acts = torch.randn(tokens + batch, d_model, generator=torch.Generator().manual_seed(0))
        cache = synthetic_cache(Path(tmp) / "cache", point, acts, shard_tokens=16384)
        for arch in ("batchtopk", "topk"):
            cfg = SAETrainConfig(cache=cache.path, architecture=arch, k=k, d_sae=d_sae, batch_size=batch)
            trainer = Trainer(init_sae(d_model, cfg, acts[:batch], point), cfg)
            stream = cache.batches(point, batch, epochs=None, drop_last=True, prefetch=2)
            trainer.step(next(stream))  # warm-up
            seen, start = 0, time.perf_counter()
            for x in stream:
                trainer.step(x)
                seen += len(x)
                if seen >= tokens:
                    break
            stream.close()
            rate = seen / (time.perf_counter() - start)
            result[f"{arch}_tokens_per_second"] = round(rate, 1)
            log(f"{arch}: {rate:,.0f} tokens/s")
    return result
