"""Generation benchmark: molab's `hf` backend against plain `model.generate`.

Run: `make bench` (or `molab bench generate`). One run measures, on the same prompts and
model: the machine's float32 matmul peak, plain `model.generate` with one static batch, and
molab's backend; it prints tokens/s, their ratio and the fraction of the peak, and checks
that greedy decoding gives identical outputs. Only ratios measured in one run are comparable
across machines.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from molab.models.generation import HFBackendConfig, Prompt, SamplingConfig


@dataclass
class GenerateBench:
    """Results of `bench_generate`; rates in generated tokens per second."""

    model: str
    prompts: int
    max_new_tokens: int
    batch_size: int
    threads: int
    peak_gflops: float
    plain_tokens_per_s: float
    molab_tokens_per_s: float
    speedup: float
    molab_fraction_of_peak: float
    plain_fraction_of_peak: float
    greedy_identical: int | None
    greedy_compared: int | None

    def as_dict(self) -> dict:
        return asdict(self)


def matmul_peak_gflops(n: int = 2048, reps: int = 8, dtype=torch.float32) -> float:
    """Best observed GFLOP/s of an n x n matrix product (the machine's practical peak)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def flops_per_token(model) -> float:
    """Matmul FLOPs of one decoded token: 2 x (transformer weights + LM head)."""
    body = sum(p.numel() for n, p in model.model.layers.named_parameters() if p.dim() == 2)
    head = model.lm_head.weight.numel()
    return 2.0 * (body + head)


def plain_generate(model, tokenizer, ids: list[list[int]], sampling: SamplingConfig, stop_ids) -> tuple:
    """`model.generate` on one left-padded static batch. Returns (token lists, seconds)."""
    from molab.models.generation.hf_backend import left_pad

    pad = tokenizer.pad_token_id
    batch, mask = left_pad(ids, pad)
    longest = batch.shape[1]
    kwargs = (
        dict(do_sample=False)
        if sampling.greedy
        else dict(
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k or None,
        )
    )
    torch.manual_seed(sampling.seed)
    t = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            input_ids=batch,
            attention_mask=mask,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=sorted(stop_ids),
            pad_token_id=pad,
            **kwargs,
        )
    seconds = time.perf_counter() - t
    tokens = []
    for row in out[:, longest:].tolist():  # up to and including the first stop token
        end = next((i + 1 for i, tok in enumerate(row) if tok in stop_ids), len(row))
        tokens.append(row[:end])
    return tokens, seconds


def bench_generate(
    model_spec: str = "smollm2-135m",
    n_prompts: int = 64,
    max_new_tokens: int = 128,
    batch_size: int = 64,
    seed: int = 0,
    check_greedy: bool = True,
    log=print,
) -> GenerateBench:
    """Measure both generators on `n_prompts` chat prompts with the same sampling settings."""
    from molab.models.generation.hf_backend import HFBackend
    from molab.models.loading import ModelSpec
    from molab.resources import chat_prompts

    peak = matmul_peak_gflops()
    log(f"float32 matmul peak: {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    backend = HFBackend.from_spec(ModelSpec(name=model_spec), HFBackendConfig(batch_size=batch_size))
    texts = (chat_prompts() * (n_prompts // 64 + 1))[:n_prompts]
    ids = backend.encode([Prompt.chat(t) for t in texts])
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0, top_p=0.95, seed=seed)
    flops = flops_per_token(backend.model)

    plain_tokens, plain_s = plain_generate(backend.model, backend.tokenizer, ids, sampling, backend.stop_ids)
    plain_rate = sum(map(len, plain_tokens)) / plain_s
    log(f"plain model.generate, batch {len(ids)}: {plain_rate:.1f} tokens/s")

    t = time.perf_counter()
    done = backend.generate_ids(ids, sampling, progress=False)
    molab_rate = sum(c.num_tokens for c in done) / (time.perf_counter() - t)
    log(f"molab hf backend:        {molab_rate:.1f} tokens/s")

    same = compared = None
    if check_greedy:
        greedy = sampling.model_copy(update={"temperature": 0.0})
        want, _ = plain_generate(backend.model, backend.tokenizer, ids, greedy, backend.stop_ids)
        got = backend.generate_ids(ids, greedy, progress=False)
        texts_plain = [backend.tokenizer.decode(w, skip_special_tokens=True) for w in want]
        same = sum(a == g.text for a, g in zip(texts_plain, got))
        compared = len(ids)
        log(f"greedy outputs identical: {same}/{compared}")
    return GenerateBench(
        model=model_spec,
        prompts=len(ids),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        threads=torch.get_num_threads(),
        peak_gflops=round(peak, 1),
        plain_tokens_per_s=round(plain_rate, 1),
        molab_tokens_per_s=round(molab_rate, 1),
        speedup=round(molab_rate / plain_rate, 2),
        molab_fraction_of_peak=round(molab_rate * flops / 1e9 / peak, 3),
        plain_fraction_of_peak=round(plain_rate * flops / 1e9 / peak, 3),
        greedy_identical=same,
        greedy_compared=compared,
    )
