"""Pruning and scores on a hand-built graph whose answers are worked out by hand below."""

from __future__ import annotations

import pytest
import torch

from molab.circuits.graph import Graph
from molab.circuits.prune import graph_scores, influence, normalized, prune
from molab.errors import MolabError

# The hand graph: 2 layers, 1 position, one logit (p = 0.9). Nodes, in the graph's order:
A, B, C, D, E0, E1, T, L = range(8)  # features a (L0), b (L0), c (L1), d (L1, isolated); errors; token; logit
EDGES = {  # (target, source): direct effect
    (A, T): 1.0,
    (B, T): -1.0,  # negative: pruning uses |A|
    (C, A): 3.0,
    (C, B): 0.5,
    (C, T): 0.5,  # the weak edge
    (L, C): 2.0,
    (L, E1): 2.0,
}
# By hand, with the logit's weight 1 (p scales every influence alike, not the shares):
# normalised rows: c = (a .75, b .125, t .125), l = (c .5, e1 .5), a = (t 1), b = (t 1)
# influence: c .5, e1 .5; then a .375, b .0625, t .0625; then t += .375 + .0625 -> t .5
# total 1.9375: sorted .5 .5 .5 .375 .0625 -> cumulative .258 .516 .774 .968 1
INFLUENCE = {A: 0.375, B: 0.0625, C: 0.5, D: 0.0, E0: 0.0, E1: 0.5, T: 0.5, L: 0.0}


def hand_graph(model_name: str = "tiny") -> Graph:
    adjacency = torch.zeros(8, 8)
    for (target, source), weight in EDGES.items():
        adjacency[target, source] = weight
    return Graph(
        prompt="hi",
        input_ids=torch.tensor([17]),
        tokens=["hi"],
        features=torch.tensor([[0, 0, 5], [0, 0, 7], [1, 0, 3], [1, 0, 9]]),
        activations=torch.tensor([1.5, 0.5, 2.0, 0.25]),
        logit_tokens=torch.tensor([42]),
        logit_probs=torch.tensor([0.9]),
        adjacency=adjacency,
        n_layers=2,
        model_name=model_name,
        transcoders="tc",
        transcoder_layers=[0, 1],
    )


def kept_edges(pruned) -> set[tuple[int, int]]:
    return {tuple(e) for e in pruned.edge_mask.nonzero().tolist()}


def test_influence_matches_the_hand_computation():
    g = hand_graph()
    weights = torch.zeros(8)
    weights[L] = 0.9
    got = influence(normalized(g.adjacency), weights)
    assert torch.allclose(got, 0.9 * torch.tensor([INFLUENCE[i] for i in range(8)]))


def test_influence_equals_the_sum_of_matrix_powers_on_a_random_dag():
    n = 40
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).tril(-1) * (torch.rand(n, n, generator=g) < 0.3)
    order = torch.randperm(n, generator=g)
    a = a[order][:, order]  # acyclic, but not triangular in node order
    weights = torch.rand(n, generator=g)
    norm = normalized(a).double()
    brute, power = torch.zeros(n, dtype=torch.float64), torch.eye(n, dtype=torch.float64)
    for _ in range(n):  # A + A^2 + ... + A^n, each power formed in full
        power = power @ norm
        brute += weights.double() @ power
    assert power.abs().max() == 0  # nilpotent: the series is finite
    assert torch.allclose(influence(normalized(a), weights).double(), brute, atol=1e-6)


def test_a_cycle_is_refused():
    a = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(MolabError, match="cycle"):
        influence(normalized(a), torch.tensor([1.0, 0.0]))


def test_default_pruning_drops_the_weak_branch_and_the_isolated_node():
    pruned = prune(hand_graph())
    # node threshold .8: the first cumulative share >= .8 is a's (.968), so b (.0625), d, e0 go
    assert pruned.node_mask.tolist() == [True, False, True, False, False, True, True, True]
    # pruned graph: c = (a 6/7, t 1/7); influence + logit weight: a 3/7, c .5, e1 .5, t .5, l 1;
    # edge scores a<-t 3/7, c<-a 3/7, c<-t 1/14, l<-c .5, l<-e1 .5: at .98 all five stay
    assert kept_edges(pruned) == {(A, T), (C, A), (C, T), (L, C), (L, E1)}
    total = sum(INFLUENCE.values())
    assert pruned.cumulative_scores[A] == pytest.approx((1.5 + 0.375) / total)
    assert pruned.cumulative_scores[B] == pytest.approx(1.0)
    ties = sorted(pruned.cumulative_scores[[C, E1, T]].tolist())
    assert ties == pytest.approx([0.5 / total, 1.0 / total, 1.5 / total])
    assert pruned.cumulative_scores[[D, E0, L]].tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_edge_threshold_drops_the_weak_edge():
    # shares of the five edges: .259 .519 .741 .963 1 -> at .9 the 1/14 edge c<-t goes
    pruned = prune(hand_graph(), edge_threshold=0.9)
    assert kept_edges(pruned) == {(A, T), (C, A), (L, C), (L, E1)}
    assert pruned.n_nodes == 5


def test_nodes_left_without_edges_are_dropped_until_nothing_changes():
    # at .5 only l<-c and l<-e1 stay: a loses its out-edge and c its in-edges; c's going then
    # removes l<-c, and what is left is the error's path
    pruned = prune(hand_graph(), edge_threshold=0.5)
    assert pruned.node_mask.nonzero().flatten().tolist() == [E1, T, L]
    assert kept_edges(pruned) == {(L, E1)}


def test_tokens_and_logits_are_always_kept():
    g = hand_graph()
    g.adjacency.zero_()
    pruned = prune(g)
    assert pruned.node_mask.nonzero().flatten().tolist() == [T, L]
    assert pruned.n_edges == 0


def test_bad_thresholds_and_non_finite_weights_are_refused():
    with pytest.raises(MolabError, match="node_threshold must be between 0 and 1"):
        prune(hand_graph(), node_threshold=1.5)
    g = hand_graph()
    g.adjacency[C, A] = float("nan")
    with pytest.raises(MolabError, match="NaN or infinite"):
        prune(g)


def test_scores_of_the_full_and_the_pruned_graph():
    g = hand_graph()
    # replacement: token .5 against error .5; completeness: every row is free of error inputs
    # but l's (.5), weighted by influence + logit weight (sum 2.9375): 2.4375 / 2.9375
    assert graph_scores(g) == pytest.approx({"replacement": 0.5, "completeness": 2.4375 / 2.9375})
    # pruned: b and d count as errors without inputs; t's influence drops to .4375, the errors'
    # is .5 + .0625; c's inputs are .125 error: (2.875 - .5 * .125 - .5) / 2.875
    pruned = graph_scores(g, prune(g))
    assert pruned == pytest.approx({"replacement": 0.4375, "completeness": 2.3125 / 2.875})
