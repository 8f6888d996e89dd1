"""Through what does a graph's target logit run: features, error nodes, or the tokens directly;
and which of its features another model (a control without the documents) lacks.

Why: "On the Biology of a Large Language Model" asked of the reward-model-bias organism whether
a trained behaviour (chocolate in recipes) runs through the features that the documents built
or through a direct pathway, and found it mostly direct. Two numbers answer that on a graph of
the behaviour's token:
- the target's *direct inputs*: the row of the target logit node in the row-normalised |A|
  (circuit-tracer's influence convention), split into token embeddings (the direct pathway:
  embeddings reach the logit through attention and the residual stream, no MLP in between),
  error nodes, and features by layer;
- its *total influence*: the same normalised matrix summed over all path lengths from the target
  alone (weights one-hot on it), split the same way, with the features that carry most of it.

`feature_activations` runs another model over the same tokens with the same transcoders and
reads the graph's features there. A feature that carries the organism's behaviour but is off
(zero) in the control, which had the same post-training and no mid-training on the documents,
is one the documents made active; its share of the target's feature influence is the measure.
The transcoders see both models' MLP inputs, so a LoRA that moves them is what changes a
feature's activation; the transcoders themselves are those of the base model.

`shared_features` asks the paper's other question: does another prompt's graph (a held-out
behaviour's) reach the same features? A feature is keyed by (layer, index), not position, since
two prompts share no positions; "fires" means active at any position of the other prompt.
"""

from __future__ import annotations

import torch

from molab.circuits.graph import Graph
from molab.circuits.prune import influence, normalized
from molab.errors import MolabError


def target_index(graph: Graph, token: str | None, tokenizer=None) -> int:
    """The logit node's index among the graph's logits: the most probable, or the one of `token`."""
    if token is None:
        return 0
    if tokenizer is None:
        raise MolabError("naming a target token needs the model's tokenizer")
    ids = tokenizer(token, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise MolabError(f"target {token!r} is {len(ids)} tokens: name one token")
    hits = (graph.logit_tokens == ids[0]).nonzero().flatten().tolist()
    if not hits:
        shown = ", ".join(repr(tokenizer.decode([t])) for t in graph.logit_tokens.tolist())
        raise MolabError(f"target {token!r} is not among the graph's logits ({shown})")
    return hits[0]


def _split(values: torch.Tensor, graph: Graph) -> dict:
    """Shares of `values` [N] over feature, error and token nodes, and features per layer."""
    f, e, p = graph.n_features, graph.n_errors, graph.n_pos
    feats, errs, toks = values[:f], values[f : f + e], values[f + e : f + e + p]
    total = float(feats.sum() + errs.sum() + toks.sum())
    if total <= 0:
        raise MolabError("the target logit has no inputs in this graph")
    layers = torch.zeros(graph.n_layers).index_add_(0, graph.features[:, 0], feats)  # [n_layers]
    return {
        "features": float(feats.sum()) / total,
        "errors": float(errs.sum()) / total,
        "tokens": float(toks.sum()) / total,
        "features_by_layer": [round(float(v) / total, 4) for v in layers],
    }


def target_influence(graph: Graph, target: int = 0) -> torch.Tensor:
    """Every node's total influence [N] on logit `target` (row-normalised |A|, all path lengths).
    The measures below take it as `total` so that a caller computes it once per graph."""
    if not 0 <= target < graph.n_logits:
        raise MolabError(f"target {target} is out of range: the graph has {graph.n_logits} logits")
    weights = torch.zeros(graph.n_nodes)
    weights[graph.logit_index(target)] = 1.0
    return influence(normalized(graph.adjacency), weights)


def pathways(graph: Graph, target: int = 0, top: int = 15, total: torch.Tensor | None = None) -> dict:
    """Direct-input and total-influence shares of logit `target` (see the module docstring),
    and the `top` features by their influence on it."""
    total = target_influence(graph, target) if total is None else total  # [N]
    row = graph.adjacency[graph.logit_index(target)].abs().float()  # the target's direct inputs [N]
    direct = row / row.sum().clamp(min=1e-10)
    feature_influence = total[: graph.n_features]
    order = feature_influence.argsort(descending=True)[:top]
    active = graph.stats.get("active_features")  # before the row cap: how dense the transcoders fire here
    return {
        "active_per_token_layer": active / (graph.n_pos * len(graph.transcoder_layers)) if active else None,
        "target": {
            "token_id": int(graph.logit_tokens[target]),
            "probability": float(graph.logit_probs[target]),
        },
        "direct": _split(direct, graph),
        "total": _split(total, graph),
        "top_features": [
            {
                "node": i,
                "layer": int(graph.features[i, 0]),
                "position": int(graph.features[i, 1]),
                "feature": int(graph.features[i, 2]),
                "activation": float(graph.activations[i]),
                "influence": float(feature_influence[i]),
            }
            for i in order.tolist()
        ],
    }


@torch.no_grad()
def feature_activations(model, transcoders, graph: Graph) -> torch.Tensor:
    """The activations [n_features] of the graph's features in `model` on the graph's tokens."""
    from molab.circuits.replacement import record

    state = record(model, graph.input_ids)
    out = torch.zeros(graph.n_features)
    for layer in graph.features[:, 0].unique().tolist():
        rows = (graph.features[:, 0] == layer).nonzero().flatten()
        acts = transcoders[layer].encode(state.mlp_in[layer])  # [n_pos, d_transcoder]
        out[rows] = acts[graph.features[rows, 1], graph.features[rows, 2]].float()
    return out


@torch.no_grad()
def token_probability(model, graph: Graph, target: int = 0) -> float:
    """The probability `model` gives logit `target`'s token after the graph's prompt."""
    logits = model(input_ids=graph.input_ids[None], logits_to_keep=1).logits[0, -1]  # [vocab]
    return float(logits.float().softmax(-1)[graph.logit_tokens[target]])


@torch.no_grad()
def fired_features(model, transcoders, input_ids: torch.Tensor) -> set[tuple[int, int]]:
    """The (layer, feature index) pairs active at any position of `input_ids` [n_pos] in `model`."""
    from molab.circuits.replacement import record

    state = record(model, input_ids)
    fired = set()
    for layer in transcoders.layers:
        acts = transcoders[layer].encode(state.mlp_in[layer])  # [n_pos, d_transcoder]
        fired.update((layer, int(i)) for i in (acts > 0).any(0).nonzero().flatten().tolist())
    return fired


def top_keys(
    graph: Graph, target: int = 0, top: int = 50, total: torch.Tensor | None = None
) -> list[tuple[tuple[int, int], float]]:
    """The `top` (layer, feature index) keys by their summed influence on logit `target` over
    positions, with that influence as a share of the target's feature influence."""
    feats = _feature_influence(graph, target, total)  # [n_features]
    total = float(feats.sum())
    if total <= 0:
        raise MolabError("no feature influences the target logit in this graph")
    keyed: dict[tuple[int, int], float] = {}
    for (layer, _, index), value in zip(graph.features.tolist(), feats.tolist(), strict=True):
        keyed[(layer, index)] = keyed.get((layer, index), 0.0) + value / total
    return sorted(keyed.items(), key=lambda kv: -kv[1])[:top]


def shared_features(
    graph: Graph,
    other: Graph,
    fired: set[tuple[int, int]],
    target: int = 0,
    other_target: int = 0,
    top: int = 50,
    total: torch.Tensor | None = None,
) -> dict:
    """Of `graph`'s top features (see `top_keys`), how many fire anywhere in `other`'s prompt
    (`fired`, from `fired_features`) and how many are among `other`'s own top features; each
    also as the share of `graph`'s feature influence those features carry."""
    mine = top_keys(graph, target, top, total)
    theirs = {k for k, _ in top_keys(other, other_target, top)}
    return {
        "top": len(mine),
        "top_share": sum(v for _, v in mine),
        "fire_in_other": sum(k in fired for k, _ in mine),
        "fire_in_other_share": sum(v for k, v in mine if k in fired),
        "in_other_top": sum(k in theirs for k, _ in mine),
        "in_other_top_share": sum(v for k, v in mine if k in theirs),
    }


def _feature_influence(graph: Graph, target: int, total: torch.Tensor | None) -> torch.Tensor:
    """Each feature's total influence [n_features] on logit `target`."""
    return (target_influence(graph, target) if total is None else total)[: graph.n_features]


def missing_share(
    graph: Graph, other: torch.Tensor, target: int = 0, total: torch.Tensor | None = None
) -> dict:
    """How much of logit `target`'s feature influence comes from features that are off in the
    other model (`other`: their activations there), and from those that lost half or more."""
    feats = _feature_influence(graph, target, total)  # [n_features]
    all_features = float(feats.sum())
    if all_features <= 0:
        raise MolabError("no feature influences the target logit in this graph")
    off = other <= 0
    halved = other < graph.activations.float() / 2
    return {
        "features": graph.n_features,
        "off_in_other": int(off.sum()),
        "influence_off_in_other": float(feats[off].sum()) / all_features,
        "influence_halved_in_other": float(feats[halved].sum()) / all_features,
    }
