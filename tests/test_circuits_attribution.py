"""Attribution graphs on the tiny Llama: structure, edges equal to direct interventions on the
frozen replacement model, exact reconstruction of the logits, and one-line errors."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama

from molab.circuits.attribution import AttributionConfig, attribute
from molab.circuits.edges import encode
from molab.circuits.replacement import record, replay
from molab.circuits.targets import logit_targets, prompt_ids
from molab.circuits.transcoder import Transcoder, TranscoderSet, save_set
from molab.errors import MolabError
from molab.models.hooks import capture

PROMPT = "The cat sat on the mat because it was"
ACTIVE_PER_TOKEN = 6


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(tokenizer)


def trained_transcoders(
    model, tokenizer, layers=(0, 1), skip_layers=(1,), width=96, steps=30
) -> TranscoderSet:
    """Transcoders trained a few Adam steps on the tiny model's MLPs, then given JumpReLU
    thresholds at which about ACTIVE_PER_TOKEN features fire per token."""
    texts = ["Once upon a time there was a dog.", "Numbers: 1 2 3 4 5 6 7 8 9.", PROMPT]
    names = [f"layers.{i}.{p}" for i in layers for p in ("mlp_in", "mlp_out")]
    xs = {n: [] for n in names}
    with torch.no_grad():
        for text in texts:
            with capture(model, names) as values:
                model(input_ids=prompt_ids(tokenizer, text)[None])
            for n in names:
                xs[n].append(values[n][0])
    g = torch.Generator().manual_seed(0)
    out = {}
    for i in layers:
        x, y = torch.cat(xs[f"layers.{i}.mlp_in"]), torch.cat(xs[f"layers.{i}.mlp_out"])
        t = Transcoder(64, width, i, skip=i in skip_layers, activation="relu")
        with torch.no_grad():
            t.W_enc.copy_(torch.randn(width, 64, generator=g) / 8)
            t.W_dec.copy_(torch.randn(width, 64, generator=g) / 8)
            if t.W_skip is not None:
                t.W_skip.normal_(0, 0.05, generator=g)
        opt = torch.optim.Adam(t.parameters(), lr=1e-2)
        for _ in range(steps):
            opt.zero_grad()
            loss = (t(x) - y).pow(2).mean()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pre = t.pre_acts(x)
            t.threshold.fill_(float(pre.flatten().quantile(1 - ACTIVE_PER_TOKEN / width)))
        t.activation = "jumprelu"
        out[i] = t
    return TranscoderSet(out, {"model_name": "tiny", "n_layers": 2})


@pytest.fixture(scope="module")
def transcoders(model, tokenizer):
    return trained_transcoders(model, tokenizer)


@pytest.fixture(scope="module")
def full_graph(model, tokenizer, transcoders):
    return attribute(
        model, tokenizer, transcoders, PROMPT, AttributionConfig(max_feature_nodes=None, batch_size=16)
    )


class Frozen:
    """Direct interventions on the frozen replacement model of PROMPT."""

    def __init__(self, model, tokenizer, transcoders, graph):
        self.model, self.tc, self.graph = model, transcoders, graph
        self.state = record(model, graph.input_ids)
        _, self.errors = encode(self.state, transcoders, zero_bos=True)
        self.directions = logit_targets(
            model, tokenizer, self.state.last_logits, max_n_logits=10, desired_logit_prob=0.95
        ).directions
        self.base = self.values(replay(model, self.state, transcoders))

    def values(self, replayed) -> torch.Tensor:
        """Every feature node's pre-activation, then every logit node's de-meaned logit."""
        return torch.cat(
            [replayed.feature_values(self.tc, self.graph.features), replayed.logit_values(self.directions)]
        )

    def effect(self, mlp_out_delta=None, embed_delta=None) -> torch.Tensor:
        replayed = replay(
            self.model, self.state, self.tc, mlp_out_delta=mlp_out_delta, embed_delta=embed_delta
        )
        return self.values(replayed) - self.base

    def zeros(self) -> torch.Tensor:
        return torch.zeros_like(self.state.mlp_out)

    def target_rows(self, adjacency: torch.Tensor, column: int) -> torch.Tensor:
        g = self.graph
        return torch.cat([adjacency[: g.n_features, column], adjacency[-g.n_logits :, column]])


@pytest.fixture(scope="module")
def frozen(model, tokenizer, transcoders, full_graph):
    return Frozen(model, tokenizer, transcoders, full_graph)


def test_graph_nodes_come_in_circuit_tracers_order(model, tokenizer, full_graph):
    g = full_graph
    ids = prompt_ids(tokenizer, PROMPT)
    assert torch.equal(g.input_ids, ids) and ids[0] == tokenizer.bos_token_id
    assert g.tokens[1:] == [tokenizer.decode([i]) for i in ids[1:].tolist()]
    assert g.n_nodes == g.n_features + 2 * g.n_pos + g.n_pos + g.n_logits == g.adjacency.shape[0]
    assert g.stats["active_features"] == g.n_features  # no cap: every active feature is a node
    assert (g.features[:, 1] > 0).all()  # the first position's features are zeroed
    order = g.features[:, 0] * 10**6 + g.features[:, 1] * 10**4 + g.features[:, 2]
    assert torch.equal(order, order.sort().values)
    assert g.n_features / (2 * (g.n_pos - 1)) == pytest.approx(ACTIVE_PER_TOKEN, rel=0.5)
    sources_only = slice(g.n_features, g.n_features + 3 * g.n_pos)  # errors and tokens have no inputs
    assert not g.adjacency[sources_only].any()
    assert not g.adjacency[:, [g.error_index(0, 0), g.error_index(1, 0)]].any()  # BOS error zeroed
    assert not g.adjacency[:, -g.n_logits :].any()
    probs = torch.softmax(model(input_ids=ids[None]).logits[0, -1].detach(), -1)
    top = probs.topk(g.n_logits)
    assert torch.equal(g.logit_tokens, top.indices)
    assert torch.allclose(g.logit_probs, top.values, atol=1e-5)
    cumulative = g.logit_probs.cumsum(0)
    assert g.n_logits == 10 or (cumulative[-1] >= 0.95 and cumulative[-2] < 0.95)


def test_every_edge_equals_a_direct_intervention_on_the_frozen_model(frozen, full_graph):
    g, a = full_graph, full_graph.adjacency
    checked = 0
    for s in torch.linspace(0, g.n_features - 1, 8).long().tolist():  # feature -> feature, feature -> logit
        layer, pos, f = g.features[s].tolist()
        delta = frozen.zeros()
        delta[layer, pos] = g.activations[s] * frozen.tc[layer].W_dec[f]
        got = frozen.effect(mlp_out_delta=delta)
        assert torch.allclose(got, frozen.target_rows(a, s), atol=5e-4), (layer, pos, f)
        checked += int((frozen.target_rows(a, s) != 0).sum())
    for layer, pos in [(0, 1), (0, g.n_pos - 1), (1, 3)]:  # error -> feature / logit
        delta = frozen.zeros()
        delta[layer, pos] = frozen.errors[layer, pos]
        got = frozen.effect(mlp_out_delta=delta)
        assert torch.allclose(got, frozen.target_rows(a, g.error_index(layer, pos)), atol=5e-4)
    for pos in range(g.n_pos):  # token -> feature / logit
        delta = torch.zeros_like(frozen.state.embeddings)
        delta[pos] = frozen.state.embeddings[pos]
        got = frozen.effect(embed_delta=delta)
        assert torch.allclose(got, frozen.target_rows(a, g.token_index(pos)), atol=5e-4)
    assert checked > 20  # the sampled edges are not all zero


def test_with_error_nodes_the_graph_reconstructs_the_models_logits(model, frozen, full_graph):
    g = full_graph
    remove_all = -frozen.errors.clone()
    for (layer, pos, f), act in zip(g.features.tolist(), g.activations, strict=True):
        remove_all[layer, pos] -= act * frozen.tc[layer].W_dec[f]
    constant = frozen.effect(remove_all, -frozen.state.embeddings)[-g.n_logits :] + frozen.base[-g.n_logits :]
    logits = model(input_ids=g.input_ids[None]).logits[0, -1].detach()
    want = logits[g.logit_tokens] - logits.mean()
    assert torch.allclose(g.adjacency[-g.n_logits :].sum(1) + constant, want, atol=1e-3)


def test_the_autograd_backward_gives_the_same_graph(model, tokenizer, transcoders, full_graph):
    slow = attribute(
        model, tokenizer, transcoders, PROMPT, AttributionConfig(max_feature_nodes=None, fast_backward=False)
    )
    assert slow.stats["fast_layers"] == 0 and full_graph.stats["fast_layers"] == 2
    assert torch.allclose(slow.adjacency, full_graph.adjacency, atol=1e-5)


def test_a_lazily_loaded_set_gives_the_same_graph(model, tokenizer, transcoders, full_graph, tmp_path):
    from molab.circuits.transcoder import LazyTranscoder, load_transcoders, save_set

    lazy = load_transcoders(save_set(tmp_path / "tc", transcoders), lazy=True)
    assert isinstance(lazy[0], LazyTranscoder)
    assert not [n for n, _ in lazy.named_parameters() if n.endswith(("W_enc", "W_dec"))]  # on disk
    graph = attribute(
        model, tokenizer, lazy, PROMPT, AttributionConfig(max_feature_nodes=None, batch_size=16)
    )
    assert torch.equal(graph.features, full_graph.features)
    assert torch.allclose(graph.adjacency, full_graph.adjacency, atol=1e-6)


def test_capped_feature_rows_keep_the_most_influential_and_their_exact_edges(
    model, tokenizer, transcoders, full_graph
):
    cap = full_graph.n_features // 3
    g = attribute(
        model, tokenizer, transcoders, PROMPT, AttributionConfig(max_feature_nodes=cap, batch_size=4)
    )
    assert g.n_features == cap and g.stats["feature_rows"] == cap
    full = {tuple(f): i for i, f in enumerate(full_graph.features.tolist())}
    kept = torch.tensor([full[tuple(f)] for f in g.features.tolist()])
    others = torch.arange(full_graph.n_features, full_graph.n_nodes)
    nodes = torch.cat([kept, others])
    assert torch.allclose(g.adjacency, full_graph.adjacency[nodes][:, nodes], atol=1e-5)
    # the first feature rows follow the logits' direct edges: the strongest of them is kept
    logit_rows = full_graph.adjacency[-full_graph.n_logits :, : full_graph.n_features].abs()
    direct = (logit_rows / logit_rows.sum(1, keepdim=True) * full_graph.logit_probs[:, None]).sum(0)
    assert int(direct.argmax()) in kept.tolist()


def test_a_layer_without_a_transcoder_is_all_error(model, tokenizer, transcoders):
    only_last = TranscoderSet({1: transcoders[1]}, transcoders.record)
    g = attribute(model, tokenizer, only_last, PROMPT, AttributionConfig(max_feature_nodes=None))
    assert (g.features[:, 0] == 1).all() and g.transcoder_layers == [1]
    frozen = Frozen(model, tokenizer, only_last, g)
    mlp_out = record(model, g.input_ids).mlp_out
    assert torch.equal(frozen.errors[0, 1:], mlp_out[0, 1:])  # the whole MLP output
    delta = frozen.zeros()
    delta[0, 2] = frozen.errors[0, 2]
    column = frozen.target_rows(g.adjacency, g.error_index(0, 2))
    assert column.abs().max() > 1e-3
    assert torch.allclose(frozen.effect(mlp_out_delta=delta), column, atol=5e-4)


def test_named_targets_replace_the_top_logits(model, tokenizer, transcoders):
    g = attribute(
        model, tokenizer, transcoders, PROMPT, AttributionConfig(targets=[" dog", "42"], max_feature_nodes=5)
    )
    assert len(tokenizer.encode("42")) == 2  # digits are single tokens: "42" is read as an id
    assert g.logit_tokens.tolist() == [tokenizer.encode(" dog")[0], 42]
    with pytest.raises(MolabError, match="not one"):
        attribute(model, tokenizer, transcoders, PROMPT, AttributionConfig(targets=[" hippopotamus-like"]))


def test_bad_inputs_give_one_line(tokenizer, transcoders):
    short = tiny_llama(tokenizer, max_position_embeddings=4)
    with pytest.raises(MolabError, match="context is 4"):
        attribute(short, tokenizer, transcoders, PROMPT)
    narrow = TranscoderSet({0: Transcoder(32, 16, 0)}, {"model_name": "other"})
    with pytest.raises(MolabError, match="d_model=32"):
        attribute(tiny_llama(tokenizer), tokenizer, narrow, PROMPT)
    deep = TranscoderSet({5: Transcoder(64, 16, 5)}, {"model_name": "tiny"})
    with pytest.raises(MolabError, match=r"layers \[5\]"):
        attribute(tiny_llama(tokenizer), tokenizer, deep, PROMPT)


def test_graph_command_writes_a_graph_and_checks_its_inputs(
    tmp_path, tiny_model_dir, tokenizer, monkeypatch, capsys
):
    from conftest import run_cli

    from molab.circuits.graph import load_graph
    from molab.models.loading import load_model

    tc = save_set(tmp_path / "tc", trained_transcoders(load_model(str(tiny_model_dir)).model, tokenizer))
    out = tmp_path / "g.safetensors"
    args = ["circuits", "graph", "--model", tiny_model_dir, "--transcoders", tc, "--out", out]
    code, stdout, _ = run_cli([*args, "--prompt", PROMPT, "--max-feature-nodes", "7"], monkeypatch, capsys)
    assert code == 0, stdout
    graph = load_graph(out)
    assert graph.n_features == 7 and graph.transcoders == str(tc) and "7 features" in stdout
    small = tmp_path / "small.safetensors"
    code, stdout, _ = run_cli(
        [*args[:-1], small, "--prompt", PROMPT, "--max-memory-gb", "0.00003"], monkeypatch, capsys
    )
    assert code == 0, stdout
    capped = load_graph(small)
    assert 0 < capped.n_features == capped.stats["row_cap"] < capped.stats["active_features"]
    assert f"capped at {capped.n_features}" in stdout
    code, _, err = run_cli(
        [*args[:-1], tmp_path / "g3.safetensors", "--prompt", PROMPT, "--max-memory-gb", "1e-9"],
        monkeypatch,
        capsys,
    )
    assert code != 0 and "before any feature row" in err
    (tmp_path / "long.txt").write_text("word " * 1100)
    code, _, err = run_cli(
        [*args[:-1], tmp_path / "g2.safetensors", "--prompt-file", tmp_path / "long.txt"], monkeypatch, capsys
    )
    assert code != 0 and "context is 1024" in err.strip().splitlines()[-1]
    assert not (tmp_path / "g2.safetensors").exists()


def test_the_row_store_keeps_only_columns_below_each_target_and_ranks_exactly():
    from molab.circuits.attribution import RowStore

    g = torch.Generator().manual_seed(0)
    starts, n_pos, n_logits = [0, 3, 7, 12], 2, 2
    n_active, n_layers = starts[-1], len(starts) - 1
    n_cols = n_active + (n_layers + 1) * n_pos
    layer_of = torch.repeat_interleave(torch.arange(n_layers), torch.tensor([3, 4, 5]))
    targets = torch.cat([torch.arange(1, n_active), n_active + torch.arange(n_logits)])
    layers = torch.cat([layer_of[1:], torch.full((n_logits,), n_layers)])
    rows = torch.randn(len(targets), n_cols, generator=g)
    for r, layer in enumerate(layers.tolist()):  # sources below the target only
        rows[r, starts[layer] : n_active] = 0
        rows[r, n_active + layer * n_pos : n_active + n_layers * n_pos] = 0
    store = RowStore(starts, n_pos, torch.tensor([0.7, 0.3]))
    order = torch.randperm(len(targets), generator=g)
    store.add(rows[order], targets[order], layers[order])
    assert sum(b.numel() for layer in range(n_layers + 1) for b in store.rows(layer)) < rows.numel()
    # dense reference: x = p (A + A^2 + ...) over feature and logit nodes
    a = torch.zeros(n_active + n_logits, n_active + n_logits)
    norm = rows.abs() / rows.abs().sum(1, keepdim=True)
    a[targets, :n_active] = norm[:, :n_active]
    x = torch.cat([torch.zeros(n_active), store.logit_probs])
    total = torch.zeros_like(x)
    for _ in range(n_layers + 1):
        x = x @ a
        total += x
    assert torch.allclose(store.influence(), total[:n_active], atol=1e-6)
