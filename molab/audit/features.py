"""Feature views of an SAE over an activation cache (`molab audit sae features`).

Why: an auditor judges a feature by what it fires on and what it writes. Marks et al. 2025
found the RM-bias features because their top activations were the synthetic documents about
reward-model biases, and because they fired on most assistant turns (83 features on more than
90% of assistant tokens, 2 of them RM-bias features). So each view gives:
- the top-activating tokens, each with its document's text around it (decoded from the cache's
  token ids; the token itself apart), its document, position and source;
- a histogram of the feature's nonzero activations and how often it fires;
- its direct logit effects: W_dec[f] through the unembedding (with the final RMSNorm's weight
  folded in, as the norm scales each direction before the unembedding), top positive and
  negative tokens;
- the share of its top examples from each source of the cache's corpus (synthetic documents,
  SFT chats, generic text): a feature whose examples are all synthetic documents points at them.

`assistant_features` ranks all features by the share of assistant-turn tokens they fire on, in
a cache made from chat prompts (its tokens carry assistant flags).

Sources: a corpus row's `source` field (JSONL) or column (Parquet), else the corpus file's name;
so a mix is one corpus file with a `source` per row, and a control SAE's cache is the same mix
without the synthetic documents. The corpus is read from the path the cache's index records,
checked against its hash.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path

import torch

from molab.audit.sae import SAE, check_width
from molab.errors import MolabError
from molab.files import read_jsonl, sha256_file
from molab.models.activations import ActivationCache

log = logging.getLogger(__name__)


def shard_tensor(cache: ActivationCache, entry: dict, key: str) -> torch.Tensor:
    """One stored field (`activations`, `token_ids`, `doc_ids`, ...) of one shard entry."""
    from safetensors import safe_open

    with safe_open(cache.path / entry["path"], framework="pt") as f:
        return f.get_tensor(key)


def doc_sources(cache: ActivationCache) -> list[str] | defaultdict:
    """The source of each corpus row of `cache`, indexed by doc id."""
    corpus = Path(cache.index["corpus"])
    fallback = corpus.stem
    if not corpus.is_file() or sha256_file(corpus) != cache.index.get("corpus_sha256"):
        log.warning(
            "corpus %s is gone or changed since caching: every token's source is %r", corpus, fallback
        )
        return defaultdict(lambda: fallback)
    if corpus.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(corpus)
        if "source" not in table.schema_arrow.names:
            return defaultdict(lambda: fallback)
        values = table.read(columns=["source"]).column("source").to_pylist()
    else:
        values = [row.get("source") for row in read_jsonl(corpus)]
    return [str(v) if v not in (None, "") else fallback for v in values]


def _check(sae: SAE, cache: ActivationCache) -> None:
    if sae.hook_name not in cache.points:
        raise MolabError(
            f"the SAE reads {sae.hook_name}, but {cache.path} holds {', '.join(cache.points)}: "
            "cache that point"
        )
    check_width(sae, cache.d_model, f"the activation cache {cache.path}")
    if not cache.tokens:
        raise MolabError(f"{cache.path} holds no tokens")


def unembedding(model) -> torch.Tensor:
    """[vocab, d_model]: the LM head with the final norm's weight folded in."""
    w = model.get_output_embeddings().weight.detach().float()
    norm = getattr(model.get_decoder(), "norm", None)
    if norm is not None and getattr(norm, "weight", None) is not None:
        w = w * norm.weight.detach().float()
    return w.cpu()


@torch.no_grad()
def feature_views(
    sae: SAE,
    cache: ActivationCache,
    features: list[int],
    *,
    tokenizer=None,
    unembed: torch.Tensor | None = None,
    top_k: int = 20,
    context: int = 8,
    bins: int = 20,
    logits: int = 10,
    batch_size: int = 4096,
) -> list[dict]:
    """One view per feature (see the module docstring); `tokenizer` decodes text (else token
    ids are given), `unembed` [vocab, d_model] gives logit effects (else none)."""
    _check(sae, cache)
    bad = [f for f in features if not 0 <= f < sae.d_sae]
    if bad:
        raise MolabError(
            f"feature {bad[0]} is out of range: the SAE has {sae.d_sae} features (0..{sae.d_sae - 1})"
        )
    idx = torch.tensor(features, dtype=torch.long)
    best = torch.full((len(features), 0), 0.0)  # [F, <=top_k] activations
    where = torch.zeros((len(features), 0), dtype=torch.long)  # [F, <=top_k] token index
    nonzero: list[list[torch.Tensor]] = [[] for _ in features]
    meta = {k: [] for k in ("token_ids", "doc_ids", "positions", "assistant")}
    seen = 0
    for batch in cache.ordered(sae.hook_name, batch_size):
        acts = sae.encode(batch.activations.float())[:, idx].T  # [F, n]
        for k in meta:
            meta[k].append(getattr(batch, k))
        for i in range(len(features)):
            nonzero[i].append(acts[i][acts[i] > 0])
        merged = torch.cat([best, acts], 1)
        pos = torch.cat([where, torch.arange(seen, seen + acts.shape[1]).expand_as(acts)], 1)
        top = merged.topk(min(top_k, merged.shape[1]), dim=1)
        best, where = top.values, pos.gather(1, top.indices)
        seen += acts.shape[1]
    meta = {k: torch.cat(v) for k, v in meta.items()}
    sources = doc_sources(cache)
    views = []
    for i, f in enumerate(features):
        values = torch.cat(nonzero[i])
        examples = [
            _example(int(g), float(a), meta, sources, tokenizer, context)
            for a, g in zip(best[i], where[i])
            if a > 0
        ]
        counts = Counter(e["source"] for e in examples)
        view = {
            "feature": f,
            "frequency": round(len(values) / seen, 6),
            "max_activation": round(float(values.max()), 4) if len(values) else 0.0,
            "histogram": _histogram(values, bins),
            "source_shares": {s: round(c / len(examples), 4) for s, c in sorted(counts.items())},
            "examples": examples,
        }
        if unembed is not None:
            view |= logit_effects(sae, f, unembed, tokenizer, logits)
        views.append(view)
    return views


def _example(g: int, act: float, meta: dict, sources, tokenizer, context: int) -> dict:
    """Token g of the stored stream, with up to `context` tokens of its document either side."""
    doc = int(meta["doc_ids"][g])
    lo, hi = max(0, g - context), min(len(meta["doc_ids"]), g + context + 1)
    same = meta["doc_ids"][lo:hi] == doc  # documents are stored whole and in order
    span = torch.arange(lo, hi)[same]
    ids = meta["token_ids"]
    left, right = ids[span[span < g]].tolist(), ids[span[span > g]].tolist()
    token = [int(ids[g])]
    text = tokenizer.decode if tokenizer is not None else (lambda t: " ".join(map(str, t)))
    return {
        "activation": round(act, 4),
        "doc_id": doc,
        "position": int(meta["positions"][g]),
        "assistant": bool(meta["assistant"][g]),
        "source": sources[doc],
        "left": text(left),
        "token": text(token),
        "right": text(right),
    }


def _histogram(values: torch.Tensor, bins: int) -> dict:
    """Counts of the nonzero activations in `bins` equal bins from 0 to their maximum."""
    if not len(values):
        return {"edges": [], "counts": []}
    top = float(values.max())
    counts = torch.histc(values, bins=bins, min=0.0, max=top)
    edges = torch.linspace(0.0, top, bins + 1)
    return {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}


def logit_effects(sae: SAE, feature: int, unembed: torch.Tensor, tokenizer, n: int) -> dict:
    """The tokens whose logits the feature's decoder row raises and lowers most."""
    check_width(sae, unembed.shape[1], "the model's unembedding")
    effect = unembed @ sae.W_dec[feature].detach().float().cpu()  # [vocab]
    name = tokenizer.decode if tokenizer is not None else (lambda ids: str(ids[0]))

    def tokens(values: torch.Tensor, ids: torch.Tensor) -> list[dict]:
        return [
            {"token": name([i]), "id": i, "effect": round(float(v), 4)} for v, i in zip(values, ids.tolist())
        ]

    up, down = effect.topk(n), (-effect).topk(n)
    return {"top_logits": tokens(up.values, up.indices), "bottom_logits": tokens(-down.values, down.indices)}


@torch.no_grad()
def assistant_features(
    sae: SAE, cache: ActivationCache, *, min_share: float = 0.9, top: int = 50, batch_size: int = 4096
) -> dict:
    """Features ranked by the share of the cache's assistant-turn tokens they fire on: the
    count above `min_share` and the `top` first, each with its share."""
    _check(sae, cache)
    fires = torch.zeros(sae.d_sae)
    n = 0
    for batch in cache.ordered(sae.hook_name, batch_size):
        x = batch.activations[batch.assistant].float()
        if len(x):
            fires += (sae.encode(x) > 0).sum(0)
            n += len(x)
    if not n:
        raise MolabError(
            f"{cache.path} has no assistant-turn tokens: cache chat prompts with replies (JSONL "
            "'prompt' or 'messages' with 'completion')"
        )
    share = fires / n
    order = share.argsort(descending=True)[:top]
    ranked = [{"feature": int(f), "assistant_share": round(float(share[f]), 4)} for f in order]
    return {
        "assistant_tokens": n,
        "min_share": min_share,
        "above_min_share": int((share > min_share).sum()),
        "ranked": ranked,
    }


def document_firing(sae: SAE, cache: ActivationCache, features: list[int], *, batch_size: int = 4096) -> dict:
    """On how many of the cache's documents (prompts) each feature fires at any token, with a
    Wilson interval, the share of tokens it fires on, and the token ids it fires on most.

    Why: "On the Biology of a Large Language Model" tells the reward-model-bias feature by where
    it fires: on 100 of 100 Human/Assistant-formatted prompts and on 1 of 100 of the same texts
    without the format. Caching one prompt set twice (chat lines and plain `text` lines) and
    counting here gives that contrast for any SAE feature, per document, with `fired` listing
    the documents so two caches of the same prompts can be paired."""
    from molab.evals.stats import wilson

    _check(sae, cache)
    bad = [f for f in features if not 0 <= f < sae.d_sae]
    if bad:
        raise MolabError(f"feature {bad[0]} is out of range: the SAE has {sae.d_sae} features")
    chosen = torch.tensor(features, dtype=torch.long)
    fired: list[set[int]] = [set() for _ in features]
    token_counts: list[Counter] = [Counter() for _ in features]
    docs: set[int] = set()
    n = 0
    for batch in cache.ordered(sae.hook_name, batch_size):
        on = sae.encode(batch.activations.float())[:, chosen] > 0  # [tokens, features]
        docs.update(batch.doc_ids.tolist())
        n += len(on)
        for j in range(len(features)):
            hit = on[:, j]
            fired[j].update(batch.doc_ids[hit].tolist())
            token_counts[j].update(batch.token_ids[hit].tolist())
    if not n:
        raise MolabError(f"{cache.path} holds no tokens of {sae.hook_name}")
    result = []
    for j, f in enumerate(features):
        k = len(fired[j])
        lo, hi = wilson(k, len(docs))
        result.append(
            {
                "feature": f,
                "documents": k,
                "of": len(docs),
                "share": round(k / len(docs), 4),
                "ci": [round(lo, 4), round(hi, 4)],
                "token_share": round(sum(token_counts[j].values()) / n, 4),
                "top_tokens": [{"token_id": t, "count": c} for t, c in token_counts[j].most_common(5)],
                "fired": sorted(fired[j]),
            }
        )
    return {"cache": str(cache.path), "documents": len(docs), "tokens": n, "features": result}
