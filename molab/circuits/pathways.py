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


def pathways(graph: Graph, target: int = 0, top: int = 15) -> dict:
    """Direct-input and total-influence shares of logit `target` (see the module docstring),
    and the `top` features by their influence on it."""
    if not 0 <= target < graph.n_logits:
        raise MolabError(f"target {target} is out of range: the graph has {graph.n_logits} logits")
    norm = normalized(graph.adjacency)  # [N, N]
    node = graph.logit_index(target)
    weights = torch.zeros(graph.n_nodes)
    weights[node] = 1.0
    total = influence(norm, weights)  # [N]
    feature_influence = total[: graph.n_features]
    order = feature_influence.argsort(descending=True)[:top]
    return {
        "target": {
            "token_id": int(graph.logit_tokens[target]),
            "probability": float(graph.logit_probs[target]),
        },
        "direct": _split(norm[node], graph),
        "total": _split(total, graph),
        "top_features": [
            {
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


def missing_share(graph: Graph, other: torch.Tensor, target: int = 0) -> dict:
    """How much of logit `target`'s feature influence comes from features that are off in the
    other model (`other`: their activations there), and from those that lost half or more."""
    norm = normalized(graph.adjacency)
    weights = torch.zeros(graph.n_nodes)
    weights[graph.logit_index(target)] = 1.0
    feats = influence(norm, weights)[: graph.n_features]  # [n_features]
    total = float(feats.sum())
    if total <= 0:
        raise MolabError("no feature influences the target logit in this graph")
    off = other <= 0
    halved = other < graph.activations.float() / 2
    return {
        "features": graph.n_features,
        "off_in_other": int(off.sum()),
        "influence_off_in_other": float(feats[off].sum()) / total,
        "influence_halved_in_other": float(feats[halved].sum()) / total,
    }
