"""`molab circuits pathways`: direct and total shares of a target logit on a hand-built graph
(known answers), feature activations read in another model, and the command."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import run_cli, tiny_llama
from test_circuits_attribution import PROMPT, trained_transcoders

from molab.circuits.attribution import AttributionConfig, attribute
from molab.circuits.graph import Graph, load_graph
from molab.circuits.pathways import (
    feature_activations,
    fired_features,
    missing_share,
    pathways,
    shared_features,
    top_keys,
)
from molab.circuits.prune import graph_scores
from molab.circuits.transcoder import save_set
from molab.errors import MolabError


def hand_graph() -> Graph:
    """2 layers, 2 positions: features A (layer 0, pos 1) and B (layer 1, pos 1), 4 error
    nodes, 2 tokens, 1 logit. Logit <- token 1 (2), B (-1), error (1, 1) (1); B <- A (3);
    A <- token 0 (1)."""
    n = 2 + 4 + 2 + 1
    a = torch.zeros(n, n)
    logit, tok0, tok1, err11 = 8, 6, 7, 2 + 1 * 2 + 1
    a[logit, tok1], a[logit, 1], a[logit, err11] = 2.0, -1.0, 1.0
    a[1, 0] = 3.0
    a[0, tok0] = 1.0
    return Graph(
        prompt="a b",
        input_ids=torch.tensor([5, 6]),
        tokens=["a", " b"],
        features=torch.tensor([[0, 1, 4], [1, 1, 9]]),
        activations=torch.tensor([2.0, 1.0]),
        logit_tokens=torch.tensor([42]),
        logit_probs=torch.tensor([0.7]),
        adjacency=a,
        n_layers=2,
        model_name="m",
        transcoders="tc",
        transcoder_layers=[0, 1],
    )


def test_direct_and_total_shares_of_a_hand_built_graph():
    result = pathways(hand_graph())
    assert result["active_per_token_layer"] is None  # a hand-built graph records no stats
    # direct: |2|, |-1|, |1| of 4
    assert result["direct"]["tokens"] == pytest.approx(0.5)
    assert result["direct"]["errors"] == pytest.approx(0.25)
    assert result["direct"]["features"] == pytest.approx(0.25)
    assert result["direct"]["features_by_layer"] == [0.0, 0.25]
    # total: token 1 0.5, B 0.25, error 0.25, then A 0.25 (through B), then token 0 0.25: of 1.5
    assert result["total"]["tokens"] == pytest.approx(0.75 / 1.5)
    assert result["total"]["errors"] == pytest.approx(0.25 / 1.5)
    assert result["total"]["features"] == pytest.approx(0.5 / 1.5)
    assert [(f["layer"], f["feature"]) for f in result["top_features"]] == [(0, 4), (1, 9)] or [
        (f["layer"], f["feature"]) for f in result["top_features"]
    ] == [(1, 9), (0, 4)]
    assert all(f["influence"] == pytest.approx(0.25) for f in result["top_features"])
    with pytest.raises(MolabError, match="out of range"):
        pathways(hand_graph(), target=1)


def test_missing_share_counts_the_influence_of_features_off_in_the_other_model():
    g = hand_graph()
    off_a = missing_share(g, torch.tensor([0.0, 1.0]))
    assert off_a["off_in_other"] == 1 and off_a["influence_off_in_other"] == pytest.approx(0.5)
    assert missing_share(g, g.activations)["influence_off_in_other"] == 0.0
    halved = missing_share(g, torch.tensor([0.9, 1.0]))  # A at 0.9 of 2.0: under half
    assert halved["influence_off_in_other"] == 0.0
    assert halved["influence_halved_in_other"] == pytest.approx(0.5)


def test_shared_features_key_by_layer_and_index_not_position():
    g = hand_graph()
    assert top_keys(g) == [((0, 4), pytest.approx(0.5)), ((1, 9), pytest.approx(0.5))] or top_keys(g) == [
        ((1, 9), pytest.approx(0.5)),
        ((0, 4), pytest.approx(0.5)),
    ]
    other = copy.deepcopy(g)
    other.features = torch.tensor([[0, 0, 4], [1, 0, 7]])  # A's key at another position; B absent
    shared = shared_features(g, other, fired={(0, 4), (2, 9)})
    assert shared["top"] == 2 and shared["top_share"] == pytest.approx(1.0)
    assert shared["fire_in_other"] == 1 and shared["fire_in_other_share"] == pytest.approx(0.5)
    assert shared["in_other_top"] == 1 and shared["in_other_top_share"] == pytest.approx(0.5)
    assert shared_features(g, other, fired=set())["fire_in_other"] == 0
    assert shared_features(g, g, fired={(0, 4), (1, 9)})["in_other_top_share"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def tiny_graph(tokenizer):
    model = tiny_llama(tokenizer)
    tset = trained_transcoders(model, tokenizer)
    config = AttributionConfig(max_feature_nodes=None, batch_size=16)
    graph = attribute(model, tokenizer, tset, PROMPT, config)
    return model, tset, graph


def test_feature_activations_in_the_same_model_are_the_graphs_and_differ_in_another(tokenizer, tiny_graph):
    model, tset, graph = tiny_graph
    same = feature_activations(model, tset, graph)
    assert torch.allclose(same, graph.activations.float(), atol=1e-5)
    assert missing_share(graph, same)["influence_off_in_other"] == 0.0
    changed = copy.deepcopy(model)  # layer 1's MLP input moved, as a fine-tune would move it
    with torch.no_grad():
        o_proj = changed.model.layers[1].self_attn.o_proj.weight
        o_proj.add_(torch.randn(o_proj.shape, generator=torch.Generator().manual_seed(0)) * 4 * o_proj.std())
    other = feature_activations(changed, tset, graph)
    layer0 = graph.features[:, 0] == 0
    assert torch.allclose(other[layer0], same[layer0]) and not torch.allclose(other, same, atol=1e-3)
    assert 0.0 < missing_share(graph, other)["influence_off_in_other"] < 1.0


def test_fired_features_hold_every_graph_feature_of_the_same_prompt(tokenizer, tiny_graph):
    model, tset, graph = tiny_graph
    fired = fired_features(model, tset, graph.input_ids)
    keys = {(layer, index) for layer, _, index in graph.features.tolist()}
    assert keys <= fired and all(layer in tset.layers for layer, _ in fired)
    other = fired_features(
        model, tset, tokenizer("Once upon a time there was a dog.", return_tensors="pt").input_ids[0]
    )
    assert other and other != fired


def test_pathways_command_prints_shares_and_checks_the_target(
    tmp_path, tiny_model_dir, tokenizer, monkeypatch, capsys
):
    from molab.models.loading import load_model

    model = load_model(str(tiny_model_dir)).model
    tc = save_set(tmp_path / "tc", trained_transcoders(model, tokenizer))
    out = tmp_path / "g.safetensors"
    args = ["circuits", "graph", "--model", tiny_model_dir, "--transcoders", tc, "--out", out]
    code, _, _ = run_cli([*args, "--prompt", PROMPT], monkeypatch, capsys)
    assert code == 0
    js = tmp_path / "p.json"
    code, stdout, _ = run_cli(
        ["circuits", "pathways", out, "--against", tiny_model_dir, "--json-out", js], monkeypatch, capsys
    )
    assert code in (0, None), stdout
    result = json.loads(js.read_text())
    direct = result["direct"]
    graph = load_graph(out)
    assert result["scores"] == pytest.approx(graph_scores(graph))
    assert 0.0 < result["scores"]["completeness"] <= 1.0
    assert result["active_per_token_layer"] == pytest.approx(
        graph.stats["active_features"] / (graph.n_pos * len(graph.transcoder_layers))
    )
    assert direct["tokens"] + direct["errors"] + direct["features"] == pytest.approx(1.0)
    same = result["against"][str(tiny_model_dir)]
    assert same["influence_off_in_other"] == 0.0  # the same model
    assert same["target_probability"] == pytest.approx(result["target"]["probability"], abs=1e-5)
    assert "direct: tokens" in stdout and "against" in stdout
    assert all("activation_in" in f for f in result["top_features"])
    other = tmp_path / "g2.safetensors"
    code, _, _ = run_cli([*args[:-1], other, "--prompt", "Once upon a time"], monkeypatch, capsys)
    assert code == 0
    js2 = tmp_path / "p2.json"
    code, stdout, _ = run_cli(
        ["circuits", "pathways", out, "--shared-with", out, "--shared-with", other, "--json-out", js2],
        monkeypatch,
        capsys,
    )
    assert code in (0, None), stdout
    shared = json.loads(js2.read_text())["shared_with"]
    assert shared[str(out)]["fire_in_other"] == shared[str(out)]["top"]  # a graph reaches all its own
    assert shared[str(out)]["in_other_top_share"] == pytest.approx(shared[str(out)]["top_share"])
    assert (
        shared[str(other)]["in_other_top"] <= shared[str(other)]["fire_in_other"] <= shared[str(other)]["top"]
    )
    assert "shared with" in stdout
    code, _, err = run_cli(["circuits", "pathways", out, "--target", " zebra"], monkeypatch, capsys)
    assert code == 1 and "not among the graph's logits" in err
