"""Transcoder training (molab/circuits/train.py, train_eval.py) on synthetic pairs and the tiny
random Llama: learning a planted sparse map, the paired reader, the saved set, resume, the
replacement model's loss, and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import run_cli

from molab.circuits import train as train_module
from molab.circuits.train import (
    TranscoderTrainConfig,
    TranscoderTrainer,
    init_transcoder,
    train_layer,
    train_transcoders,
    write_set_config,
)
from molab.circuits.train_eval import replacement_loss
from molab.circuits.transcoder import Transcoder, TranscoderSet, load_transcoders, save_layer
from molab.models.activations import ActivationCache, ActivationsConfig, cache_activations
from molab.models.generation import Prompt
from molab.models.loading import ModelSpec, load_model

TEXTS = [
    f"Document {i}: the {w} walked to the {p} and bought {i % 7 + 2} apples before the rain started."
    for i, (w, p) in enumerate(
        [
            (w, p)
            for w in ("farmer", "teacher", "doctor", "child", "baker")
            for p in ("market", "shop", "fair")
        ]
        * 3
    )
]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return path


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(ModelSpec(name=str(tiny_model_dir)))


def config(tiny_model_dir, corpus, **over) -> TranscoderTrainConfig:
    settings = dict(
        model=ModelSpec(name=str(tiny_model_dir)),
        corpus=[corpus],
        layers=[0, 1],
        d_transcoder=96,
        k=8,
        tokens=2048,
        batch_size=128,
        lr=1e-2,
        shard_tokens=256,
        heldout=0.3,
        dead_tokens=512,
        eval_docs=4,
        calibration_batches=2,
    )
    return TranscoderTrainConfig(**(settings | over))


def test_recovers_a_planted_sparse_map():
    """mlp_in = z A, mlp_out = z B for a sparse nonnegative code z (~3 of 24 active; A has full
    row rank, so z is a linear function of x): the encoder must find z and the decoder write
    z B; FVU falls from above 1 to near 0."""
    g = torch.Generator().manual_seed(0)
    d, m, n = 32, 24, 256
    A, B = torch.randn(m, d, generator=g), torch.randn(m, d, generator=g)
    cfg = TranscoderTrainConfig(
        corpus=["x.jsonl"], d_transcoder=96, k=8, architecture="topk", skip=False, lr=5e-3
    )

    def batch():
        z = torch.rand(n, m, generator=g) * (torch.rand(n, m, generator=g) < 3 / m)
        return z @ A, z @ B

    x0, y0 = batch()
    trainer = TranscoderTrainer(init_transcoder(d, cfg, 0, y0.mean(0)), cfg, steps=400)
    fvus = [trainer.step(*batch()) for _ in range(400)]
    assert fvus[0] > 0.5
    assert sum(fvus[-50:]) / 50 < 0.05


def test_paired_batches_keep_pairs_aligned(tmp_path, tiny, corpus):
    """Every batch pairs each MLP input with that token's MLP output: mlp(x) == y row by row,
    after a shuffle, and each token comes once per epoch."""
    points = ["layers.1.mlp_in", "layers.1.mlp_out"]
    cfg = ActivationsConfig(corpus=corpus, points=points, dtype="float32", shard_tokens=100)
    cache_activations(cfg, tmp_path / "cache", tmp_path / "work", loaded=tiny)
    cache = ActivationCache(tmp_path / "cache")
    mlp = tiny.model.model.layers[1].mlp
    stored = torch.cat([b.activations for b in cache.ordered(points[0])])
    pairs = list(cache.paired_batches(points, 64, seed=3, buffer_shards=2))
    xs = torch.cat([x for x, _ in pairs])
    assert len(xs) == cache.tokens and not torch.equal(xs, stored)  # all tokens, shuffled
    with torch.no_grad():
        for x, y in pairs:
            torch.testing.assert_close(mlp(x), y, rtol=1e-4, atol=1e-5)


def test_trains_a_set_circuit_tracer_reads(tmp_path, tiny, corpus, tiny_model_dir):
    out = tmp_path / "set"
    record = train_transcoders(config(tiny_model_dir, corpus), out, loaded=tiny)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model_kind"] == "transcoder_set"
    assert (cfg["feature_input_hook"], cfg["feature_output_hook"]) == ("mlp.hook_in", "mlp.hook_out")
    assert cfg["activation"] == "jumprelu" and cfg["molab"]["layers"] == [0, 1]
    from safetensors.torch import load_file

    tensors = load_file(out / "layer_1.safetensors")
    assert {n: tuple(t.shape) for n, t in tensors.items()} == {
        "W_enc": (96, 64),
        "W_dec": (96, 64),
        "b_enc": (96,),
        "b_dec": (64,),
        "W_skip": (64, 64),
        "activation_function.threshold": (96,),
    }
    for layer in (0, 1):
        report = record["reports"][str(layer)]
        assert report["training_tokens"] == 2048 and report["curve"][-1]["fvu"] < report["curve"][0]["fvu"]
        assert 0 < report["heldout"]["fvu"] < 1 and 0 < report["heldout"]["l0"] <= 96
    rep = record["replacement"]
    assert rep["layers"] == [0, 1] and rep["tokens"] > 0 and rep["replacement_loss"] != rep["loss"]
    assert not (tmp_path / "set.work").exists()  # the caches are gone
    tset = load_transcoders(out)
    assert tset.layers == [0, 1] and tset.n_layers == 2 and tset.record["model_name"] == str(tiny_model_dir)


def test_saved_layer_loads_with_identical_outputs(tmp_path, tiny, corpus, tiny_model_dir):
    cfg = config(tiny_model_dir, corpus)
    points = ["layers.0.mlp_in", "layers.0.mlp_out"]
    caching = ActivationsConfig(
        corpus=corpus, points=points, dtype="float32", shard_tokens=256, skip_bos=True
    )
    cache_activations(caching, tmp_path / "cache", tmp_path / "work", loaded=tiny)
    tc, report = train_layer(ActivationCache(tmp_path / "cache"), 0, cfg)
    write_set_config(tmp_path / "set", tc, {"model_name": "tiny", "reports": {"0": report}}, [0])
    save_layer(tmp_path / "set", tc)
    loaded = load_transcoders(tmp_path / "set")[0]
    x = torch.randn(50, 64) * 3
    assert torch.equal(loaded(x), tc(x)) and torch.equal(loaded.encode(x), tc.encode(x))
    assert 0 < float((tc.encode(x) > 0).float().sum(-1).mean())


def test_resume_skips_saved_layers(tmp_path, tiny, corpus, tiny_model_dir, monkeypatch):
    out = tmp_path / "set"
    trained = []
    real = train_module.train_layer

    def spy(cache, layer, cfg):
        trained.append(layer)
        if layer == 1 and trained.count(1) == 1:
            raise KeyboardInterrupt  # the run is cut short during layer 1
        return real(cache, layer, cfg)

    monkeypatch.setattr(train_module, "train_layer", spy)
    with pytest.raises(KeyboardInterrupt):
        train_transcoders(config(tiny_model_dir, corpus, layers_per_pass=2), out, loaded=tiny)
    first = (out / "layer_0.safetensors").read_bytes()
    assert trained == [0, 1] and not (out / "layer_1.safetensors").exists()
    record = train_transcoders(config(tiny_model_dir, corpus, layers_per_pass=2), out, loaded=tiny)
    assert trained == [0, 1, 1]  # layer 0 skipped, layer 1 trained again
    assert (out / "layer_0.safetensors").read_bytes() == first
    assert sorted(record["reports"]) == ["0", "1"] and record["replacement"]["layers"] == [0, 1]
    train_transcoders(config(tiny_model_dir, corpus), out, loaded=tiny)
    assert trained == [0, 1, 1]
    with pytest.raises(Exception, match="d_transcoder 96"):
        train_transcoders(config(tiny_model_dir, corpus, d_transcoder=64), out, loaded=tiny)


class LinearMLP(torch.nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def forward(self, x):
        return x @ self.weight.T


def test_replacement_loss_of_an_exact_copy_equals_the_original(tokenizer):
    """A linear MLP copied into a transcoder's skip path (no feature fires) changes nothing; a
    transcoder that drops it changes the loss."""
    from conftest import tiny_llama

    model = tiny_llama(tokenizer)
    weight = torch.randn(64, 64) / 4
    model.model.layers[1].mlp = LinearMLP(weight)
    exact = Transcoder(64, 16, 1, skip=True)
    with torch.no_grad():
        exact.W_skip.copy_(weight)
        exact.threshold.fill_(1.0)  # pre-activations are 0: no feature fires
    docs = [Prompt(text=t) for t in TEXTS[:6]]
    same = replacement_loss(
        model, tokenizer, TranscoderSet({1: exact}, {}), docs, max_length=64, skip_bos=True
    )
    assert same["tokens"] > 0 and same["replacement_loss"] == pytest.approx(same["loss"], abs=1e-5)
    dropped = Transcoder(64, 16, 1)
    other = replacement_loss(
        model, tokenizer, TranscoderSet({1: dropped}, {}), docs, max_length=64, skip_bos=True
    )
    assert abs(other["replacement_loss"] - other["loss"]) > 1e-3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "0,5"], "layers [5]"),
        (["--empty"], "is empty"),
        (["--foreign"], "holds no transcoder set"),
    ],
)
def test_bad_inputs_give_one_line(tmp_path, corpus, tiny_model_dir, monkeypatch, capsys, args, message):
    out = tmp_path / "set"
    if "--empty" in args:
        corpus = tmp_path / "empty.jsonl"
        corpus.write_text("")
        args = []
    if "--foreign" in args:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        args = []
    code, _, err = run_cli(
        ["circuits", "train", "--model", tiny_model_dir, "--corpus", corpus, "--out", out, *args],
        monkeypatch,
        capsys,
    )
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "set.work").exists()
    if out.exists():
        assert [p.name for p in out.iterdir()] == ["notes.txt"]
