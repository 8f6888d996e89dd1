"""Transcoder training benchmark (`molab bench transcoders`): tokens per second of one layer's
training step, streamed from a paired cache on disk, against the same step with a dense decoder.

Run: `molab bench transcoders` (defaults: the default model's width 576, 9,216 features (16x),
k = 32, batches of 1,024, 2 torch threads). The cache holds random activations at a layer's
`mlp_in` and `mlp_out` in molab's layout (float32 shards of 16,384 tokens; a step's speed does
not depend on the values), read by the paired shuffled reader `molab circuits train` uses.

Variants, timed one after the other in this process over the same tokens after a warm-up step:
- molab: `TranscoderTrainer.step` (BatchTopK, decoding only the active decoder rows);
- dense decoder (the baseline): the same step with the decoder as a dense product
  acts [n, width] @ W_dec [width, d_model], as a plain PyTorch transcoder would do it.
The ratio molab / dense is the sparse decoder's gain; tokens/s x 1M tokens gives a layer's time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from molab.bench.sae import synthetic_cache
from molab.circuits.train import TranscoderTrainConfig, TranscoderTrainer, init_transcoder
from molab.models.activations import ActivationCache

POINTS = ["layers.0.mlp_in", "layers.0.mlp_out"]


def paired_cache(path: Path, tokens: int, d_model: int, shard_tokens: int = 16384) -> ActivationCache:
    """A complete cache of random activations at both points of layer 0."""
    g = torch.Generator().manual_seed(0)
    synthetic_cache(
        path / "in", POINTS[0], torch.randn(tokens, d_model, generator=g), shard_tokens=shard_tokens
    )
    synthetic_cache(
        path / "out", POINTS[1], torch.randn(tokens, d_model, generator=g), shard_tokens=shard_tokens
    )
    cache_in, cache_out = ActivationCache(path / "in"), ActivationCache(path / "out")
    cache = ActivationCache.__new__(ActivationCache)
    cache.path = path
    cache.index = {**cache_in.index, "points": POINTS}
    cache.index["shards"] = {
        POINTS[0]: [{**e, "path": f"in/{e['path']}"} for e in cache_in.shards(POINTS[0])],
        POINTS[1]: [{**e, "path": f"out/{e['path']}"} for e in cache_out.shards(POINTS[1])],
    }
    return cache


class DenseDecoderTrainer(TranscoderTrainer):
    """The baseline: the same step with a dense decoder product."""

    decode = staticmethod(lambda acts, w: acts @ w)  # [n, width] @ [width, d_model]


def time_steps(step, cache: ActivationCache, batch_size: int, tokens: int) -> dict:
    stream = cache.paired_batches(POINTS, batch_size, epochs=None, drop_last=True, prefetch=2)
    step(*next(stream))  # warm-up
    seen, start = 0, time.perf_counter()
    for x, y in stream:
        step(x, y)
        seen += len(x)
        if seen >= tokens:
            break
    seconds = time.perf_counter() - start
    stream.close()
    return {"tokens": seen, "seconds": round(seconds, 2), "tokens_per_second": round(seen / seconds, 1)}


def bench_transcoders(
    d_model: int = 576,
    d_transcoder: int = 9216,
    k: int = 32,
    tokens: int = 32768,
    batch_size: int = 1024,
    threads: int = 2,
    log=print,
) -> dict:
    """Tokens/s of molab's transcoder step and of the dense-decoder baseline; see above."""
    torch.set_num_threads(threads)
    cfg = TranscoderTrainConfig(corpus=[Path("synthetic.jsonl")], d_transcoder=d_transcoder, k=k, skip=True)
    result: dict = {
        "d_model": d_model,
        "d_transcoder": d_transcoder,
        "k": k,
        "batch_size": batch_size,
        "threads": threads,
        "torch": torch.__version__,
    }
    with tempfile.TemporaryDirectory(prefix="molab-bench-transcoders-") as tmp:
        cache = paired_cache(Path(tmp), tokens + 4 * batch_size, d_model)
        for name in ("molab", "dense_decoder"):
            kind = TranscoderTrainer if name == "molab" else DenseDecoderTrainer
            trainer = kind(init_transcoder(d_model, cfg, 0, torch.zeros(d_model)), cfg, steps=10**6)
            result[name] = time_steps(trainer.step, cache, batch_size, tokens)
            log(f"{name}: {result[name]['tokens_per_second']:,.0f} tokens/s")
    result["speedup_over_dense"] = round(
        result["molab"]["tokens_per_second"] / result["dense_decoder"]["tokens_per_second"], 3
    )
    result["hours_per_layer_at_1m_tokens"] = round(1e6 / result["molab"]["tokens_per_second"] / 3600, 3)
    return result
