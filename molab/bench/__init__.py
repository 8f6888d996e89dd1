"""Benchmarks (`make bench`, `molab bench ...`): each times molab against a baseline measured in
the same run, so only ratios are compared across machines.

- `generate`: the `hf` backend against plain `model.generate`.
- `docs`: the template documents stage (documents per second, peak memory).
- `eval`: the exploitation evaluation against plain generation on the same prompts.
- `train`: the mid-training stage against a plain PyTorch loop.
- `activations`: activation caching against a plain forward, and the cache reader's speed.
- `search`, `sae`, `transcoders`, `circuits`: the audit and circuit-tracing tools (`sae` and `circuits`
  side by side with SAELens and circuit-tracer, each tool in its own process).

This package sits above the floors it measures (models, data, train, evals) and below the CLI.
"""

from pathlib import Path

from molab.errors import MolabError


def memory_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process from /proc, in MiB. VmHWM starts afresh with
    each program, unlike getrusage's ru_maxrss, which a child inherits from the process it was
    forked from: benchmarks that run each tool in a child read this."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise MolabError(f"/proc/self/status has no {field}: the benchmark measures memory on Linux only")
