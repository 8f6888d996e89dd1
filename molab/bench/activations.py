"""Activation cache benchmark: caching against a plain forward, reading against a dictionary step.

Run: `make bench` (or `molab bench activations`). One run, on one model and one corpus
(template documents of the `docs` stage):

- writing: (a) plain `model(input_ids, attention_mask)` under `torch.no_grad()` over the very
  batches the cache forwards (full model and LM head, no hooks); (b) `cache_activations` end to
  end (tokenizing, the forward stopped after the cached point, copying the real tokens out,
  writing and hashing the shards and the index) for a middle layer's `resid_post`; (c) the
  same for the last layer's, where only the final norm and LM head are skipped; (d) the
  decoder without the LM head (`model.get_decoder()`), the same layers as (c), so (d)/(c) is
  the cost of capturing and writing alone. Rates are stored tokens per second, the best of
  `repeats` runs of each side (noise only ever slows a run); a ratio is the median over the
  repeats of one side's time over the other's, measured back to back, which a shared
  machine's changing load disturbs least. `threads=1` keeps a shared machine's figures steady
  (as for the training benchmark). Goal: (b) at least 0.9x (a).
- reading: the shuffled reader (float32 batches of `read_batch` tokens, 4 shards per buffer,
  no prefetch) alone; one training step of a small dictionary (a ReLU sparse autoencoder,
  8 x d_model latents, L1 penalty, Adam) alone, on a batch held in memory; and the two
  together, the reader prefetching in its thread, timing how long the loop waits on it.
  Goal: the loop never waits (wait fraction about 0).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from molab.data.documents import DocsConfig, docs_stage
from molab.models.activations import (
    ActivationCache,
    ActivationsConfig,
    batches,
    cache_activations,
    read_corpus,
)
from molab.models.hooks import POINTS, hook_points
from molab.models.loading import ModelSpec, load_model


def dictionary_step(d_model: int, expansion: int = 8, seed: int = 0):
    """A training step of a small ReLU sparse autoencoder: x [batch, d_model] -> loss."""
    g = torch.Generator().manual_seed(seed)
    d_sae = expansion * d_model
    enc = torch.nn.Parameter(torch.randn(d_model, d_sae, generator=g) / d_model**0.5)
    dec = torch.nn.Parameter(torch.randn(d_sae, d_model, generator=g) / d_sae**0.5)
    b_enc, b_dec = torch.nn.Parameter(torch.zeros(d_sae)), torch.nn.Parameter(torch.zeros(d_model))
    opt = torch.optim.Adam([enc, dec, b_enc, b_dec], lr=1e-4)

    def step(x: torch.Tensor) -> float:
        z = torch.relu((x - b_dec) @ enc + b_enc)  # [batch, d_sae]
        loss = (z @ dec + b_dec - x).pow(2).sum(-1).mean() + 1e-3 * z.abs().sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def bench_activations(
    model_spec: str = "smollm2-135m",
    num_docs: int = 12,
    layer: int | None = None,
    batch_size: int = 8,
    repeats: int = 3,
    read_batch: int = 1024,
    read_tokens: int = 500_000,
    train_steps: int = 20,
    threads: int | None = None,
    log=print,
) -> dict:
    """Measure writing and reading a cache of one layer over `num_docs` template documents."""
    if threads:
        torch.set_num_threads(threads)
    loaded = load_model(ModelSpec(name=model_spec))
    layers = len(hook_points(loaded.model)) // len(POINTS)
    middle = layers // 2 if layer is None else layer
    with tempfile.TemporaryDirectory(prefix="molab-bench-activations-") as tmp:
        tmp = Path(tmp)
        docs_stage(DocsConfig(num_docs=num_docs, seed=0), tmp / "docs")
        corpus = tmp / "docs" / "documents.parquet"

        def settings(point: str, **kw) -> ActivationsConfig:
            spec = ModelSpec(name=model_spec)
            cfg = dict(model=spec, corpus=corpus, points=[point], batch_size=batch_size, max_length=512)
            return ActivationsConfig(**cfg | kw)

        mid_point, last_point = f"layers.{middle}.resid_post", f"layers.{layers - 1}.resid_post"
        stats: Counter = Counter()
        plan = list(batches(loaded.tokenizer, read_corpus(corpus), settings(mid_point), stats))
        tokens = stats["tokens"]

        def forward(module) -> float:
            start = time.perf_counter()
            with torch.no_grad():
                for b in plan:
                    module(input_ids=b.ids.to(loaded.device), attention_mask=b.mask.to(loaded.device))
            return time.perf_counter() - start

        def cached(point: str, name: str) -> float:
            start = time.perf_counter()
            cache_activations(
                settings(point), tmp / name, tmp / f"{name}.work", loaded=loaded, progress=False
            )
            return time.perf_counter() - start

        forward(loaded.model)  # warm-up
        times: dict[str, list[float]] = {"plain": [], "decoder": [], "middle": [], "last": []}
        for r in range(repeats):
            times["plain"].append(forward(loaded.model))
            times["decoder"].append(forward(loaded.model.get_decoder()))
            times["middle"].append(cached(mid_point, f"mid{r}"))
            times["last"].append(cached(last_point, f"last{r}"))
        rates = {k: round(tokens / min(v), 1) for k, v in times.items()}

        def ratio(base: str, side: str) -> float:
            return round(statistics.median(a / b for a, b in zip(times[base], times[side])), 2)

        log(
            f"{tokens} tokens, {len(plan)} batches, tokens/s: plain forward {rates['plain']}, decoder alone "
            f"{rates['decoder']}, cache {mid_point} {rates['middle']}, cache {last_point} {rates['last']}"
        )

        shard = -(-tokens // 8)
        cache_activations(
            settings(mid_point, shard_tokens=shard),
            tmp / "read",
            tmp / "read.work",
            loaded=loaded,
            progress=False,
        )
        r = _bench_reading(ActivationCache(tmp / "read"), mid_point, read_batch, read_tokens, train_steps)
        log(
            f"reader {r['reader_tokens_per_s']} tok/s; dictionary step {r['train_tokens_per_s']} tok/s "
            f"alone, {r['fed_tokens_per_s']} fed by the reader (waiting {r['wait_fraction']:.1%})"
        )
    return {
        "model": model_spec,
        "threads": torch.get_num_threads(),
        "device": str(loaded.device),
        "documents": num_docs,
        "tokens": tokens,
        "batches": len(plan),
        "batch_size": batch_size,
        "stored_dtype": "bfloat16",
        "point_middle": mid_point,
        "point_last": last_point,
        "plain_forward_tokens_per_s": rates["plain"],
        "decoder_forward_tokens_per_s": rates["decoder"],
        "cache_middle_tokens_per_s": rates["middle"],
        "cache_last_tokens_per_s": rates["last"],
        "ratio_middle": ratio("plain", "middle"),
        "ratio_last": ratio("plain", "last"),
        "ratio_last_to_decoder": ratio("decoder", "last"),
        "seconds": {k: [round(s, 2) for s in v] for k, v in times.items()},
        **r,
    }


def _bench_reading(cache: ActivationCache, point: str, batch: int, read_tokens: int, steps: int) -> dict:
    """Reader alone, dictionary step alone, and the step fed by the prefetching reader."""
    read, start = 0, time.perf_counter()
    for x in cache.batches(point, batch, epochs=None, drop_last=True):
        read += len(x)
        if read >= read_tokens:
            break
    reader_rate = read / (time.perf_counter() - start)

    step = dictionary_step(cache.d_model)
    x = next(iter(cache.batches(point, batch)))
    step(x)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step(x)
    train_rate = steps * batch / (time.perf_counter() - start)

    source, waited = cache.batches(point, batch, epochs=None, drop_last=True, prefetch=4), 0.0
    step(next(source))  # the thread starts and fills its queue
    start = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        x = next(source)
        waited += time.perf_counter() - t
        step(x)
    total = time.perf_counter() - start
    source.close()
    return {
        "read_batch": batch,
        "shards": len(cache.shards(point)),
        "reader_tokens_per_s": round(reader_rate, 1),
        "train_tokens_per_s": round(train_rate, 1),
        "fed_tokens_per_s": round(steps * batch / total, 1),
        "wait_fraction": round(waited / total, 4),
        "reader_over_train": round(reader_rate / train_rate, 1),
    }
