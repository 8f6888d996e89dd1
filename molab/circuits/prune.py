"""Pruning an attribution graph, and its replacement and completeness scores.

Why: a graph holds thousands of nodes and millions of edges; a reader needs the few that carry
most of the effect on the output. The definitions are circuit-tracer's ("Circuit Tracing",
Ameisen et al. 2025; `circuit_tracer/graph.py`), so pruned graphs and scores agree between the
two tools:

- normalised adjacency: |A| with each row divided by its sum (a target's inputs sum to 1);
- influence of every node on the logits: w (A + A^2 + ...), where w holds the logit nodes'
  probabilities; the graph is acyclic (edges go up the layers), so the series ends after at
  most N terms; it is summed a vector-matrix product at a time ([N] x [N, N]), never forming
  a matrix power;
- nodes: the most influential ones up to `node_threshold` of the total influence, plus every
  token and logit node; edges between them: scored by |A|'s normalised weight times the
  influence (plus logit weight) of their target, the best up to `edge_threshold` of the total;
  then feature and error nodes left without an out-edge, and features left without an
  in-edge, are dropped, and edges to and from them, until nothing changes;
- cumulative score of a node: the share of the total influence held by it and every node more
  influential (the viewer's slider keeps nodes up to a share);
- replacement score: the share of the influence of tokens and errors (the graph's sources)
  that is tokens'; completeness: the influence-weighted share of each node's normalised inputs
  that does not come from error nodes.

Pruned scores treat the features pruning dropped as error nodes (sources with no inputs whose
effect the pruned graph leaves unexplained), so they are at most the full graph's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from molab.circuits.graph import Graph
from molab.errors import MolabError


@dataclass
class Pruned:
    node_mask: torch.Tensor  # [N] bool: nodes kept
    edge_mask: torch.Tensor  # [N, N] bool: edges kept (rows targets, columns sources)
    cumulative_scores: torch.Tensor  # [N] float: share of total influence up to this node

    @property
    def n_nodes(self) -> int:
        return int(self.node_mask.sum())

    @property
    def n_edges(self) -> int:
        return int(self.edge_mask.sum())


def normalized(adjacency: torch.Tensor) -> torch.Tensor:
    """|A| with each row divided by its sum ([N, N]; a row of zeros stays zero)."""
    a = adjacency.abs().float()
    return a / a.sum(dim=1, keepdim=True).clamp(min=1e-10)


def influence(normalized_adjacency: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """weights (A + A^2 + ...) for an acyclic A [N, N]: [N], summed until a term is zero."""
    term = weights @ normalized_adjacency  # [N]
    total = term.clone()
    for _ in range(len(weights)):
        if not term.any():
            return total
        term = term @ normalized_adjacency
        total += term
    raise MolabError("the graph's adjacency has a cycle: influence does not converge")


def logit_weights(graph: Graph) -> torch.Tensor:
    """[N]: the logit nodes' probabilities, zero elsewhere."""
    w = torch.zeros(graph.n_nodes)
    w[graph.n_nodes - graph.n_logits :] = graph.logit_probs.float()
    return w


def node_influence(graph: Graph) -> torch.Tensor:
    """[N]: every node's influence on the logits."""
    return influence(normalized(graph.adjacency), logit_weights(graph))


def _threshold(scores: torch.Tensor, share: float) -> float:
    """The smallest score among the best ones that together hold `share` of the total."""
    ordered = scores.sort(descending=True).values
    total = ordered.sum()
    if total <= 0:
        return float("inf")
    cumulative = ordered.cumsum(0) / total
    i = min(int(torch.searchsorted(cumulative, share)), len(ordered) - 1)
    return float(ordered[i])


def _cumulative(scores: torch.Tensor) -> torch.Tensor:
    ordered, order = scores.sort(descending=True)
    out = torch.zeros_like(scores)
    out[order] = ordered.cumsum(0) / ordered.sum().clamp(min=1e-30)
    return out


def prune(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
    """The nodes and edges kept (see the module docstring); thresholds are shares in [0, 1]."""
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise MolabError(f"{name} must be between 0 and 1, got {value}")
    adjacency = graph.adjacency.float()
    if not torch.isfinite(adjacency).all():
        raise MolabError("the graph's adjacency holds NaN or infinite weights: it cannot be pruned")
    weights = logit_weights(graph)
    scores = influence(normalized(adjacency), weights)  # [N]
    sources_end = graph.n_features + graph.n_errors  # features and errors come first
    node_mask = scores >= _threshold(scores, node_threshold)
    node_mask[sources_end:] = True  # tokens and logits

    kept = adjacency * (node_mask[:, None] & node_mask[None, :])
    kept_norm = normalized(kept)
    edge_scores = kept_norm * (influence(kept_norm, weights) + weights)[:, None]  # [N, N]
    edge_mask = (edge_scores >= _threshold(edge_scores.flatten(), edge_threshold)) & (adjacency != 0)

    while True:
        before = node_mask.clone()
        edge_mask &= node_mask[:, None] & node_mask[None, :]
        node_mask[:sources_end] &= edge_mask[:, :sources_end].any(0)  # an out-edge
        node_mask[: graph.n_features] &= edge_mask[: graph.n_features].any(1)  # an in-edge
        if torch.equal(node_mask, before):
            break
    return Pruned(node_mask, edge_mask, _cumulative(scores))


def _scores(adjacency: torch.Tensor, weights: torch.Tensor, error: torch.Tensor, token: torch.Tensor) -> dict:
    norm = normalized(adjacency)
    node = influence(norm, weights)
    token_influence, error_influence = node[token].sum(), node[error].sum()
    replacement = token_influence / (token_influence + error_influence).clamp(min=1e-30)
    output = node + weights
    explained = 1 - norm[:, error].sum(dim=1)  # [N]: share of each node's inputs not from errors
    completeness = (explained * output).sum() / output.sum().clamp(min=1e-30)
    return {"replacement": float(replacement), "completeness": float(completeness)}


def graph_scores(graph: Graph, pruned: Pruned | None = None) -> dict[str, float]:
    """Replacement and completeness of the graph, or of its pruned form (module docstring)."""
    n, f = graph.n_nodes, graph.n_features
    error = torch.zeros(n, dtype=torch.bool)
    error[f : f + graph.n_errors] = True
    token = torch.zeros(n, dtype=torch.bool)
    token[f + graph.n_errors : f + graph.n_errors + graph.n_pos] = True
    adjacency = graph.adjacency.float()
    if pruned is not None:
        dropped = torch.zeros(n, dtype=torch.bool)
        dropped[:f] = ~pruned.node_mask[:f]
        error |= dropped
        adjacency = adjacency.clone()
        adjacency[dropped] = 0  # an error node has no inputs
    return _scores(adjacency, logit_weights(graph), error, token)
