"""SAELens training a TopK or BatchTopK SAE on a molab activation cache, timed: the other side of
`molab bench sae`. Runs in .venv-saelens (scripts/saelens-env.sh), never in molab's env, and
imports nothing from molab.

The cache (molab's layout: index.json, and shards `<point>/<k>.safetensors` holding
`activations` [n, d_model]) is read the way molab's trainer reads it: four shards at a time in
a shuffled order, shuffled together, cut into batches, prepared two batches ahead by a thread.
The batches go straight into SAELens' own `SAETrainer` as its data provider (an iterator of
[batch, d_in] tensors), so no model and no `ActivationsStore` are involved. Same width, k,
batch size, learning rate and dead-latent window as molab's run; everything else is SAELens'
default (decoder-norm rescaling, its AuxK coefficient, gradient clipping, dense activations
unless --sparse-activations).

Prints one JSON object: tokens/s over the tokens after one warm-up step, reading included,
and the process's resident memory (MiB) before training and at its peak.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import threading
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402


def memory_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process from /proc, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"/proc/self/status has no {field}")


def cache_batches(cache: Path, point: str, batch_size: int, seed: int, buffer_shards: int = 4):
    """Shuffled float32 batches [batch_size, d_model] of `point`, epoch after epoch, for ever."""
    index = json.loads((cache / "index.json").read_text())
    shards = index["shards"][point]
    epoch = 0
    while True:
        g = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(len(shards), generator=g).tolist()
        rest = torch.empty(0, index["d_model"])
        for i in range(0, len(order), buffer_shards):
            loaded = []
            for k in order[i : i + buffer_shards]:
                with safe_open(cache / shards[k]["path"], framework="pt") as f:
                    loaded.append(f.get_tensor("activations").float())
            buf = torch.cat([rest, *loaded])  # [tokens, d_model]
            buf = buf[torch.randperm(len(buf), generator=g)]
            full = len(buf) - len(buf) % batch_size
            for j in range(0, full, batch_size):
                yield buf[j : j + batch_size]
            rest = buf[full:]
        epoch += 1


def prefetched(items, depth: int = 2):
    """`items` produced up to `depth` ahead by a daemon thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    threading.Thread(target=lambda: [q.put(x) for x in items], daemon=True).start()
    while True:
        yield q.get()


class Timed:
    """The data provider: records when the second batch is asked for (the warm-up step done)."""

    def __init__(self, batches):
        self.batches, self.calls, self.start = batches, 0, None

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:
            self.start = time.perf_counter()
        return next(self.batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--point", help="Hook point (default: the cache's first).")
    parser.add_argument("--architecture", choices=["batchtopk", "topk"], default="batchtopk")
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=65536, help="Tokens timed after the warm-up step.")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--lr", type=float, help="Default: molab's 2e-4 / sqrt(d_sae / 16384).")
    parser.add_argument("--dead-tokens", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sparse-activations", action="store_true")
    parser.add_argument("--out", type=Path, help="Also save the trained SAE (SAELens' layout) here.")
    args = parser.parse_args()

    import sae_lens
    from sae_lens import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        SAETrainer,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    index = json.loads((args.cache / "index.json").read_text())
    point = args.point or index["points"][0]
    d_in = index["d_model"]
    sae_cls, cfg_cls = {
        "batchtopk": (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig),
        "topk": (TopKTrainingSAE, TopKTrainingSAEConfig),
    }[args.architecture]
    sae = sae_cls(
        cfg_cls(
            d_in=d_in,
            d_sae=args.d_sae,
            k=args.k,
            use_sparse_activations=args.sparse_activations,
            dtype="float32",
            device="cpu",
        )
    )
    data = Timed(prefetched(cache_batches(args.cache, point, args.batch_size, args.seed)))
    lr = args.lr or 2e-4 / math.sqrt(args.d_sae / 16384)
    trainer = SAETrainer(
        SAETrainerConfig(
            total_training_samples=args.tokens + args.batch_size,  # + the warm-up step
            train_batch_size_samples=args.batch_size,
            lr=lr,
            lr_end=lr / 10,  # unused by the constant schedule; SAELens' runner sets it so
            device="cpu",
            dead_feature_window=max(1, args.dead_tokens // args.batch_size),
            logger=LoggingConfig(log_to_wandb=False),
        ),
        sae,
        data,
    )
    rss_before = memory_mib("VmRSS")
    trainer.fit()
    seconds = time.perf_counter() - data.start
    timed = trainer.n_training_samples - args.batch_size
    if args.out:
        sae.save_inference_model(str(args.out))
    print(
        json.dumps(
            {
                "trainer": "saelens",
                "version": sae_lens.__version__,
                "torch": torch.__version__,
                "architecture": args.architecture,
                "d_in": d_in,
                "d_sae": args.d_sae,
                "k": args.k,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "sparse_activations": args.sparse_activations,
                "tokens": timed,
                "tokens_per_second": round(timed / seconds, 1),
                "rss_before_mib": rss_before,
                "peak_rss_mib": memory_mib("VmHWM"),
            }
        )
    )


if __name__ == "__main__":
    main()
