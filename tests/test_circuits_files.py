"""Transcoder sets and graph files: circuit-tracer's layout, round trips, and one-line errors."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from molab.circuits.graph import Graph, load_graph
from molab.circuits.transcoder import (
    THRESHOLD,
    Transcoder,
    TranscoderSet,
    load_transcoders,
    save_set,
)
from molab.errors import MolabError


def random_transcoder(layer: int, d_model: int = 8, d_tc: int = 32, skip: bool = False) -> Transcoder:
    g = torch.Generator().manual_seed(layer)
    t = Transcoder(d_model, d_tc, layer, skip=skip)
    with torch.no_grad():
        for p in t.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        t.threshold.copy_(torch.rand(d_tc, generator=g))
    return t


def test_jumprelu_keeps_only_activations_above_each_features_threshold():
    t = random_transcoder(0)
    x = torch.randn(5, 8)
    pre = x @ t.W_enc.T + t.b_enc
    f = t.encode(x)
    assert torch.equal(f != 0, pre > t.threshold)
    assert torch.allclose(f[f != 0], pre[f != 0])


def test_skip_path_is_added_to_the_decoder_and_needs_the_input():
    t = random_transcoder(0, skip=True)
    x = torch.randn(3, 8)
    f = t.encode(x)
    assert torch.allclose(t(x), f @ t.W_dec + t.b_dec + x @ t.W_skip.T)
    with pytest.raises(MolabError, match="skip connection"):
        t.decode(f)


def test_set_round_trips_in_circuit_tracers_layout(tmp_path):
    tset = TranscoderSet(
        {i: random_transcoder(i, skip=i == 1) for i in (0, 1)}, {"model_name": "m", "n_layers": 2}
    )
    out = save_set(tmp_path / "tc", tset)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model_kind"] == "transcoder_set"
    assert (cfg["feature_input_hook"], cfg["feature_output_hook"]) == ("mlp.hook_in", "mlp.hook_out")
    assert cfg["molab"]["layers"] == [0, 1]
    tensors = load_file(out / "layer_1.safetensors")
    assert set(tensors) == {"W_enc", "W_dec", "b_enc", "b_dec", THRESHOLD, "W_skip"}
    assert "k" not in tensors  # circuit-tracer's strict loader rejects a k tensor
    assert tensors["W_enc"].shape == (32, 8) and tensors["W_dec"].shape == (32, 8)

    back = load_transcoders(out)
    x = torch.randn(4, 8)
    for i in (0, 1):
        assert torch.allclose(back[i](x), tset[i](x))
    assert back.n_layers == 2 and back.layers == [0, 1]
    assert load_transcoders(out, layers=[1]).layers == [1]


def test_a_file_without_thresholds_loads_as_relu(tmp_path):
    t = random_transcoder(0)
    save_set(tmp_path / "tc", TranscoderSet({0: t}, {}))
    file = tmp_path / "tc" / "layer_0.safetensors"
    tensors = load_file(file)
    del tensors[THRESHOLD]
    save_file(tensors, file)
    back = load_transcoders(tmp_path / "tc")[0]
    x = torch.randn(2, 8)
    assert torch.allclose(back.encode(x), torch.relu(x @ t.W_enc.T + t.b_enc))


def test_bad_sets_give_one_line(tmp_path, tokenizer):
    from conftest import tiny_llama

    with pytest.raises(MolabError, match="config.yaml is missing"):
        load_transcoders(tmp_path)
    (tmp_path / "mine.txt").write_text("a user's file")
    with pytest.raises(MolabError, match="holds no transcoder set"):
        save_set(tmp_path, TranscoderSet({0: random_transcoder(0)}, {}))
    assert (tmp_path / "mine.txt").read_text() == "a user's file"

    out = save_set(tmp_path / "tc", TranscoderSet({0: random_transcoder(0), 5: random_transcoder(5)}, {}))
    with pytest.raises(MolabError, match=r"no transcoder for layers \[3\]"):
        load_transcoders(out, layers=[3])
    model = tiny_llama(tokenizer)  # width 64, 2 layers
    with pytest.raises(MolabError, match="d_model=8 do not fit"):
        load_transcoders(out).check_model(model, out)
    wide = save_set(tmp_path / "wide", TranscoderSet({5: random_transcoder(5, d_model=64)}, {}))
    with pytest.raises(MolabError, match=r"layers \[5\], but the model has layers 0 to 1"):
        load_transcoders(wide).check_model(model, wide)

    (out / "layer_0.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(MolabError, match="layer_0.safetensors is not a readable safetensors"):
        load_transcoders(out)
    (out / "config.yaml").write_text("model_kind: cross_layer_transcoder\n")
    with pytest.raises(MolabError, match="transcoder_set"):
        load_transcoders(out)


def small_graph() -> Graph:
    n_feat, n_layers, n_pos, n_logits = 2, 2, 3, 1
    n = n_feat + n_layers * n_pos + n_pos + n_logits
    return Graph(
        prompt="a b c",
        input_ids=torch.tensor([1, 2, 3]),
        tokens=["a", " b", " c"],
        features=torch.tensor([[0, 1, 7], [1, 2, 4]]),
        activations=torch.tensor([0.5, 1.5]),
        logit_tokens=torch.tensor([9]),
        logit_probs=torch.tensor([0.7]),
        adjacency=torch.randn(n, n),
        n_layers=n_layers,
        model_name="tiny",
        transcoders="tc",
        transcoder_layers=[0, 1],
        settings={"batch_size": 4},
    )


def test_graph_round_trip_and_node_indices(tmp_path):
    g = small_graph()
    assert (g.error_index(1, 2), g.token_index(0), g.logit_index(0)) == (2 + 3 + 2, 2 + 6, 2 + 6 + 3)
    back = load_graph(g.save(tmp_path / "g.safetensors"))
    assert torch.equal(back.adjacency, g.adjacency) and back.tokens == g.tokens
    assert back.settings == {"batch_size": 4} and back.transcoder_layers == [0, 1]


def test_bad_graph_files_give_one_line(tmp_path):
    g = small_graph()
    g.adjacency = torch.zeros(3, 3)
    with pytest.raises(MolabError, match="adjacency"):
        g.save(tmp_path / "g.safetensors")
    with pytest.raises(MolabError, match="no such graph file"):
        load_graph(tmp_path / "missing.safetensors")
    (tmp_path / "other.safetensors").write_bytes(b"junk")
    with pytest.raises(MolabError, match="not a molab graph file"):
        load_graph(tmp_path / "other.safetensors")
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(MolabError, match="is a directory"):
        small_graph().save(tmp_path / "dir.safetensors")
