"""Attribution graphs: molab against circuit-tracer, side by side, and the agreement of the two.

Run: `molab bench circuits` (JSON with --out). circuit-tracer (decoderesearch/circuit-tracer,
"Circuit Tracing", Ameisen et al. 2025) pins transformers <= 4.57.3 and nnsight 0.6.x, so it
lives in a second virtual environment (scripts/circuit-tracer-env.sh, default
`.venv-circuit-tracer`) and runs there as a subprocess (scripts/circuit_tracer_graph.py).

The benchmark (`bench_circuits`), the setting of issue 21 and of the reference's anchors: the
default model, a 16-token prompt (15 tokens after the BOS that both tools put first), 30
random transcoders of the real shape (width 9,216; JumpReLU thresholds set so that about 32
features fire per token, `random_transcoders`), 10 logits at most, 7,500 feature rows at
most. circuit-tracer runs at batch 64 (its fastest on 2 cores) and at its command line's
default 256; molab at its own default. Each tool runs in its own subprocess, one after the
other, and reports its graph time (the attribution call alone, after loading) and its peak
resident memory (getrusage in the child: the same measure for both). Ratios: circuit-tracer's
fastest graph time over molab's (goal >= 5), molab's peak over that run's peak (goal <= 0.5).
Without the second environment molab is measured alone, and the result says so.

The agreement check (`check_agreement`, `compare`): the same model, transcoders and token ids
through both tools, then nodes mapped by identity, not by position: features by (layer,
position, feature index), error nodes by (layer, position), token nodes by position, logit
nodes by vocabulary id. The adjacency matrices are compared on the common nodes. Tolerance:
both compute in float32, with different kernels (circuit-tracer forces eager attention),
batch sizes and summation orders; an edge is a sum over layers and positions of products
whose rounding error is a few float32 ulps (~1e-7) of the largest terms in that sum, not of
the edge itself, so a small edge that is the difference of large terms can have a large
relative error. An edge agrees when |molab - ref| <= 1e-3 |ref| + 1e-4 max|row of ref|: 1e-3
relative on the edges that matter, and an absolute floor of 1e-4 of its row's largest edge
(about 1,000 ulps: room for long sums, still far below any edge a pruned graph keeps, which
needs a share of its row's influence). The report gives the largest absolute difference too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from molab.bench import memory_mib
from molab.circuits.graph import Graph
from molab.circuits.transcoder import Transcoder, TranscoderSet, save_set
from molab.errors import MolabError

BENCH_PROMPT = "The capital of the state containing Dallas is Austin; the capital of France is"
CALIBRATION_TEXTS = (
    BENCH_PROMPT,
    "Fact: Michael Jordan plays the sport of basketball, and Tom Brady plays",
    "The opposite of small is big, and the opposite of hot is",
    "In 1969 the first people walked on the surface of the moon.",
)
ENV_DIR = ".venv-circuit-tracer"
ENV_VARIABLE = "MOLAB_CIRCUIT_TRACER_PYTHON"  # a circuit-tracer environment's python, elsewhere
REFERENCE_FORMAT = "circuit-tracer-graph/1"
RTOL, ROW_FLOOR = 1e-3, 1e-4


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def graph_script() -> Path | None:
    """scripts/circuit_tracer_graph.py in a source checkout (absent from an installed wheel)."""
    path = repo_root() / "scripts" / "circuit_tracer_graph.py"
    return path if path.is_file() else None


def circuit_tracer_python(explicit: str | Path | None = None) -> Path | None:
    """The second environment's python: `explicit`, else $MOLAB_CIRCUIT_TRACER_PYTHON, else
    `.venv-circuit-tracer/bin/python` in the checkout; None when there is none."""
    given = explicit or os.environ.get(ENV_VARIABLE)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise MolabError(f"circuit-tracer python {path}: no such file (scripts/circuit-tracer-env.sh)")
        return path
    path = repo_root() / ENV_DIR / "bin" / "python"
    return path if path.is_file() else None


def bos_id(tokenizer) -> int:
    """The token both tools put first (circuit-tracer's choice: BOS, else PAD, else EOS)."""
    for i in (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id):
        if i:
            return i
    raise MolabError("the tokenizer has no BOS, PAD or EOS token to put first")


def prompt_ids(tokenizer, text: str) -> list[int]:
    """BOS + the text's tokens (no other special tokens), as circuit-tracer tokenises."""
    return [bos_id(tokenizer)] + tokenizer(text, add_special_tokens=False).input_ids


def mlp_inputs(model, tokenizer, texts) -> torch.Tensor:
    """Every layer's MLP input on `texts` (BOS first, BOS positions dropped):
    [n_layers, n_tokens, d_model]."""
    from molab.models.hooks import capture

    n_layers = model.config.num_hidden_layers
    names = [f"layers.{i}.mlp_in" for i in range(n_layers)]
    rows = []
    for text in texts:
        ids = torch.tensor([prompt_ids(tokenizer, text)], device=model.device)
        with torch.no_grad(), capture(model, names) as values:
            model(input_ids=ids)
        rows.append(torch.stack([values[n][0, 1:].float().cpu() for n in names]))  # [L, pos, d]
    return torch.cat(rows, dim=1)


def random_transcoders(
    model,
    tokenizer,
    *,
    width: int = 9216,
    active_per_token: float = 32.0,
    texts=CALIBRATION_TEXTS,
    seed: int = 0,
    model_name: str = "smollm2-135m",
) -> TranscoderSet:
    """A random transcoder for every layer of `model` (Gaussian encoder rows, unit-norm decoder
    rows scaled by 1/sqrt(active_per_token), zero biases) with JumpReLU thresholds chosen from
    the real MLP inputs on `texts`: in each layer, the value that `active_per_token` features
    per token exceed on average (one threshold per layer, stored per feature). MLP inputs come
    after an RMS norm, so tokens have similar norms and the count per token stays near the
    mean. Timing needs the real shape and sparsity, not trained features."""
    cfg = model.config
    d_model, n_layers = cfg.hidden_size, cfg.num_hidden_layers
    if not 0 < active_per_token < width:
        raise MolabError(f"active features per token must be between 0 and the width {width}")
    inputs = mlp_inputs(model, tokenizer, texts)  # [L, n_tokens, d_model]
    n_tokens = inputs.shape[1]
    k = max(1, round(active_per_token * n_tokens))
    g = torch.Generator().manual_seed(seed)
    layers = {}
    for layer in range(n_layers):
        t = Transcoder(d_model, width, layer)
        with torch.no_grad():
            t.W_enc.copy_(torch.randn(width, d_model, generator=g) / d_model**0.5)
            w_dec = torch.randn(width, d_model, generator=g)
            t.W_dec.copy_(w_dec / w_dec.norm(dim=1, keepdim=True) / active_per_token**0.5)
            top = t.pre_acts(inputs[layer]).flatten().topk(k + 1).values  # [k + 1]
            t.threshold.fill_(float(top[k - 1] + top[k]) / 2)
        layers[layer] = t
    record = {
        "model_name": model_name,
        "d_model": d_model,
        "n_layers": n_layers,
        "training": {"kind": "random", "seed": seed, "active_per_token": active_per_token},
    }
    return TranscoderSet(layers, record)


def _last_json_line(stdout: str, what: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise MolabError(f"{what} printed no result")


def _run_child(cmd: list[str], what: str, timeout: float | None, env: dict | None = None) -> dict:
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise MolabError(f"{what} ran past its {timeout:.0f} s limit") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise MolabError(f"{what} failed (exit {done.returncode}): {tail}")
    result = _last_json_line(done.stdout, what)
    result["process_s"] = round(time.perf_counter() - start, 3)
    return result


def run_circuit_tracer(
    python: Path,
    model_dir: Path,
    transcoders: Path,
    prompt: str,
    out: Path,
    *,
    batch_size: int,
    max_feature_nodes: int,
    input_ids: list[int] | None = None,
    threads: int | None = None,
    timeout: float | None = None,
) -> dict:
    """circuit-tracer's graph in a subprocess of the second environment; its metadata."""
    script = graph_script()
    if script is None:
        raise MolabError("scripts/circuit_tracer_graph.py is not here: run from a molab source checkout")
    cmd = [str(python), str(script), "--model", str(model_dir), "--transcoders", str(transcoders)]
    cmd += ["--prompt", prompt, "--out", str(out), "--batch-size", str(batch_size)]
    cmd += ["--max-feature-nodes", str(max_feature_nodes)]
    if input_ids is not None:
        cmd += ["--input-ids", ",".join(map(str, input_ids))]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return _run_child(cmd, f"circuit-tracer (batch {batch_size})", timeout, env)


def run_molab(
    model: str,
    transcoders: Path,
    prompt: str,
    out: Path,
    *,
    batch_size: int | None,
    max_feature_nodes: int,
    threads: int | None = None,
    timeout: float | None = None,
) -> dict:
    """molab's graph in a subprocess of this environment (`molab_child`); its metadata."""
    cmd = [sys.executable, "-m", "molab.bench.circuits", "--model", model, "--transcoders", str(transcoders)]
    cmd += ["--prompt", prompt, "--out", str(out), "--max-feature-nodes", str(max_feature_nodes)]
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    if threads:
        cmd += ["--threads", str(threads)]
    return _run_child(cmd, "molab's attribution", timeout)


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM; see `molab.bench.memory_mib`)."""
    return int(memory_mib("VmHWM") * 2**20)


def molab_child(argv: list[str] | None = None) -> dict:
    """The subprocess side of `run_molab`: load, attribute, save, print metadata as JSON."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m molab.bench.circuits")
    p.add_argument("--model", required=True)
    p.add_argument("--transcoders", required=True, type=Path)
    p.add_argument("--prompt", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-feature-nodes", type=int, default=7500)
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from molab.circuits.attribution import AttributionConfig, attribute
    from molab.circuits.transcoder import load_transcoders
    from molab.models.loading import ModelSpec, load_model

    start = time.perf_counter()
    loaded = load_model(ModelSpec(name=args.model, device="cpu"))
    tset = load_transcoders(args.transcoders, lazy=True)  # as the graph command loads them
    load_s = time.perf_counter() - start
    settings: dict[str, Any] = dict(max_feature_nodes=args.max_feature_nodes, max_n_logits=10)
    settings["desired_logit_prob"] = 0.95
    if args.batch_size:
        settings["batch_size"] = args.batch_size
    config = AttributionConfig(**settings)
    start = time.perf_counter()
    graph = attribute(loaded.model, loaded.tokenizer, tset, args.prompt, config)
    graph_s = time.perf_counter() - start
    peak = peak_rss_bytes()  # before saving, as the circuit-tracer side measures it
    graph.save(args.out)
    stats = graph.stats
    meta = {
        "settings": {**graph.settings, "threads": torch.get_num_threads()},
        "n_active": stats.get("active_features"),
        "n_selected": graph.n_features,
        "n_pos": graph.n_pos,
        "timings_s": {
            "load": round(load_s, 3),
            "graph": round(graph_s, 3),
            **{k.removesuffix("_s"): round(v, 3) for k, v in stats.items() if k.endswith("_s")},
        },
        "peak_rss_bytes": peak,
    }
    print(json.dumps(meta, default=str))
    return meta


@dataclass
class ReferenceGraph:
    """circuit-tracer's graph as scripts/circuit_tracer_graph.py writes it."""

    adjacency: torch.Tensor  # [N, N] rows targets, columns sources
    active_features: torch.Tensor  # [n_active, 3] layer, position, feature
    activation_values: torch.Tensor  # [n_active]
    selected_features: torch.Tensor  # [n_selected] indices into active_features, node order
    input_ids: torch.Tensor  # [n_pos]
    logit_tokens: torch.Tensor  # [n_logits]
    logit_probs: torch.Tensor  # [n_logits]
    meta: dict = field(default_factory=dict)

    @property
    def features(self) -> torch.Tensor:
        """The feature nodes, [n_selected, 3], in node order."""
        return self.active_features[self.selected_features]

    @property
    def n_layers(self) -> int:
        return int(self.meta["n_layers"])


def read_reference_graph(path: str | Path) -> ReferenceGraph:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("circuit_tracer", "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise MolabError(f"{path} is not a circuit-tracer graph file ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != REFERENCE_FORMAT:
        raise MolabError(f"{path} is not a circuit-tracer graph file ({REFERENCE_FORMAT})")
    return ReferenceGraph(**tensors, meta=meta)


def _node_keys(features: torch.Tensor, n_layers: int, n_pos: int, logits: torch.Tensor) -> list[tuple]:
    """One identity per node, in node order: features, errors (layer-major), tokens, logits."""
    keys: list[tuple] = [("feature", *map(int, f)) for f in features.tolist()]
    keys += [("error", layer, pos) for layer in range(n_layers) for pos in range(n_pos)]
    keys += [("token", pos) for pos in range(n_pos)]
    return keys + [("logit", int(t)) for t in logits.tolist()]


def compare(graph: Graph, ref: ReferenceGraph, *, rtol: float = RTOL, row_floor: float = ROW_FLOOR) -> dict:
    """How molab's graph agrees with circuit-tracer's on the same prompt: node sets, then
    edge weights on the common nodes (tolerance: the module docstring). `agree` is True when
    the tokens, layers and node sets are the same and every edge is within tolerance."""
    report: dict[str, Any] = {"same_tokens": graph.input_ids.tolist() == ref.input_ids.tolist()}
    report["same_layers"] = graph.n_layers == ref.n_layers
    if not (report["same_tokens"] and report["same_layers"]):
        report.update(agree=False, molab_tokens=graph.input_ids.tolist(), ref_tokens=ref.input_ids.tolist())
        return report
    n_pos = graph.n_pos
    ours = _node_keys(graph.features, graph.n_layers, n_pos, graph.logit_tokens)
    theirs = _node_keys(ref.features, ref.n_layers, n_pos, ref.logit_tokens)
    where = {k: i for i, k in enumerate(ours)}
    common = [(where[k], j) for j, k in enumerate(theirs) if k in where]
    only_ours = set(ours) - set(theirs)
    only_theirs = set(theirs) - set(ours)
    mine = torch.tensor([i for i, _ in common])
    ref_idx = torch.tensor([j for _, j in common])
    a = graph.adjacency[mine][:, mine].double()  # [n_common, n_common]
    b = ref.adjacency[ref_idx][:, ref_idx].double()
    diff = (a - b).abs()
    row_max = b.abs().amax(dim=1, keepdim=True)  # [n_common, 1]
    out_of_tolerance = diff > rtol * b.abs() + row_floor * row_max
    big = b.abs() > 1e-3 * b.abs().max().clamp_min(1e-30)
    rel = (diff[big] / b.abs()[big]).max().item() if big.any() else 0.0
    kinds = [theirs[j][0] for _, j in common]
    feats = [(i, j) for (i, j), kind in zip(common, kinds) if kind == "feature"]
    act_ours = graph.activations[[i for i, _ in feats]].double()
    act_ref = ref.activation_values[ref.selected_features][[j for _, j in feats]].double()
    first_ref_logit = len(theirs) - len(ref.logit_tokens)
    logits = [
        (i - graph.logit_index(0), j - first_ref_logit)
        for (i, j), kind in zip(common, kinds)
        if kind == "logit"
    ]
    p_ours = graph.logit_probs[[i for i, _ in logits]].double()
    p_ref = ref.logit_probs[[j for _, j in logits]].double()
    report.update(
        nodes_molab=len(ours),
        nodes_circuit_tracer=len(theirs),
        nodes_compared=len(common),
        features_only_molab=sorted(k[1:] for k in only_ours if k[0] == "feature")[:20],
        features_only_circuit_tracer=sorted(k[1:] for k in only_theirs if k[0] == "feature")[:20],
        logits_only_molab=sorted(k[1] for k in only_ours if k[0] == "logit"),
        logits_only_circuit_tracer=sorted(k[1] for k in only_theirs if k[0] == "logit"),
        max_abs_edge=b.abs().max().item() if b.numel() else 0.0,
        max_abs_diff=diff.max().item() if diff.numel() else 0.0,
        max_rel_diff_large_edges=rel,
        edges_out_of_tolerance=int(out_of_tolerance.sum()),
        max_activation_diff=(act_ours - act_ref).abs().max().item() if feats else 0.0,
        max_logit_prob_diff=(p_ours - p_ref).abs().max().item() if logits else 0.0,
        tolerance={"rtol": rtol, "row_floor": row_floor},
    )
    report["agree"] = not only_ours and not only_theirs and report["edges_out_of_tolerance"] == 0
    return report


def check_agreement(
    loaded,
    transcoders: Path,
    prompt: str,
    work: Path,
    *,
    python: Path,
    batch_size: int = 64,
    max_feature_nodes: int | None = None,
    threads: int | None = None,
) -> dict:
    """molab's graph (in this process, on `loaded`) and circuit-tracer's (subprocess, on the
    same token ids) for one prompt; `compare`'s report. `max_feature_nodes=None` takes every
    active feature, so both select the same nodes whatever their ranking."""
    from molab.circuits.attribution import AttributionConfig, attribute
    from molab.circuits.transcoder import load_transcoders

    config = AttributionConfig(batch_size=batch_size, max_feature_nodes=max_feature_nodes, max_n_logits=10)
    graph = attribute(loaded.model, loaded.tokenizer, load_transcoders(transcoders), prompt, config)
    ref_meta = run_circuit_tracer(
        python,
        loaded.model_dir,
        transcoders,
        prompt,
        work / "circuit-tracer.safetensors",
        batch_size=batch_size,
        max_feature_nodes=max_feature_nodes or 0,
        input_ids=graph.input_ids.tolist(),
        threads=threads,
    )
    report = compare(graph, read_reference_graph(work / "circuit-tracer.safetensors"))
    report["circuit_tracer"] = {k: ref_meta.get(k) for k in ("timings_s", "peak_rss_bytes", "versions")}
    return report


def _summary(meta: dict) -> dict:
    return {
        "graph_s": meta["timings_s"]["graph"],
        "peak_rss_bytes": meta["peak_rss_bytes"],
        "peak_rss_gb": round(meta["peak_rss_bytes"] / 1e9, 3),
        "n_active": meta.get("n_active"),
        "n_selected": meta.get("n_selected"),
        "timings_s": meta["timings_s"],
        "settings": meta.get("settings"),
        "process_s": meta.get("process_s"),
    }


def bench_circuits(
    model: str = "smollm2-135m",
    *,
    prompt: str = BENCH_PROMPT,
    width: int = 9216,
    active_per_token: float = 32.0,
    max_feature_nodes: int = 7500,
    ct_batch_sizes: tuple[int, ...] = (64, 256),
    molab_batch_size: int | None = None,
    threads: int | None = None,
    ct_python: str | Path | None = None,
    run_molab_side: bool = True,
    keep: Path | None = None,
    seed: int = 0,
    log=print,
) -> dict:
    """Time molab's graph and circuit-tracer's on one setting, in one run (see the module)."""
    from molab.models.loading import ModelSpec, load_model

    python = circuit_tracer_python(ct_python)
    loaded = load_model(ModelSpec(name=model, device="cpu"))
    ids = prompt_ids(loaded.tokenizer, prompt)
    result: dict[str, Any] = {
        "setting": {
            "model": model,
            "prompt": prompt,
            "n_pos": len(ids),
            "n_layers": loaded.model.config.num_hidden_layers,
            "width": width,
            "active_per_token": active_per_token,
            "max_feature_nodes": max_feature_nodes,
            "max_n_logits": 10,
            "threads": threads or torch.get_num_threads(),
        }
    }
    with tempfile.TemporaryDirectory(prefix="molab-bench-circuits-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        log(f"writing {loaded.model.config.num_hidden_layers} random transcoders of width {width}")
        tset = random_transcoders(
            loaded.model, loaded.tokenizer, width=width, active_per_token=active_per_token, seed=seed
        )
        folder = save_set(work / "transcoders", tset)
        model_dir = loaded.model_dir
        del tset, loaded
        if python is None:
            result["circuit_tracer"] = {
                "available": False,
                "note": f"no second environment ({ENV_DIR}; scripts/circuit-tracer-env.sh): molab alone",
            }
        else:
            runs = []
            for batch in ct_batch_sizes:
                log(f"circuit-tracer, batch {batch}, {max_feature_nodes} feature rows ...")
                meta = run_circuit_tracer(
                    python,
                    model_dir,
                    folder,
                    prompt,
                    work / f"circuit-tracer-{batch}.safetensors",
                    batch_size=batch,
                    max_feature_nodes=max_feature_nodes,
                    threads=threads,
                )
                runs.append({"batch_size": batch, **_summary(meta)})
                log(f"  {runs[-1]['graph_s']:.1f} s, {runs[-1]['peak_rss_gb']:.2f} GB peak")
            fastest = min(runs, key=lambda r: r["graph_s"])
            result["circuit_tracer"] = {
                "available": True,
                "versions": meta.get("versions"),  # the last run's (all runs share them)
                "runs": runs,
                "fastest_batch_size": fastest["batch_size"],
            }
        if run_molab_side:
            log(f"molab, {max_feature_nodes} feature rows ...")
            meta = run_molab(
                model,
                folder,
                prompt,
                work / "molab.safetensors",
                batch_size=molab_batch_size,
                max_feature_nodes=max_feature_nodes,
                threads=threads,
            )
            result["molab"] = _summary(meta)
            log(f"  {result['molab']['graph_s']:.1f} s, {result['molab']['peak_rss_gb']:.2f} GB peak")
        if python is not None and run_molab_side:
            m = result["molab"]
            result["ratios"] = {
                "speedup_vs_fastest": round(fastest["graph_s"] / m["graph_s"], 2),
                "memory_vs_fastest": round(m["peak_rss_bytes"] / fastest["peak_rss_bytes"], 3),
                "per_batch": {
                    r["batch_size"]: {
                        "speedup": round(r["graph_s"] / m["graph_s"], 2),
                        "memory": round(m["peak_rss_bytes"] / r["peak_rss_bytes"], 3),
                    }
                    for r in runs
                },
            }
            result["goals"] = {
                "speedup_at_least_5x": result["ratios"]["speedup_vs_fastest"] >= 5,
                "memory_at_most_half": result["ratios"]["memory_vs_fastest"] <= 0.5,
            }
    return result


if __name__ == "__main__":
    molab_child()
