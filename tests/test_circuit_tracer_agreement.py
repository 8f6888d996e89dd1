"""molab's attribution graphs agree with circuit-tracer's (molab/bench/circuits.py).

circuit-tracer runs in its own environment, .venv-circuit-tracer (`scripts/circuit-tracer-env.sh`),
through scripts/circuit_tracer_graph.py; without it the slow tests skip. The fast tests check
the comparison itself on hand-built graphs (known answers), the random transcoders' calibration
and the script's view of a transformers-5 model folder.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from molab.bench.circuits import (
    ReferenceGraph,
    circuit_tracer_python,
    compare,
    mlp_inputs,
    prompt_ids,
    random_transcoders,
)
from molab.circuits.graph import Graph
from molab.circuits.transcoder import THRESHOLD, load_transcoders, save_set

ROOT = Path(__file__).resolve().parents[1]
needs_circuit_tracer = pytest.mark.skipif(
    circuit_tracer_python() is None, reason="no .venv-circuit-tracer (scripts/circuit-tracer-env.sh)"
)


def hand_built_pair(seed: int = 0) -> tuple[Graph, ReferenceGraph]:
    """The same graph twice: molab's node order, and circuit-tracer's with its features and
    logits in another order and one active feature it did not select."""
    n_layers, n_pos = 2, 3
    features = torch.tensor([[0, 1, 5], [0, 2, 7], [1, 1, 3], [1, 2, 9]])  # layer, pos, feature
    logits = torch.tensor([11, 42])
    n = len(features) + n_layers * n_pos + n_pos + len(logits)
    g = torch.Generator().manual_seed(seed)
    adjacency = torch.randn(n, n, generator=g)
    graph = Graph(
        prompt="p",
        input_ids=torch.tensor([1, 5, 6]),
        tokens=["<s>", "a", "b"],
        features=features,
        activations=torch.tensor([1.0, 2.0, 3.0, 4.0]),
        logit_tokens=logits,
        logit_probs=torch.tensor([0.7, 0.2]),
        adjacency=adjacency,
        n_layers=n_layers,
        model_name="tiny",
        transcoders="t",
        transcoder_layers=[0, 1],
    )
    feature_order = torch.tensor([2, 0, 3, 1])  # circuit-tracer's node i is molab's feature_order[i]
    logit_order = torch.tensor([1, 0])
    base = len(features)
    perm = torch.cat(
        [
            feature_order,
            torch.arange(base, base + (n_layers + 1) * n_pos),
            base + (n_layers + 1) * n_pos + logit_order,
        ]
    )
    active = torch.cat([features[feature_order], torch.tensor([[1, 2, 0]])])  # plus one unselected
    ref = ReferenceGraph(
        adjacency=adjacency[perm][:, perm].clone(),
        active_features=active,
        activation_values=torch.cat([graph.activations[feature_order], torch.tensor([9.0])]),
        selected_features=torch.arange(len(features)),
        input_ids=graph.input_ids.clone(),
        logit_tokens=logits[logit_order],
        logit_probs=graph.logit_probs[logit_order],
        meta={"n_layers": n_layers},
    )
    return graph, ref


def test_compare_maps_nodes_by_identity_not_position():
    graph, ref = hand_built_pair()
    report = compare(graph, ref)
    assert report["agree"] and report["nodes_compared"] == graph.n_nodes
    assert report["max_abs_diff"] == 0 and report["edges_out_of_tolerance"] == 0
    assert report["max_activation_diff"] == 0 and report["max_logit_prob_diff"] == 0


def test_compare_flags_an_edge_beyond_tolerance_and_accepts_rounding():
    graph, ref = hand_built_pair()
    ref.adjacency *= 1 + 1e-5  # float32-sized differences: within tolerance
    assert compare(graph, ref)["agree"]
    t, s = 0, len(graph.features)  # a feature row, an error column
    ref.adjacency[t, s] = ref.adjacency[t, s] * 1.01 + 0.1
    report = compare(graph, ref)
    assert not report["agree"] and report["edges_out_of_tolerance"] == 1
    assert report["max_abs_diff"] == pytest.approx(abs(ref.adjacency[t, s] - graph.adjacency[2, s]).item())


def test_compare_reports_missing_nodes_and_other_tokens():
    graph, ref = hand_built_pair()
    keep = [0, 1, 2]  # circuit-tracer selected one feature fewer: drop its node 3 (molab's feature 1)
    n = ref.adjacency.shape[0]
    rows = torch.tensor(keep + list(range(4, n)))
    ref.adjacency = ref.adjacency[rows][:, rows]
    ref.selected_features = torch.tensor(keep)
    report = compare(graph, ref)
    assert not report["agree"] and report["features_only_molab"] == [(0, 2, 7)]
    assert report["edges_out_of_tolerance"] == 0  # the common nodes still agree
    graph, ref = hand_built_pair()
    ref.input_ids = torch.tensor([1, 5, 8])
    report = compare(graph, ref)
    assert not report["agree"] and not report["same_tokens"]


def test_random_transcoders_fire_about_k_per_token(tiny_llama_model, tokenizer, tmp_path):
    texts = ["The capital of France is", "Once upon a time there was a cat"]
    tset = random_transcoders(tiny_llama_model, tokenizer, width=64, active_per_token=4, texts=texts, seed=3)
    assert tset.layers == [0, 1] and tset.widths == [64]
    x = mlp_inputs(tiny_llama_model, tokenizer, texts)  # [layers, tokens, d_model]
    for layer in tset.layers:
        per_token = (tset[layer].encode(x[layer]) != 0).sum(-1).float()
        assert per_token.mean().item() == pytest.approx(4, abs=0.1)
    folder = save_set(tmp_path / "tc", tset)
    loaded = load_transcoders(folder)  # circuit-tracer's layout, JumpReLU thresholds saved
    assert torch.equal(loaded[1].threshold, tset[1].threshold)
    from safetensors import safe_open

    with safe_open(folder / "layer_0.safetensors", framework="pt") as f:
        assert THRESHOLD in f.keys() and "k" not in f.keys()


@pytest.fixture
def tiny_llama_model(tokenizer):
    from conftest import tiny_llama

    return tiny_llama(tokenizer)


def load_graph_script():
    spec = importlib.util.spec_from_file_location(
        "circuit_tracer_graph", ROOT / "scripts" / "circuit_tracer_graph.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_graph_script_reads_a_transformers_5_folder_as_4_57_does(tiny_model_dir, tmp_path):
    script = load_graph_script()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    view = script.legacy_view(tiny_model_dir, tmp_path / "view")
    if "rope_parameters" not in config:  # saved by a transformers that needs no shim
        assert view == tiny_model_dir
        return
    rewritten = json.loads((view / "config.json").read_text())
    assert rewritten["rope_theta"] == config["rope_parameters"]["rope_theta"]
    assert (view / "model.safetensors").resolve() == (tiny_model_dir / "model.safetensors").resolve()
    tok = json.loads((view / "tokenizer_config.json").read_text())
    assert tok["tokenizer_class"] != "TokenizersBackend"
    assert json.loads((tiny_model_dir / "config.json").read_text()) == config  # the original is untouched


def agreement(model_spec: str, tmp_path: Path, *, width: int, active: float, prompt: str) -> dict:
    from molab.bench.circuits import check_agreement
    from molab.models.loading import ModelSpec, load_model

    loaded = load_model(ModelSpec(name=model_spec, device="cpu"))
    tset = random_transcoders(loaded.model, loaded.tokenizer, width=width, active_per_token=active, seed=1)
    folder = save_set(tmp_path / "tc", tset)
    report = check_agreement(loaded, folder, prompt, tmp_path, python=circuit_tracer_python(), batch_size=64)
    assert report["same_tokens"], report
    assert report["nodes_compared"] > len(prompt_ids(loaded.tokenizer, prompt)) * (
        loaded.model.config.num_hidden_layers + 1
    )
    return report


@pytest.mark.slow
@needs_circuit_tracer
def test_agreement_on_the_tiny_model(tiny_model_dir, tmp_path):
    report = agreement(str(tiny_model_dir), tmp_path, width=32, active=3, prompt="The capital of France is")
    assert report["agree"], report
    assert report["max_logit_prob_diff"] < 1e-5 and report["max_activation_diff"] < 1e-4


@pytest.mark.slow
@needs_circuit_tracer
def test_agreement_on_the_default_model(tmp_path):
    report = agreement("smollm2-135m", tmp_path, width=64, active=2, prompt="The capital of France is")
    assert report["agree"], report
    assert report["max_logit_prob_diff"] < 1e-5 and report["max_activation_diff"] < 1e-4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ct-batch-sizes", "64,x"], "--ct-batch-sizes"),
        (["--ct-batch-sizes", "0"], "positive batch size"),
        (["--max-feature-nodes", "0"], "--max-feature-nodes"),
    ],
)
def test_bench_circuits_refuses_bad_options_before_work(args, message, monkeypatch, capsys):
    from conftest import run_cli

    import molab.bench.circuits as bench

    monkeypatch.setattr(bench, "bench_circuits", lambda *a, **k: pytest.fail("ran despite a bad option"))
    code, _, err = run_cli(["bench", "circuits", *args], monkeypatch, capsys)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1


def test_bench_without_the_second_environment_measures_molab_alone(tiny_model_dir, monkeypatch, tmp_path):
    import molab.bench.circuits as bench

    monkeypatch.setattr(bench, "circuit_tracer_python", lambda explicit=None: None)
    result = bench.bench_circuits(
        str(tiny_model_dir),
        width=32,
        active_per_token=2,
        max_feature_nodes=20,
        keep=tmp_path,
        log=lambda *a: None,
    )
    assert (
        result["circuit_tracer"]["available"] is False and "molab alone" in result["circuit_tracer"]["note"]
    )
    assert "ratios" not in result and result["setting"]["n_layers"] == 2
    molab = result["molab"]
    assert molab["graph_s"] > 0 and molab["peak_rss_bytes"] > 0 and 0 < molab["n_selected"] <= 20
    from molab.circuits.graph import load_graph

    graph = load_graph(tmp_path / "molab.safetensors")
    assert graph.n_layers == 2 and graph.n_features == molab["n_selected"]
