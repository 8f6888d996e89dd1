"""Training per-layer transcoders (`molab circuits train`).

Why molab trains its own: circuit-tracer computes graphs but trains nothing; EleutherAI's
sparsify (its transcoder mode) computes activations on the fly and its command line assumes
CUDA (it stays the GPU option, converted to the same layout). molab already caches activations
and trains SAEs (`molab.audit.sae_train`), so a transcoder is that trainer with a different
target: it reads the MLP's input after its norm (`layers.{i}.mlp_in`) and predicts the MLP's
output (`layers.{i}.mlp_out`) ("Transcoders Find Interpretable LLM Feature Circuits", Dunefsky
et al. 2024; "Circuit Tracing", Ameisen et al. 2025).

Data: the layers are taken `layers_per_pass` at a time. For each group, `cache_activations`
stores both points of its layers into a work directory (one pass over the corpus, stopped after
the group's deepest layer), each layer trains from paired shuffled batches
(`ActivationCache.paired_batches`: one permutation for input and target), its file is saved,
and the group's cache is deleted: the disk holds one group, never the 30 layers (at 1M tokens,
bf16, a layer's pair is 2.3 GB). The last `heldout` share of shards is never trained on.
Resume: config.yaml's `molab.reports` lists the finished layers, which a re-run skips; a layer
cut short starts again, and a cut-short cache resumes from its last complete shard.

The step (Gao et al. 2024; Bussmann et al. 2024; as in `sae_train`, whose pieces it reuses):
- inputs and targets are scaled to a mean squared norm of d_model (one scalar each, measured
  on a sample), so the learning-rate rule 2e-4 / sqrt(width / 16384) and the initialisation
  fit every layer, whose MLP outputs differ in scale by orders of magnitude; the scales are
  folded into the saved weights (JumpReLU is positively homogeneous), so files read raw values;
- TopK (per token) or BatchTopK (k x batch over the batch) of relu(x W_enc^T + b_enc), no
  b_dec subtracted from the input (circuit-tracer's convention: input and output spaces
  differ), decoded through the active rows only (`sparse_decode`), plus b_dec and an optional
  linear skip x W_skip^T that starts at zero (sparsify's skip transcoder);
- loss: FVU of the MLP output plus AuxK (dead features fit the residual error, weight 1/32);
- decoder rows kept unit-norm as in the SAE trainer: a feature's activation is then the norm
  of what it writes, so the top-k ranks features by their contribution to the output and one
  calibration scale serves all features (sparsify drops the constraint for transcoders and
  starts the decoder at zero; with it, the attribution graph's edge weights, activation x
  decoder, are unchanged, only split differently between the two);
- encoder rows random unit vectors, b_dec the mean MLP output, Adam, the learning rate held
  for the first 80% of steps and decayed linearly to zero over the last 20%.

Saved as JumpReLU with a threshold per feature (`sae_train.jumprelu_thresholds`): for each
calibration batch, the point nearest the batch-level top-k's cutoff among the thresholds that
keep as many of the feature's activations as the training's selection kept, averaged over
batches; features never kept get the mean cutoff. A plain per-feature mean of the smallest
kept activation would sit above the cutoff for every feature (their smallest kept value is
at least the cutoff), so L0 at inference would fall below k; this estimate matches k.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from molab.audit.sae_train import jumprelu_thresholds, select, sparse_decode
from molab.circuits.train_eval import evaluate_layer, heldout_doc_ids, replacement_loss
from molab.circuits.transcoder import (
    CONFIG,
    Transcoder,
    TranscoderSet,
    config_dict,
    layer_file,
    load_transcoders,
    read_config,
    save_layer,
)
from molab.errors import MolabError
from molab.files import atomic_path, write_jsonl
from molab.models.activations import ActivationCache, ActivationsConfig, cache_activations, read_corpus
from molab.models.loading import ModelSpec

log = logging.getLogger(__name__)

# Settings a resumed run must share with the set it adds layers to.
SHAPE = ("d_transcoder", "k", "architecture", "skip")


class TranscoderTrainConfig(BaseModel):
    """Train per-layer transcoders (mlp_in -> mlp_out) of a model over a text corpus."""

    model_config = ConfigDict(extra="forbid")
    model: ModelSpec = Field(default_factory=ModelSpec)
    corpus: list[Path] = Field(
        min_length=1, description="Corpus files (Parquet `text`, or JSONL `text`/`prompt`/`messages`), mixed."
    )
    layers: list[int] | Literal["all"] = Field("all", description="Layers to train; 'all': every layer.")
    d_transcoder: int = Field(4608, ge=1, description="Features per layer.")
    k: int = Field(32, ge=1, description="Active features per token while training (mean, for batchtopk).")
    architecture: Literal["topk", "batchtopk"] = "batchtopk"
    skip: bool = Field(True, description="Learn a linear skip path x W_skip^T beside the features.")
    tokens: int = Field(
        200_000, ge=1, description="Training tokens per layer (epochs over the cache as needed)."
    )
    batch_size: int = Field(1024, ge=2, description="Tokens per step.")
    lr: float | None = Field(None, gt=0, description="Adam learning rate; None: 2e-4 / sqrt(width / 16384).")
    aux_k: int | None = Field(None, ge=1, description="Dead features in the AuxK loss; None: d_model // 2.")
    aux_coef: float = Field(1 / 32, ge=0, description="Weight of the AuxK loss.")
    dead_tokens: int = Field(100_000, ge=1, description="A feature silent this many tokens is dead (AuxK).")
    heldout: float = Field(
        0.1, gt=0, lt=1, description="Share of each cache's shards held out for evaluation."
    )
    eval_docs: int = Field(16, ge=0, description="Held-out documents for the replacement model's loss.")
    calibration_batches: int = Field(8, ge=1, description="Batches that set the JumpReLU thresholds.")
    layers_per_pass: int = Field(6, ge=1, description="Layers cached (and held on disk) at a time.")
    cache_tokens: int | None = Field(
        None, ge=1, description="Tokens cached per group; None: tokens / (1 - heldout), or the whole corpus."
    )
    cache_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    shard_tokens: int = Field(16384, ge=1, description="Tokens per cache shard (the held-out unit).")
    max_length: int = Field(512, ge=2, description="Documents are truncated to this many tokens.")
    seed: int = 0


PRESETS: dict[str, dict] = {
    # A few layers, narrow, minutes on 2 cores: tests and demos.
    "quick": {"layers": [0, 1], "d_transcoder": 1024, "k": 16, "tokens": 20_000, "batch_size": 512,
              "shard_tokens": 4096, "dead_tokens": 10_000, "eval_docs": 8},
    # Every layer of the default model (30, d_model 576) as a background job on 2 cores. Measured
    # (docs/circuits.md): 450k tokens per layer (1.5 epochs of a 330k-token cache), held-out median
    # FVU 0.223 at L0 51, dead share at most 4.0%, replacement loss 4.42 -> 5.35; 80 min of a shared
    # machine (about an hour quiet). k 32 and 300k tokens gave FVU 0.278 at L0 35 in 45 min.
    "full": {"layers": "all", "d_transcoder": 4608, "k": 48, "tokens": 450_000, "batch_size": 1024,
             "cache_tokens": 330_000, "shard_tokens": 16384, "dead_tokens": 200_000, "layers_per_pass": 10},
}  # fmt: skip


def preset(name: str, **overrides) -> TranscoderTrainConfig:
    if name not in PRESETS:
        raise MolabError(f"preset {name!r}: choose one of {', '.join(PRESETS)}")
    return TranscoderTrainConfig(**(PRESETS[name] | {k: v for k, v in overrides.items() if v is not None}))


# --- the step -------------------------------------------------------------------------------


def mean_square_scale(x: torch.Tensor) -> float:
    """The scalar s with mean |x / s|^2 = d_model over the rows of x [n, d_model]."""
    return max(float(x.pow(2).sum(-1).mean() / x.shape[-1]) ** 0.5, 1e-8)


def init_transcoder(d_model: int, cfg: TranscoderTrainConfig, layer: int, y_mean: torch.Tensor) -> Transcoder:
    """Unit-norm random encoder and decoder rows, zero skip, b_dec = the (scaled) mean output."""
    tc = Transcoder(d_model, cfg.d_transcoder, layer, skip=cfg.skip)
    g = torch.Generator().manual_seed(cfg.seed + layer)
    with torch.no_grad():
        for w in (tc.W_enc, tc.W_dec):
            r = torch.randn(cfg.d_transcoder, d_model, generator=g)
            w.copy_(r / r.norm(dim=-1, keepdim=True))
        tc.b_dec.copy_(y_mean)
    return tc


class TranscoderTrainer:
    """One layer's optimisation state; `step(x, y)` on scaled batches [n, d_model] returns FVU."""

    decode = staticmethod(sparse_decode)  # acts [n, width], W_dec [width, d_model] -> [n, d_model]

    def __init__(self, tc: Transcoder, cfg: TranscoderTrainConfig, steps: int):
        self.tc, self.cfg = tc, cfg
        self.batch = cfg.architecture == "batchtopk"
        self.aux_k = cfg.aux_k or tc.d_model // 2
        lr = cfg.lr or 2e-4 / math.sqrt(cfg.d_transcoder / 16384)
        self.opt = torch.optim.Adam(list(tc.parameters()), lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
        hold = int(0.8 * steps)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: 1.0 if s < hold else max(steps - s, 0) / max(steps - hold, 1)
        )
        self.silent = torch.zeros(tc.d_transcoder, dtype=torch.long)  # tokens since each feature fired

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        tc = self.tc
        pre = tc.pre_acts(x)  # [n, d_transcoder]
        acts = select(pre, self.cfg.k, self.batch)
        e = y - (self.decode(acts, tc.W_dec) + tc.b_dec + tc.skip(x))  # [n, d_model]
        variance = (y - y.mean(0)).pow(2).sum().clamp_min(1e-12)
        fvu = e.pow(2).sum() / variance
        loss = fvu
        dead = self.silent >= self.cfg.dead_tokens
        if self.cfg.aux_coef and dead.any():
            n_dead = int(dead.sum())
            aux = select(torch.where(dead, pre, -torch.inf), min(self.aux_k, n_dead), batch=False)
            e_hat = self.decode(aux, tc.W_dec)  # [n, d_model]
            scale = min(n_dead / self.aux_k, 1.0)
            loss = loss + self.cfg.aux_coef * scale * (e_hat - e.detach()).pow(2).sum() / variance
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            w, grad = tc.W_dec, tc.W_dec.grad
            grad -= (grad * w).sum(-1, keepdim=True) * w  # stay on the unit sphere
            self.opt.step()
            self.schedule.step()
            w /= w.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            self.silent += len(x)
            self.silent[(acts > 0).any(0)] = 0
        return float(fvu.detach())


@torch.no_grad()
def fold_scales(tc: Transcoder, s_x: float, s_y: float) -> None:
    """Turn a transcoder of scaled values (x / s_x -> y / s_y) into one of raw values."""
    tc.W_enc.mul_(s_y / s_x)
    tc.b_enc.mul_(s_y)
    tc.threshold.mul_(s_y)
    tc.b_dec.mul_(s_y)
    if tc.W_skip is not None:
        tc.W_skip.mul_(s_y / s_x)


# --- one layer ------------------------------------------------------------------------------


def train_layer(cache: ActivationCache, layer: int, cfg: TranscoderTrainConfig) -> tuple[Transcoder, dict]:
    """Train, calibrate and evaluate layer `layer`'s transcoder on `cache` (its saved form)."""
    points = [f"layers.{layer}.mlp_in", f"layers.{layer}.mlp_out"]
    train_view, held_view = split(cache, points, cfg.heldout)
    available = sum(e["tokens"] for e in train_view.shards(points[0]))
    size = min(cfg.batch_size, available)
    sx, sy = next(
        train_view.paired_batches(points, min(available, 8 * cfg.batch_size), seed=cfg.seed + 10_000)
    )
    s_x, s_y = mean_square_scale(sx), mean_square_scale(sy)
    steps = max(cfg.tokens // size, 1)
    tc = init_transcoder(cache.d_model, cfg, layer, sy.mean(0) / s_y)
    trainer = TranscoderTrainer(tc, cfg, steps)
    stream = train_view.paired_batches(
        points, size, seed=cfg.seed + layer, epochs=None, drop_last=True, prefetch=2
    )
    curve, start = [], time.perf_counter()
    try:
        for step, (x, y) in zip(range(steps), stream):
            fvu = trainer.step(x / s_x, y / s_y)
            if step % max(steps // 20, 1) == 0 or step == steps - 1:
                curve.append({"tokens": (step + 1) * size, "fvu": round(fvu, 4)})
                log.info("layer %d step %d/%d: FVU %.4f", layer, step + 1, steps, fvu)
    finally:
        stream.close()
    seconds = time.perf_counter() - start
    calibration = train_view.paired_batches(points, size, seed=cfg.seed + 20_000, drop_last=True)
    scaled = SimpleNamespace(pre_acts=lambda x: tc.pre_acts(x / s_x), d_sae=tc.d_transcoder)
    theta, glob = jumprelu_thresholds(
        scaled,
        (x for _, (x, _y) in zip(range(cfg.calibration_batches), calibration)),
        cfg.k,
        batch=trainer.batch,
    )
    tc.threshold.copy_(theta)
    fold_scales(tc, s_x, s_y)
    tc.eval()
    report = {
        "layer": layer,
        "training_tokens": steps * size,
        "epochs": round(steps * size / available, 2),
        "seconds": round(seconds, 1),
        "tokens_per_second": round(steps * size / seconds, 1),
        "final_training_fvu": curve[-1]["fvu"],
        "dead_at_end_of_training": round(float((trainer.silent >= cfg.dead_tokens).float().mean()), 4),
        "scales": {"mlp_in": round(s_x, 5), "mlp_out": round(s_y, 5)},
        "threshold": {"global": round(glob * s_y, 5), "median": round(float(tc.threshold.median()), 5)},
        "heldout": evaluate_layer(tc, held_view.paired_batches(points, cfg.batch_size)),
        "curve": curve,
    }
    return tc, report


def split(
    cache: ActivationCache, points: list[str], heldout: float
) -> tuple[ActivationCache, ActivationCache]:
    """Views of `cache` with the training shards and with the last shards holding at least a
    `heldout` share of its tokens (a cache's last shard is often short)."""
    shards = cache.shards(points[0])
    total, held, n_out = sum(e["tokens"] for e in shards), 0, 0
    while n_out < len(shards) and held < heldout * total:
        n_out += 1
        held += shards[-n_out]["tokens"]
    if len(shards) - n_out < 1:
        raise MolabError(
            f"{cache.path} has {len(shards)} shard(s): too few to hold {heldout:.0%} out; give a larger "
            "corpus or a smaller shard_tokens"
        )

    def view(lo: int, hi: int) -> ActivationCache:
        part = ActivationCache.__new__(ActivationCache)
        part.path = cache.path
        part.index = {**cache.index, "shards": {p: cache.shards(p)[lo:hi] for p in points}}
        return part

    return view(0, len(shards) - n_out), view(len(shards) - n_out, len(shards))


# --- the set --------------------------------------------------------------------------------


def check_out(out: Path, cfg: TranscoderTrainConfig) -> dict | None:
    """The molab record of the set in `out` to add layers to (None: a new set); a MolabError
    when `out` is not a folder molab may write a set of these settings into."""
    if out.exists() and not out.is_dir():
        raise MolabError(f"--out {out} is a file: give a folder for the transcoder set")
    if not out.is_dir() or not any(out.iterdir()):
        return None
    if not (out / CONFIG).is_file():
        raise MolabError(
            f"--out {out} is a folder that holds no transcoder set: molab will not write into it"
        )
    record = read_config(out).get("molab")
    if not isinstance(record, dict) or not isinstance(record.get("reports"), dict):
        raise MolabError(f"--out {out} holds a transcoder set molab did not train: give another folder")
    wanted = {"model_name": cfg.model.name} | {k: getattr(cfg, k) for k in SHAPE}
    have = {"model_name": record.get("model_name")} | (record.get("training") or {})
    for key, value in wanted.items():
        if have.get(key) != value:
            raise MolabError(
                f"--out {out} holds transcoders with {key} {have.get(key)!r}, not {value!r}: give another "
                "folder, or the same settings to add layers to it"
            )
    return record


def write_set_config(out: Path, tc: Transcoder, record: dict, layers) -> None:
    """config.yaml (circuit-tracer's keys; molab's record listing `layers`), atomically."""
    import yaml

    content = config_dict(TranscoderSet({tc.layer: tc}, record))
    content["molab"]["layers"] = sorted(layers)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / CONFIG) as tmp:
        tmp.write_text(yaml.safe_dump(content, sort_keys=False))


def mixed_corpus(paths: list[Path], parts: list[list], work: Path) -> tuple[Path, list]:
    """One corpus file and its documents: the file itself, or the files' documents interleaved
    in proportion (any prefix, which a cache's token cap takes, mixes them as the whole does)
    in one JSONL written into `work`, each row with its `source` (its file's name). `parts`: each
    file's documents."""
    if len(parts) == 1:
        return paths[0], parts[0]
    keyed = sorted(((i + 0.5) / len(part), n, i) for n, part in enumerate(parts) for i in range(len(part)))
    docs = [parts[n][i] for _, n, i in keyed]
    work.mkdir(parents=True, exist_ok=True)
    rows = (parts[n][i].model_dump(exclude_none=True) | {"source": paths[n].stem} for _, n, i in keyed)
    write_jsonl(work / "corpus.jsonl", rows)
    return work / "corpus.jsonl", docs


def train_transcoders(
    cfg: TranscoderTrainConfig, out: Path, *, loaded=None, work: Path | None = None, on_layer=None
) -> dict:
    """Train the transcoders of `cfg.layers` missing from `out`, group by group (see the module
    docstring); then the replacement model's loss over every layer in `out`. `work` holds the
    caches (default: `<out>.work` beside it); `on_layer(report)` hears of each layer saved.
    Returns the set's record (config.yaml's `molab` block)."""
    from molab.models.loading import load_model

    out = Path(out)
    record = check_out(out, cfg)
    parts = [read_corpus(p) for p in cfg.corpus]  # an empty or unreadable file: one line, no work
    loaded = loaded or load_model(cfg.model)
    n_layers, d_model = loaded.model.config.num_hidden_layers, loaded.model.config.hidden_size
    layers = list(range(n_layers)) if cfg.layers == "all" else sorted(set(cfg.layers))
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise MolabError(f"layers {bad}: {cfg.model.name} has layers 0 to {n_layers - 1}")
    if record is not None and record.get("d_model") != d_model:
        raise MolabError(
            f"--out {out} holds transcoders of d_model {record.get('d_model')}, this model's is {d_model}"
        )
    record = record or {
        "model_name": cfg.model.name,
        "adapters": cfg.model.adapters,
        "d_model": d_model,
        "n_layers": n_layers,
        "trainer": "molab",
        "training": cfg.model_dump(mode="json", exclude={"model", "layers"}),
        "reports": {},
    }
    done = {int(i) for i in record["reports"] if (out / layer_file(int(i))).is_file()}
    record["reports"] = {str(i): r for i, r in record["reports"].items() if int(i) in done}
    todo = [i for i in layers if i not in done]
    work = Path(work) if work else out.parent / f"{out.name}.work"
    corpus, docs = mixed_corpus(cfg.corpus, parts, work)
    cache_tokens = cfg.cache_tokens or math.ceil(cfg.tokens / (1 - cfg.heldout))
    for g in range(0, len(todo), cfg.layers_per_pass):
        group = todo[g : g + cfg.layers_per_pass]
        folder = work / f"layers-{group[0]}-{group[-1]}"
        shutil.rmtree(folder / "cache", ignore_errors=True)  # a cut-short run's links: made again
        points = [f"layers.{i}.{p}" for i in group for p in ("mlp_in", "mlp_out")]
        caching = ActivationsConfig(
            model=cfg.model, corpus=corpus, points=points, dtype=cfg.cache_dtype, max_length=cfg.max_length,
            max_tokens=cache_tokens, shard_tokens=cfg.shard_tokens, skip_bos=True,
        )  # fmt: skip
        start = time.perf_counter()
        cache_activations(caching, folder / "cache", folder / "partial", loaded=loaded)
        cache = ActivationCache(folder / "cache")
        cache_seconds = round(time.perf_counter() - start, 1)
        if "heldout_doc_ids" not in record:
            _, held = split(cache, points[:1], cfg.heldout)
            record["heldout_doc_ids"] = heldout_doc_ids(
                cache, points[0], held.shards(points[0]), cfg.eval_docs
            )
        for layer in group:
            tc, report = train_layer(cache, layer, cfg)
            report |= {"cached_tokens": cache.tokens, "cache_seconds_of_group": cache_seconds}
            write_set_config(out, tc, record, done)  # first: marks the folder as a set's
            save_layer(out, tc)
            record["reports"][str(layer)] = report
            done.add(layer)
            write_set_config(out, tc, record, done)
            if on_layer:
                on_layer(report)
        shutil.rmtree(folder)
    if corpus.parent == work:
        corpus.unlink()
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()
    if (record.get("replacement") or {}).get("layers") != sorted(done) and cfg.eval_docs:
        tset = load_transcoders(out)
        held_docs = [docs[d] for d in record["heldout_doc_ids"] if d < len(docs)]
        record["replacement"] = {"layers": sorted(done)} | replacement_loss(
            loaded.model, loaded.tokenizer, tset, held_docs, max_length=cfg.max_length, skip_bos=True
        )
        write_set_config(out, tset[tset.layers[0]], record, done)
    return record
