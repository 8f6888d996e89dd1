"""Benchmarks (`make bench`, `molab bench ...`): each times molab against a baseline measured in
the same run, so only ratios are compared across machines.

- `generate`: the `hf` backend against plain `model.generate`.
- `docs`: the template documents stage (documents per second, peak memory).
- `eval`: the exploitation evaluation against plain generation on the same prompts.
- `train`: the mid-training stage against a plain PyTorch loop.
- `activations`: activation caching against a plain forward, and the cache reader's speed.

This package sits above the floors it measures (models, data, train, evals) and below the CLI.
"""
