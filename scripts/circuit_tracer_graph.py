"""Compute one attribution graph with circuit-tracer, as molab's reference oracle.

Runs INSIDE the second virtual environment (scripts/circuit-tracer-env.sh), never molab's:
it imports circuit-tracer (decoderesearch/circuit-tracer; "Circuit Tracing", Ameisen et al.
2025) and nothing of molab. molab's benchmark (`molab bench circuits`) and its agreement
check (molab/bench/circuits.py) start it as a subprocess and read its output file.

    .venv-circuit-tracer/bin/python scripts/circuit_tracer_graph.py \
        --model ~/.cache/molab/models/smollm2-135m --transcoders runs/x/transcoders \
        --prompt "The capital of Texas is" --batch-size 64 --max-feature-nodes 7500 --out ct.safetensors

What it does, through circuit-tracer's Python API only:
- loads molab's transcoder set (circuit-tracer's per-layer layout: config.yaml +
  layer_{i}.safetensors) with `load_transcoder_set`, JumpReLU thresholds read from the files.
  That avoids both traps of its v0.5 loaders (a TopK `k` tensor its strict loader rejects; a
  local folder's `activation: topk` silently read as ReLU): `activation`/`k` from the YAML are
  passed only when the files hold no thresholds. Lazy loading follows its command line
  (encoder loaded, decoder read from disk when needed; `--no-lazy-decoder` loads it too);
- builds its `ReplacementModel` on the local Hugging Face directory (nnsight backend, float32,
  CPU unless `--device`), runs `attribute` with the given batch size and feature-row cap. A
  directory saved by transformers 5 (molab's) is read through a shim folder (`legacy_view`):
  links to its files, with config.json's `rope_parameters` written as the `rope_theta` /
  `rope_scaling` that transformers 4.57 reads (else it silently uses its default theta) and
  tokenizer_config.json's `TokenizersBackend` class, which 4.57 lacks, as the fast tokenizer;
- times the phases from its own log records (their timestamps; no number is parsed from
  text): model and transcoder loading, then precompute/encode, forward, targets, logit rows,
  feature rows, packaging;
- writes one safetensors file (no pickle): `adjacency` [N, N] (rows targets, columns sources;
  node order: selected features, errors layer-major, tokens, logits), `active_features`
  [n_active, 3] (layer, position, feature), `activation_values` [n_active],
  `selected_features` [n_selected] (indices into active_features, in node order),
  `input_ids` [n_pos], `logit_tokens`, `logit_probs`, and JSON metadata under
  `circuit_tracer` (settings, versions, timings, peak RSS from getrusage); the same JSON is
  printed as the last line of stdout.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

FORMAT = "circuit-tracer-graph/1"
PHASES = ("encode", "forward", "targets", "logit_rows", "feature_rows")


def rss_bytes() -> int:
    """The process's resident set size now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM, which a new program starts afresh (getrusage's
    ru_maxrss survives exec, so a child would inherit the peak of the parent it forked from)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def load_set(folder: Path, device, lazy_decoder: bool):
    """molab's (or any) per-layer set in circuit-tracer's layout, through its own loader."""
    import torch
    import yaml
    from circuit_tracer.transcoder import load_transcoder_set
    from safetensors import safe_open

    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    paths = {int(p.stem.split("_")[1]): str(p) for p in folder.glob("layer_*.safetensors")}
    if not paths or sorted(paths) != list(range(max(paths) + 1)):
        sys.exit(f"{folder}: circuit-tracer needs layers 0..L-1, found {sorted(paths)}")
    with safe_open(paths[0], framework="pt") as f:
        has_threshold = "activation_function.threshold" in f.keys()
    # JumpReLU files need no activation argument (the index's 0.5.0 fork has none to take)
    activation = {} if has_threshold else {"activation": cfg.get("activation"), "k": cfg.get("k")}
    return load_transcoder_set(
        paths,
        scan=cfg.get("scan") or str(folder),
        feature_input_hook=cfg["feature_input_hook"],
        feature_output_hook=cfg["feature_output_hook"],
        device=device,
        dtype=torch.float32,
        lazy_encoder=False,
        lazy_decoder=lazy_decoder,
        **activation,
    )


def legacy_view(model_dir: Path, into: Path) -> Path:
    """`model_dir` as transformers 4.57 reads it (module docstring): `into` with links to its
    files and rewritten configs, or `model_dir` itself when nothing needs rewriting."""
    config = json.loads((model_dir / "config.json").read_text())
    tok_file = model_dir / "tokenizer_config.json"
    tok = json.loads(tok_file.read_text()) if tok_file.is_file() else {}
    rope = config.get("rope_parameters")
    rewrite_config = isinstance(rope, dict) and "rope_theta" not in config
    rewrite_tok = tok.get("tokenizer_class") == "TokenizersBackend"
    if not (rewrite_config or rewrite_tok):
        return model_dir
    into.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():
        if not (into / f.name).exists():
            (into / f.name).symlink_to(f.resolve())
    if rewrite_config:
        config["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
        (into / "config.json").unlink()
        (into / "config.json").write_text(json.dumps(config, indent=2))
    if rewrite_tok:
        tok["tokenizer_class"] = "PreTrainedTokenizerFast"
        (into / "tokenizer_config.json").unlink()
        (into / "tokenizer_config.json").write_text(json.dumps(tok, indent=2))
    return into


class PhaseClock(logging.Handler):
    """Keeps the timestamp of each of circuit-tracer's attribution log records."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.created, record.getMessage()))

    def phases(self, end: float) -> dict[str, float]:
        """Seconds per phase: from each `Phase <i>:` record to the next one (the last phase
        ends at its `... completed` record); packaging is the rest up to `end`."""
        starts = [(t, int(m[6])) for t, m in self.records if m.startswith("Phase ") and m[6].isdigit()]
        out = {}
        for (t, i), (t_next, _) in zip(starts, starts[1:] + [(None, None)]):
            if t_next is None:
                done = [tt for tt, m in self.records if tt >= t and "completed" in m]
                t_next = done[0] if done else end
            if i < len(PHASES):
                out[PHASES[i]] = round(t_next - t, 3)
        if starts:
            out["packaging"] = round(end - t_next, 3)
        return out


def attribution_logger(clock: PhaseClock) -> logging.Logger:
    """circuit-tracer's "attribution" logger, recording into `clock`; `attribute(verbose=False)`
    resets its level to WARNING, so the level is pinned (and tqdm stays quiet)."""
    logger = logging.getLogger("attribution")
    logger.addHandler(clock)
    logger.setLevel(logging.INFO)
    logger.setLevel = lambda level: None  # pin INFO against attribute()'s reset
    return logger


def versions() -> dict[str, str]:
    out = {}
    for name in ("circuit-tracer", "torch", "transformers", "nnsight"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="Local Hugging Face model directory.")
    p.add_argument("--transcoders", required=True, type=Path, help="Transcoder set folder.")
    p.add_argument("--prompt", required=True)
    p.add_argument("--input-ids", help="Comma-separated token ids to attribute instead of tokenising.")
    p.add_argument("--out", required=True, type=Path, help="Output .safetensors file.")
    p.add_argument("--batch-size", type=int, default=256, help="Its command line's default: 256.")
    p.add_argument("--max-feature-nodes", type=int, default=7500, help="0: every active feature.")
    p.add_argument("--max-n-logits", type=int, default=10)
    p.add_argument("--desired-logit-prob", type=float, default=0.95)
    p.add_argument("--no-lazy-decoder", action="store_true", help="Load decoders into memory.")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from circuit_tracer import ReplacementModel, attribute
    from safetensors.torch import save_file

    device = torch.device(args.device)
    timings = {}
    t0 = time.perf_counter()
    transcoders = load_set(args.transcoders, device, lazy_decoder=not args.no_lazy_decoder)
    timings["load_transcoders"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="circuit-tracer-model-") as tmp:
        model_dir = legacy_view(args.model, Path(tmp) / args.model.name)
        model = ReplacementModel.from_pretrained_and_transcoders(
            str(model_dir), transcoders, backend="nnsight", device=device, dtype=torch.float32
        )
    timings["load_model"] = round(time.perf_counter() - t0, 3)

    prompt = [int(i) for i in args.input_ids.split(",")] if args.input_ids else args.prompt
    clock = PhaseClock()
    attribution_logger(clock)
    rss_before = rss_bytes()
    t0 = time.perf_counter()
    graph = attribute(
        prompt,
        model,
        max_n_logits=args.max_n_logits,
        desired_logit_prob=args.desired_logit_prob,
        batch_size=args.batch_size,
        max_feature_nodes=args.max_feature_nodes or None,
    )
    timings["graph"] = round(time.perf_counter() - t0, 3)
    timings.update(clock.phases(time.time()))

    logit_ids = getattr(graph, "logit_token_ids", None)
    if logit_ids is None:  # releases before attribution targets kept a plain tensor
        logit_ids = graph.logit_tokens
    input_ids = graph.input_tokens.cpu().long()
    tensors = {
        "adjacency": graph.adjacency_matrix.float(),
        "active_features": graph.active_features.long(),
        "activation_values": graph.activation_values.float(),
        "selected_features": graph.selected_features.long(),
        "input_ids": input_ids,
        "logit_tokens": torch.as_tensor(logit_ids).long(),
        "logit_probs": graph.logit_probabilities.float(),
    }
    meta = {
        "format": FORMAT,
        "prompt": args.prompt,
        "tokens": [model.tokenizer.decode([i]) for i in input_ids.tolist()],
        "model": str(args.model),
        "transcoders": str(args.transcoders),
        "n_layers": int(model.cfg.n_layers),
        "settings": {
            "batch_size": args.batch_size,
            "max_feature_nodes": args.max_feature_nodes,
            "max_n_logits": args.max_n_logits,
            "desired_logit_prob": args.desired_logit_prob,
            "lazy_decoder": not args.no_lazy_decoder,
            "device": args.device,
            "threads": torch.get_num_threads(),
            "backend": "nnsight",
        },
        "n_active": len(tensors["active_features"]),
        "n_selected": len(tensors["selected_features"]),
        "timings_s": timings,
        "rss_before_graph_bytes": rss_before,
        "peak_rss_bytes": peak_rss_bytes(),
        "versions": versions(),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    save_file(tensors, tmp, metadata={"circuit_tracer": json.dumps(meta)})
    tmp.replace(args.out)
    print(json.dumps(meta))
    return meta


if __name__ == "__main__":
    main()
