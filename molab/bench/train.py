"""Training benchmark: molab's mid-training stage against a plain PyTorch loop.

Run: `molab train bench` (also `molab bench train`). One LoRA mid-training workload, measured
twice on the same model and the same packed rows of tokens: (a) a plain loop (forward with
labels, backward, AdamW step) and (b) molab's midtrain stage (TRL's SFTTrainer with packing,
checkpointing and per-step metrics). Both put each optimizer step's `batch_size` rows through
in forward passes of `micro_batch_size` rows (gradient accumulation), which bounds activation
memory. Each runs in a fresh process, so each reports its own peak resident memory. Tokens/s
are the median over the steps after the first (warm-up) one; the fraction of the machine's
float32 matmul peak counts 6N FLOPs per token (N: the model's parameters), as the issue asks,
although a LoRA backward skips the frozen weights' gradients (nearer 4N). On a machine shared
with other work, `threads=1` keeps the measurement steady: with every core's threads in each
small operation, a core taken by another process stalls them all at OpenMP barriers.
"""

from __future__ import annotations

import json
import random
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path


def _documents(n: int, seed: int = 0) -> list[str]:
    """Deterministic stand-in documents (the workload's speed does not depend on the text)."""
    from molab.resources import chat_prompts

    rng = random.Random(seed)
    prompts = chat_prompts()
    return [" ".join(rng.choice(prompts) for _ in range(rng.randint(6, 24))) for _ in range(n)]


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _plain_loop(
    model_name: str, docs_path: str, batch_size: int, micro: int, seq_len: int, steps: int, rank: int
) -> dict:
    """(a): the same rows TRL's 'wrapped' packing makes (documents + EOS, concatenated, cut)."""
    import pyarrow.parquet as pq
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from molab.models.loading import load_tokenizer, resolve_model_dir
    from molab.train.adapters import lora_config
    from molab.train.config import LoraSettings

    model_dir = resolve_model_dir(model_name)
    tokenizer = load_tokenizer(model_dir)
    ids: list[int] = []
    for text in pq.read_table(docs_path).column("text").to_pylist():
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    rows = torch.tensor(ids[: len(ids) // seq_len * seq_len]).view(-1, seq_len)  # (rows, seq_len)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    model = get_peft_model(model, lora_config(LoraSettings(r=rank, alpha=2 * rank)))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    speeds = []
    for step in range(steps + 1):
        batch = rows[step * batch_size : (step + 1) * batch_size]  # (batch, seq_len)
        start = time.perf_counter()
        for part in batch.split(micro):  # (micro, seq_len)
            out = model(input_ids=part, attention_mask=torch.ones_like(part), labels=part, use_cache=False)
            (out.loss * len(part) / len(batch)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        speeds.append(batch.numel() / (time.perf_counter() - start))
    return {
        "tokens_per_s": round(statistics.median(speeds[1:]), 1),
        "peak_rss_mb": _peak_rss_mb(),
        "params": params,
    }


def _molab_trainer(
    model_name: str, docs_path: str, batch_size: int, micro: int, seq_len: int, steps: int, rank: int
) -> dict:
    """(b): the midtrain stage, into a temporary run directory."""
    from molab.models.loading import ModelSpec
    from molab.train.config import LoraSettings, MidtrainConfig
    from molab.train.stages import METRICS_FILE, train_stage

    config = MidtrainConfig(
        model=ModelSpec(name=model_name),
        data=Path(docs_path),
        lora=LoraSettings(r=rank, alpha=2 * rank),
        max_steps=steps + 1,
        batch_size=batch_size,
        micro_batch_size=micro,
        max_length=seq_len,
        lr_scheduler="constant",
        save_steps=10**6,  # only the final checkpoint, after the timed steps
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = train_stage("midtrain", config, Path(tmp) / "bench" / "midtrain")
        rows = [json.loads(line) for line in (result.dir / METRICS_FILE).read_text().splitlines()]
    return {
        "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in rows[1:]), 1),
        "peak_rss_mb": _peak_rss_mb(),
        "padding_fraction": result.manifest["metrics"]["padding_fraction"],
    }


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _in_fresh_process(fn, threads: int | None, *args) -> dict:
    ctx = get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=1, mp_context=ctx, initializer=_set_threads, initargs=(threads,)
    ) as pool:
        return pool.submit(fn, *args).result()


def bench_train(
    model: str = "smollm2-135m",
    batch_size: int = 8,
    micro_batch_size: int = 2,
    seq_len: int = 512,
    steps: int = 3,
    rank: int = 16,
    threads: int | None = None,
    log=print,
) -> dict:
    """Measure both trainers on the same workload; returns the figures as a dict."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from molab.bench.generate import matmul_peak_gflops

    _set_threads(threads)
    peak = matmul_peak_gflops()
    log(f"float32 matmul peak: {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "documents.parquet"
        texts = _documents(batch_size * seq_len * (steps + 2) // 100 + 16)  # ~180 tokens each
        pq.write_table(pa.table({"text": texts}), docs)
        args = (model, str(docs), batch_size, micro_batch_size, seq_len, steps, rank)
        plain = _in_fresh_process(_plain_loop, threads, *args)
        log(f"plain PyTorch loop: {plain['tokens_per_s']} tokens/s, peak RSS {plain['peak_rss_mb']} MB")
        molab = _in_fresh_process(_molab_trainer, threads, *args)
        log(f"molab trainer:      {molab['tokens_per_s']} tokens/s, peak RSS {molab['peak_rss_mb']} MB")
    flops_per_token = 6 * plain["params"]
    return {
        "model": model,
        "lora_rank": rank,
        "batch_size": batch_size,
        "micro_batch_size": micro_batch_size,
        "seq_len": seq_len,
        "timed_steps": steps,
        "threads": torch.get_num_threads(),
        "peak_gflops": round(peak, 1),
        "plain_tokens_per_s": plain["tokens_per_s"],
        "molab_tokens_per_s": molab["tokens_per_s"],
        "ratio": round(molab["tokens_per_s"] / plain["tokens_per_s"], 3),
        "plain_fraction_of_peak": round(plain["tokens_per_s"] * flops_per_token / 1e9 / peak, 3),
        "molab_fraction_of_peak": round(molab["tokens_per_s"] * flops_per_token / 1e9 / peak, 3),
        "plain_peak_rss_mb": plain["peak_rss_mb"],
        "molab_peak_rss_mb": molab["peak_rss_mb"],
        "molab_padding_fraction": molab["padding_fraction"],
    }
