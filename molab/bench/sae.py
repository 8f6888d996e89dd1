"""SAE training benchmark: molab's trainer beside SAELens', both streamed from one cache on disk.

Run: `molab bench sae` (defaults: the default model's width 576, 4096 latents, k = 32, 2 torch
threads, batches of 4096, BatchTopK and TopK). The cache holds random activations (the speed of
a step does not depend on their values) in molab's layout, float32 shards of 16,384 tokens.

Each trainer runs in a process of its own, so both are measured the same way: tokens per
second over `tokens` training tokens after one warm-up step, reading included, and the
process's resident memory before training and at its peak (VmRSS and VmHWM from /proc).
- molab: `python -m molab.bench.sae` in molab's environment; its trainer reads the cache with
  the shuffled, prefetching reader `molab audit sae train` uses.
- SAELens: scripts/saelens_train.py in `.venv-saelens` beside molab's source (built by
  scripts/saelens-env.sh), when it exists: SAELens' own `SAETrainer` and TopK/BatchTopK SAE of
  the same width, k, batch size and learning rate, fed the same cache's batches by a reader
  like molab's. SAELens lives in its own environment, with TransformerLens and the pins they bring.
The result has both, and molab's speed and peak memory as ratios of SAELens'.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from molab.audit.sae_train import SAETrainConfig, Trainer, init_sae
from molab.bench import memory_mib
from molab.errors import MolabError
from molab.files import write_json
from molab.models.activations import FORMAT, INDEX, TOKEN_FIELDS, ActivationCache

SOURCE_ROOT = Path(__file__).resolve().parents[2]
SAELENS_PYTHON = SOURCE_ROOT / ".venv-saelens" / "bin" / "python"
SAELENS_SCRIPT = SOURCE_ROOT / "scripts" / "saelens_train.py"
POINT = "layers.15.resid_post"


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


def molab_run(
    cache: Path, point: str, architecture: str, d_sae: int, k: int, tokens: int, batch_size: int, threads: int
) -> dict:
    """Train molab's SAE on `cache` in this process; the figures saelens_train.py reports."""
    torch.set_num_threads(threads)
    view = ActivationCache(cache)
    cfg = SAETrainConfig(cache=cache, architecture=architecture, k=k, d_sae=d_sae, batch_size=batch_size)
    stream = view.batches(point, batch_size, epochs=None, drop_last=True, prefetch=2)
    first = next(stream)
    trainer = Trainer(init_sae(view.d_model, cfg, first, point), cfg)
    rss_before = memory_mib("VmRSS")
    trainer.step(first)  # warm-up
    seen, start = 0, time.perf_counter()
    for x in stream:
        trainer.step(x)
        seen += len(x)
        if seen >= tokens:
            break
    seconds = time.perf_counter() - start
    stream.close()
    return {
        "trainer": "molab",
        "torch": torch.__version__,
        "architecture": architecture,
        "d_in": view.d_model,
        "d_sae": d_sae,
        "k": k,
        "batch_size": batch_size,
        "threads": threads,
        "tokens": seen,
        "tokens_per_second": round(seen / seconds, 1),
        "rss_before_mib": rss_before,
        "peak_rss_mib": memory_mib("VmHWM"),
    }


def run_json(command: list, what: str) -> dict:
    """Run `command`; the JSON object on the last line of its output."""
    run = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    lines = run.stdout.strip().splitlines()
    if run.returncode or not lines:
        tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise MolabError(f"the {what} benchmark process failed (exit {run.returncode}): {tail}")
    return json.loads(lines[-1])


def describe(run: dict) -> str:
    return f"{run['tokens_per_second']:,.0f} tokens/s, peak RSS {run['peak_rss_mib']:,.0f} MiB"


def bench_sae(
    d_model: int = 576,
    d_sae: int = 4096,
    k: int = 32,
    tokens: int = 65536,
    threads: int = 2,
    log=print,
    *,
    batch_size: int = 4096,
    architectures: tuple[str, ...] = ("batchtopk", "topk"),
    saelens_python: Path = SAELENS_PYTHON,
) -> dict:
    """molab's and, where its env exists, SAELens' SAE training on one random cache; see above."""
    settings = {"d_sae": d_sae, "k": k, "tokens": tokens, "batch_size": batch_size, "threads": threads}
    result: dict = {"d_model": d_model, **settings}
    with_saelens = saelens_python.exists() and SAELENS_SCRIPT.exists()
    if not with_saelens:
        result["note"] = f"SAELens not compared: no {saelens_python} (bash scripts/saelens-env.sh builds it)"
        log(result["note"])
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in settings.items()]
    with tempfile.TemporaryDirectory(prefix="molab-bench-sae-") as tmp:
        acts = torch.randn(tokens + 2 * batch_size, d_model, generator=torch.Generator().manual_seed(0))
        cache = synthetic_cache(Path(tmp) / "cache", POINT, acts, shard_tokens=16384)
        del acts
        for arch in architectures:
            common = [f"--cache={cache.path}", f"--point={POINT}", f"--architecture={arch}", *flags]
            ours = run_json([sys.executable, "-m", "molab.bench.sae", *common], "molab")
            result[arch] = {"molab": ours}
            log(f"{arch} molab: {describe(ours)}")
            if with_saelens:
                theirs = run_json([saelens_python, SAELENS_SCRIPT, *common], "SAELens")
                result[arch] |= {
                    "saelens": theirs,
                    "speed_ratio": round(ours["tokens_per_second"] / theirs["tokens_per_second"], 3),
                    "peak_memory_ratio": round(ours["peak_rss_mib"] / theirs["peak_rss_mib"], 3),
                }
                ratios = result[arch]
                log(
                    f"{arch} SAELens {theirs['version']}: {describe(theirs)}; molab/SAELens: speed "
                    f"{ratios['speed_ratio']:.2f}x, peak memory {ratios['peak_memory_ratio']:.2f}x"
                )
    return result


def main() -> None:
    """One molab training process of `bench_sae` (the arguments saelens_train.py takes)."""
    parser = argparse.ArgumentParser(description="Time molab's SAE trainer on an activation cache.")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--point", required=True)
    parser.add_argument("--architecture", choices=["batchtopk", "topk"], required=True)
    for name in ("d-sae", "k", "tokens", "batch-size", "threads"):
        parser.add_argument(f"--{name}", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(molab_run(**vars(args))))


if __name__ == "__main__":
    main()
