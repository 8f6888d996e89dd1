"""Training an SAE on an activation cache (`molab audit sae train`).

Why molab trains its own: SAELens reads activations from a model (through TransformerLens, which
it pins below 4) or a dataset, not from a cache with per-token provenance, and is built around GPU
runs (it installs beside transformers 5 in its own environment, `scripts/saelens-env.sh`,
where `molab bench sae` runs it side by side on molab's cache); EleutherAI's sparsify computes
activations on the fly, with no cache, and its command line targets CUDA. molab's cache
(`molab.models.activations`) already holds the activations with per-token provenance, so the
trainer is a short loop over it, on CPU or GPU.
On GPUs, sparsify (`pip install eai-sparsify`, an optional extra molab never imports) remains
an option for large runs; `molab audit sae import` converts its checkpoints.

Method (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"; Bussmann et al. 2024,
"BatchTopK Sparse Autoencoders"):
- TopK keeps each token's k largest relu(pre) activations; BatchTopK keeps the batch's
  k x batch largest, so the number per token varies while the mean stays k;
- loss: FVU (squared error over the batch's total variance) plus AuxK: the top `aux_k` dead
  latents (not fired for `dead_tokens` tokens) reconstruct the residual error, weight
  `aux_coef` (1/32 as in Gao et al.), which revives dead latents;
- decoder rows unit-norm: renormalised after each step, and the gradient component parallel
  to each row removed before it; the encoder starts as the decoder's transpose;
- b_dec starts at the mean of a sample of activations (or its geometric median, Weiszfeld
  iterations), Adam with Gao et al.'s learning rate 2e-4 / sqrt(d_sae / 16384);
- the batch is streamed from disk by the cache's shuffled reader (never loaded whole), from the
  training shards only: the last `heldout` share of shards is held out for evaluation.

Inference form: the saved SAE is JumpReLU with a threshold per latent, so its mean L0 matches
k without a top-k at inference (a per-token top-k would make a token's features depend on its
other features). Calibration batches go through the training's own selection (the batch-level
top-k for BatchTopK, the per-token top-k for TopK). Per batch and latent, any threshold between
the latent's c-th and (c+1)-th largest pre-activation keeps as many of its activations as the
selection kept (c of them); of those, molab takes the one nearest the batch's cutoff (the
smallest activation the batch-level top-k keeps), and a latent's threshold is the mean over the
batches that kept it. Latents never kept get the global estimate, the mean of the cutoffs
(Bussmann et al. 2024). For BatchTopK the cutoff lies in every kept latent's interval, so its
thresholds stay the global one: its training selection is itself one threshold per batch. For
TopK, which ranks within a token, one threshold for all would silence latents whose activations
are small beside others' and let through the spurious activations of latents whose real ones
are large; per latent, neither happens.

Evaluation on the held-out shards: FVU, mean L0 and the dead share (latents that fire on no
held-out token) of the saved SAE; and the model's next-token loss on held-out documents (rebuilt
from the cache's token ids) with the SAE's reconstruction spliced in at the point (`Replace`)
against the loss without it. The SAE's metadata records the training settings, this evaluation,
and the share of training tokens from each corpus source (`molab.audit.features.doc_sources`):
an SAE trained on a mix without the synthetic documents is the control SAE.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from molab.audit.features import doc_sources, shard_tensor
from molab.audit.sae import SAE
from molab.errors import MolabError
from molab.models.activations import ActivationCache

log = logging.getLogger(__name__)


class SAETrainConfig(BaseModel):
    """Train a TopK or BatchTopK SAE on one point of an activation cache."""

    model_config = ConfigDict(extra="forbid")
    cache: Path = Field(description="Activation cache directory (molab activations cache).")
    point: str | None = Field(None, description="Hook point; None: the middle layer's resid_post.")
    architecture: Literal["topk", "batchtopk"] = "batchtopk"
    k: int = Field(32, ge=1, description="Active latents per token (mean, for batchtopk).")
    d_sae: int = Field(4096, ge=1, description="Number of latents.")
    tokens: int | None = Field(
        None, ge=1, description="Training tokens; None: one pass over the training shards."
    )
    batch_size: int = Field(4096, ge=2)
    lr: float | None = Field(None, gt=0, description="Adam learning rate; None: 2e-4 / sqrt(d_sae / 16384).")
    aux_k: int | None = Field(None, ge=1, description="Dead latents in the AuxK loss; None: d_in // 2.")
    aux_coef: float = Field(1 / 32, ge=0)
    dead_tokens: int = Field(1_000_000, ge=1, description="A latent silent this many tokens is dead.")
    b_dec_init: Literal["mean", "median"] = "mean"
    heldout: float = Field(0.1, ge=0, lt=1, description="Share of shards held out for evaluation (0: none).")
    eval_docs: int = Field(32, ge=0, description="Held-out documents for the spliced model loss.")
    calibration_batches: int = Field(16, ge=1, description="Batches for the JumpReLU threshold.")
    seed: int = 0


def default_point(cache: ActivationCache, n_layers: int) -> str:
    """The middle layer's resid_post, which the cache must hold."""
    point = f"layers.{n_layers // 2}.resid_post"
    if point not in cache.points:
        raise MolabError(
            f"{cache.path} does not hold {point} (the middle layer's resid_post, the default): give "
            f"--point, one of {', '.join(cache.points)}"
        )
    return point


def split_shards(cache: ActivationCache, point: str, heldout: float) -> tuple[list[dict], list[dict]]:
    """(training shards, held-out shards): the last `heldout` share of the stored stream."""
    shards = cache.shards(point)
    n_out = math.ceil(heldout * len(shards)) if heldout else 0
    if n_out and len(shards) < 2:
        raise MolabError(
            f"{cache.path} has one shard of {point}: holding tokens out needs two or more (re-cache "
            "with a smaller --shard-tokens) or pass --heldout 0"
        )
    return shards[: len(shards) - n_out], shards[len(shards) - n_out :]


def subset(cache: ActivationCache, point: str, shards: list[dict]) -> ActivationCache:
    """A view of `cache` whose `point` has only `shards` (the reader then streams just those)."""
    view = copy.copy(cache)
    view.index = {**cache.index, "shards": {**cache.index["shards"], point: shards}}
    return view


def source_shares(cache: ActivationCache, shards: list[dict]) -> dict[str, float]:
    """Share of the tokens of `shards` from each corpus source."""
    sources = doc_sources(cache)
    counts: Counter = Counter()
    for entry in shards:
        ids, n = shard_tensor(cache, entry, "doc_ids").unique(return_counts=True)
        for doc, c in zip(ids.tolist(), n.tolist()):
            counts[sources[doc]] += c
    total = sum(counts.values()) or 1
    return {s: round(c / total, 4) for s, c in sorted(counts.items())}


# --- the step ---------------------------------------------------------------------------------


def select(pre: torch.Tensor, k: int, batch: bool) -> torch.Tensor:
    """relu(pre) [n, d_sae] with all but the top k per row (or k x n over the batch) zeroed."""
    acts = torch.relu(pre)
    if batch:
        flat = acts.flatten()
        top = flat.topk(min(k * len(acts), flat.numel()))
        return torch.zeros_like(flat).scatter(0, top.indices, top.values).view_as(acts)
    top = acts.topk(k, dim=-1)
    return torch.zeros_like(acts).scatter(-1, top.indices, top.values)


def sparse_decode(acts: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """acts [n, d_sae] (mostly zeros) @ W_dec [d_sae, d_in] -> [n, d_in], touching only the
    active rows of W_dec (an embedding bag): the dense product would cost d_sae / L0 times more."""
    rows, cols = acts.nonzero(as_tuple=True)  # row-major: each row's latents are contiguous
    offsets = torch.zeros(len(acts), dtype=torch.long, device=acts.device)
    offsets[1:] = torch.bincount(rows, minlength=len(acts))[:-1].cumsum(0)
    return F.embedding_bag(cols, W_dec, offsets, mode="sum", per_sample_weights=acts[rows, cols])


def geometric_median(x: torch.Tensor, iters: int = 50) -> torch.Tensor:
    """The point minimising the summed distance to the rows of x [n, d] (Weiszfeld)."""
    y = x.mean(0)
    for _ in range(iters):
        w = 1 / (x - y).norm(dim=-1).clamp_min(1e-8)
        y = (w[:, None] * x).sum(0) / w.sum()
    return y


def init_sae(d_in: int, cfg: SAETrainConfig, sample: torch.Tensor, hook_name: str) -> SAE:
    """Unit-norm random decoder rows, encoder = their transpose, b_dec from `sample` [n, d_in]."""
    sae = SAE(d_in, cfg.d_sae, architecture="jumprelu", hook_name=hook_name)
    g = torch.Generator().manual_seed(cfg.seed)
    w = torch.randn(cfg.d_sae, d_in, generator=g)
    with torch.no_grad():
        sae.W_dec.copy_(w / w.norm(dim=-1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_dec.copy_(geometric_median(sample) if cfg.b_dec_init == "median" else sample.mean(0))
    return sae


class Trainer:
    """One SAE's optimisation state; `step` takes a batch [n, d_in] and returns its FVU."""

    def __init__(self, sae: SAE, cfg: SAETrainConfig):
        self.sae, self.cfg = sae, cfg
        self.batch = cfg.architecture == "batchtopk"
        self.aux_k = cfg.aux_k or sae.d_in // 2
        lr = cfg.lr or 2e-4 / math.sqrt(cfg.d_sae / 16384)
        params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]
        self.opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
        self.silent = torch.zeros(sae.d_sae, dtype=torch.long)  # tokens since each latent fired

    def step(self, x: torch.Tensor) -> float:
        sae = self.sae
        pre = sae.pre_acts(x)  # [n, d_sae]
        acts = select(pre, self.cfg.k, self.batch)
        e = x - (sparse_decode(acts, sae.W_dec) + sae.b_dec)  # [n, d_in]
        variance = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
        fvu = e.pow(2).sum() / variance
        loss = fvu
        dead = self.silent >= self.cfg.dead_tokens
        if self.cfg.aux_coef and dead.any():
            k_aux = min(self.aux_k, int(dead.sum()))
            aux = select(torch.where(dead, pre, -torch.inf), k_aux, batch=False)
            e_hat = sparse_decode(aux, sae.W_dec)
            scale = min(int(dead.sum()) / self.aux_k, 1.0)  # fewer dead latents: a smaller push
            loss = loss + self.cfg.aux_coef * scale * (e_hat - e.detach()).pow(2).sum() / variance
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            w, grad = sae.W_dec, sae.W_dec.grad
            grad -= (grad * w).sum(-1, keepdim=True) * w  # keep rows on the unit sphere
            self.opt.step()
            w /= w.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            fired = (acts > 0).any(0)
            self.silent += len(x)
            self.silent[fired] = 0
        return float(fvu.detach())


@torch.no_grad()
def jumprelu_thresholds(sae: SAE, batches, k: int, *, batch: bool) -> tuple[torch.Tensor, float]:
    """(per-latent thresholds [d_sae], the global estimate) from calibration `batches`, for an SAE
    trained with the batch-level (`batch`) or the per-token top-k; see the module docstring."""
    below = torch.tensor(-torch.inf)
    total = torch.zeros(sae.d_sae, dtype=torch.float64)
    batches_kept = torch.zeros(sae.d_sae, dtype=torch.long)
    cutoffs = []
    for x in batches:
        pre = sae.pre_acts(x)  # [n, d_sae]
        kept = select(pre, k, batch=True)
        if not (kept > 0).any():
            continue
        cutoff = float(kept[kept > 0].min())  # the batch-level top-k's smallest kept value
        cutoffs.append(cutoff)
        if not batch:
            kept = select(pre, k, batch=False)
        counts = (kept > 0).sum(0)  # [d_sae]
        hit = counts > 0
        counts = counts[hit]
        # pre > t keeps c of a latent's values for t in [(c+1)-th largest, c-th largest): take
        # the point of that interval nearest the batch's cutoff.
        top = pre[:, hit].topk(min(int(counts.max()) + 1, len(pre)), dim=0).values  # [c_max + 1, hits]
        upper = torch.nextafter(top.gather(0, (counts - 1)[None])[0], below)
        lower = top.gather(0, counts.clamp_max(len(top) - 1)[None])[0]
        lower = torch.where(counts < len(pre), lower, below)
        total[hit] += torch.nextafter(torch.tensor(cutoff), below).clamp(lower, upper).double()
        batches_kept += hit
    if not cutoffs:
        raise MolabError("no latent fired on the calibration batches: the SAE did not train")
    glob = sum(cutoffs) / len(cutoffs)
    own = total / batches_kept.clamp_min(1)
    return torch.where(batches_kept > 0, own, glob).float(), glob


@torch.no_grad()
def evaluate(sae: SAE, batches) -> dict[str, float]:
    """FVU over all tokens of `batches`, mean L0, and the share of latents that never fire."""
    err = sumsq = total = l0 = 0.0
    mean = torch.zeros(sae.d_in, dtype=torch.float64)
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    n = 0
    for x in batches:
        f = sae.encode(x)
        err += float((x - sae.decode(f)).pow(2).sum())
        sumsq += float(x.double().pow(2).sum())
        mean += x.double().sum(0)
        total += len(x)
        l0 += float((f > 0).sum())
        fired |= (f > 0).any(0)
        n += 1
    if not total:
        raise MolabError("no held-out tokens to evaluate on")
    variance = sumsq - float(mean.pow(2).sum()) / total
    return {
        "fvu": round(err / max(variance, 1e-12), 4),
        "l0": round(l0 / total, 2),
        "dead_share": round(1 - float(fired.float().mean()), 4),
        "tokens": int(total),
    }


# --- the model's loss with the SAE spliced in -------------------------------------------------


def heldout_documents(cache: ActivationCache, shards: list[dict], limit: int) -> list[tuple[list[int], int]]:
    """Up to `limit` held-out documents as (token ids, index of the first stored token): those
    whose stored tokens start the document (a BOS the cache skipped is put back)."""
    docs: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    bos = cache.index.get("bos_token_id")
    skipped = cache.index.get("skip_bos") and bos is not None
    for entry in shards:
        ids, doc, pos = (
            shard_tensor(cache, entry, k).tolist() for k in ("token_ids", "doc_ids", "positions")
        )
        for t, d, p in zip(ids, doc, pos):
            if d not in docs:
                if p not in (0, 1) or (p == 1 and not skipped):
                    docs[d] = []  # starts in an earlier shard: unusable, remembered as such
                    continue
                docs[d], starts[d] = ([bos] if p == 1 else []), p
            if d in starts:
                docs[d].append(t)
    out = [(docs[d], starts[d]) for d in starts if len(docs[d]) > 1]
    return out[:limit]


@torch.no_grad()
def spliced_loss(model, sae: SAE, docs: list[tuple[list[int], int]], batch_size: int = 8) -> dict[str, float]:
    """Mean next-token loss over `docs` without and with the SAE's reconstruction replacing the
    point (on the stored positions; a skipped BOS keeps its own activations)."""
    from molab.models.hooks import Replace, intervene

    device = next(model.parameters()).device
    totals = {"loss": 0.0, "loss_with_sae": 0.0}
    count = 0
    for i in range(0, len(docs), batch_size):
        rows = docs[i : i + batch_size]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        keep = torch.zeros(len(rows), width, dtype=torch.bool)  # positions the SAE replaces
        for r, (toks, first) in enumerate(rows):
            ids[r, : len(toks)], mask[r, : len(toks)] = torch.tensor(toks), 1
            keep[r, first : len(toks)] = True
        ids, mask, keep = ids.to(device), mask.to(device), keep.to(device)
        labels = ids.masked_fill(mask == 0, -100)

        def splice(x: torch.Tensor, keep: torch.Tensor = keep) -> torch.Tensor:  # x: [batch, seq, d_in]
            recon = sae(x.float()).to(x.dtype)
            return torch.where(keep[..., None], recon, x)

        n = int((labels[:, 1:] != -100).sum())
        totals["loss"] += float(model(input_ids=ids, attention_mask=mask, labels=labels).loss) * n
        with intervene(model, {sae.hook_name: Replace(splice)}):
            totals["loss_with_sae"] += (
                float(model(input_ids=ids, attention_mask=mask, labels=labels).loss) * n
            )
        count += n
    if not count:
        return {}
    return {k: round(v / count, 4) for k, v in totals.items()} | {"loss_tokens": count}


# --- the run --------------------------------------------------------------------------------


def train_sae(cfg: SAETrainConfig, out: Path, *, loaded=None, log_every: int = 50) -> dict:
    """Train, calibrate, evaluate and save the SAE into `out`; returns the run's report.
    `loaded` (a `LoadedModel`) replaces loading the cache's model for the spliced loss."""
    from molab.models.hooks import POINTS, hook_points
    from molab.models.loading import ModelSpec, load_model

    cache = ActivationCache(cfg.cache)
    if not cache.tokens:
        raise MolabError(f"{cache.path} holds no tokens")
    spec = cache.index["model"]
    loaded = loaded or load_model(
        ModelSpec(name=spec["name"], adapters=spec["adapters"], merge_adapters=spec["merge_adapters"])
    )
    n_layers = len(hook_points(loaded.model)) // len(POINTS)
    point = cfg.point or default_point(cache, n_layers)
    if point not in hook_points(loaded.model):
        raise MolabError(
            f"{spec['name']} has no hook point {point!r}: its layers are 0 to {n_layers - 1}, points "
            f"{', '.join(POINTS)}"
        )
    train_shards, held = split_shards(cache, point, cfg.heldout)
    train_view = subset(cache, point, train_shards)
    available = sum(s["tokens"] for s in train_shards)
    if available < 2:
        raise MolabError(f"{cache.path} has {available} training tokens of {point}: too few to train on")
    budget = cfg.tokens or available
    size = min(cfg.batch_size, available)  # a full batch every step (drop_last), however small the cache
    stream = train_view.batches(point, size, seed=cfg.seed, epochs=None, drop_last=True, prefetch=2)
    sample = next(iter(train_view.batches(point, min(cfg.batch_size * 4, available), seed=cfg.seed + 10_000)))
    sae = init_sae(cache.d_model, cfg, sample, point)
    trainer = Trainer(sae, cfg)
    curve, seen, start = [], 0, time.perf_counter()
    try:
        for step, x in enumerate(stream):
            fvu = trainer.step(x)
            seen += len(x)
            if step % log_every == 0 or seen >= budget:
                curve.append({"tokens": seen, "fvu": round(fvu, 4)})
                log.info("SAE step %d: %d tokens, FVU %.4f", step, seen, fvu)
            if seen >= budget:
                break
    finally:
        stream.close()  # stops the prefetching thread
    seconds = time.perf_counter() - start
    sae.eval()
    calibration = train_view.batches(point, cfg.batch_size, seed=cfg.seed + 20_000)
    theta, glob = jumprelu_thresholds(
        sae,
        (x for _, x in zip(range(cfg.calibration_batches), calibration)),
        cfg.k,
        batch=cfg.architecture == "batchtopk",
    )
    sae.threshold.copy_(theta)
    report = {
        "point": point,
        "training_tokens": seen,
        "tokens_per_second": round(seen / seconds, 1),
        "final_training_fvu": curve[-1]["fvu"],
        "dead_at_end_of_training": round(float((trainer.silent >= cfg.dead_tokens).float().mean()), 4),
        "threshold": {
            "global": round(glob, 5),
            "median": round(float(theta.median()), 5),
            "min": round(float(theta.min()), 5),
            "max": round(float(theta.max()), 5),
        },
        "curve": curve,
    }
    if held:
        report["heldout"] = evaluate(sae, subset(cache, point, held).batches(point, cfg.batch_size))
        docs = heldout_documents(cache, held, cfg.eval_docs)
        report["heldout"] |= spliced_loss(loaded.model, sae.to(next(loaded.model.parameters()).device), docs)
        sae.cpu()
    sae.model_name = spec["name"]
    sae.metadata = {
        "trainer": "molab",
        "trained_as": cfg.architecture,
        "k": cfg.k,
        "config": cfg.model_dump(mode="json"),
        "cache": str(cache.path),
        "sources": source_shares(cache, train_shards),
        "report": report,
    }
    sae.save(out)
    return report
