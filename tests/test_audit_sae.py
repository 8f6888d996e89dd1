"""SAEs (molab/audit/sae.py, sae_train.py, features.py): training recovers planted sparse
directions, the three encoders agree, files round-trip in SAELens' layout, sparsify checkpoints
import, feature views rank a planted feature with its sources, and bad inputs give one line."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli
from safetensors.torch import save_file

import molab.cli.audit_sae  # noqa: F401  (adds `molab audit sae` to the audit app)
from molab.audit.features import assistant_features, document_firing, feature_views, unembedding
from molab.audit.sae import SAE, import_sae, load_sae
from molab.audit.sae_train import (
    SAETrainConfig,
    Trainer,
    evaluate,
    init_sae,
    jumprelu_thresholds,
    select,
    train_sae,
)
from molab.bench.sae import synthetic_cache
from molab.errors import MolabError
from molab.models.activations import ActivationCache, ActivationsConfig, cache_activations
from molab.models.loading import ModelSpec, load_model

POINT = "layers.1.resid_post"


def planted(n: int, d: int = 64, m: int = 96, per_token: int = 3, seed: int = 7):
    """n activations [n, d], each a sum of `per_token` of `m` fixed unit directions with random
    positive magnitudes, plus an offset; and the directions [m, d]."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(m, d, generator=g)
    dirs /= dirs.norm(dim=-1, keepdim=True)
    which = torch.rand(n, m, generator=g).argsort(-1)[:, :per_token]
    mags = torch.zeros(n, m).scatter(1, which, 1 + 2 * torch.rand(n, per_token, generator=g))
    return mags @ dirs + 0.5, dirs


def recovered(sae: SAE, dirs: torch.Tensor) -> torch.Tensor:
    """For each planted direction, the best cosine with a decoder row."""
    w = sae.W_dec.detach()
    return (dirs @ (w / w.norm(dim=-1, keepdim=True)).T).max(dim=1).values


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_training_recovers_planted_directions_and_fvu_falls(arch, tmp_path):
    x, dirs = planted(60_000)
    cfg = SAETrainConfig(cache=tmp_path, architecture=arch, k=3, d_sae=192, batch_size=512, lr=3e-3)
    sae = init_sae(64, cfg, x[:2048], POINT)
    trainer = Trainer(sae, cfg)
    before = recovered(sae, dirs)
    fvus = [trainer.step(b) for _ in range(3) for b in x.split(512)]
    assert sum(fvus[-20:]) / 20 < min(0.06, 0.1 * sum(fvus[:5]) / 5)
    after = recovered(sae, dirs)
    assert (after > 0.9).float().mean() > 0.8 and (before > 0.9).float().mean() < 0.1
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(192), atol=1e-4)  # unit-norm rows


def test_topk_batchtopk_and_jumprelu_encoders_agree():
    g = torch.Generator().manual_seed(0)
    sae = SAE(16, 64, architecture="topk", k=4, hook_name=POINT)
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.b_dec):
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(256, 16, generator=g)
    pre = sae.pre_acts(x)
    top = sae.encode(x)
    assert ((top > 0).sum(-1) == 4).all() and torch.equal(top, select(pre, 4, batch=False))
    assert torch.equal(top[top > 0], torch.relu(pre)[top > 0])  # kept values unchanged
    batch = select(pre, 4, batch=True)
    assert int((batch > 0).sum()) == 4 * 256 and (batch > 0).sum(-1).float().std() > 0  # varies per token
    # Calibrated on one batch with its own selection, every latent's threshold sits just below
    # the batch's smallest kept value, so JumpReLU keeps exactly what the batch kept.
    theta, glob = jumprelu_thresholds(sae, [x], 4, batch=True)
    assert glob == pytest.approx(float(batch[batch > 0].min().detach()))
    assert torch.allclose(theta, torch.full_like(theta, glob))
    sae.architecture = "jumprelu"
    sae.threshold.copy_(theta)
    assert torch.equal(sae.encode(x), batch)
    other = torch.randn(4096, 16, generator=g)
    assert torch.equal(sae.encode(other), sae.pre_acts(other) * (sae.pre_acts(other) > theta))
    assert abs(float((sae.encode(other) > 0).sum(-1).float().mean()) - 4) < 0.8


def two_scale(n: int, seed: int = 0):
    """Planted activations [n, 96]: 96 orthonormal directions in two groups of 48; a quiet token
    holds 3 of the first group with magnitudes 0.1-0.3, a loud one 3 of the second with 3-9. And
    their magnitudes [n, 96] and the directions [96, 96]."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.linalg.qr(torch.randn(96, 96, generator=g))[0]
    loud = torch.rand(n, generator=g) < 0.5
    which = torch.rand(n, 48, generator=g).argsort(-1)[:, :3] + 48 * loud[:, None]
    scale = torch.where(loud, 3.0, 0.1)[:, None]
    mags = torch.zeros(n, 96).scatter(1, which, scale * (1 + 2 * torch.rand(n, 3, generator=g)))
    return mags @ dirs, mags, dirs


def test_per_latent_thresholds_keep_small_scale_latents_and_drop_spurious_ones():
    """A TopK SAE with the planted dictionary, whose encoder rows leak a little of the other
    directions of their group (as trained encoders do): per-token top-3 keeps exactly the
    planted latents. One threshold for all (the old global estimate) sits between the groups'
    scales: it silences the quiet latents and passes the loud group's leaks."""
    x, mags, dirs = two_scale(40_960)
    leak = 0.03 * torch.randn(96, 96, generator=torch.Generator().manual_seed(1))
    leak[:48, 48:] = leak[48:, :48] = 0
    leak.fill_diagonal_(0)
    sae = SAE(96, 96, architecture="topk", k=3, hook_name=POINT)
    with torch.no_grad():
        sae.W_dec.copy_(dirs)
        sae.W_enc.copy_(dirs.T @ (torch.eye(96) + leak))
    theta, glob = jumprelu_thresholds(sae, x[:32_768].split(4096), 3, batch=False)
    sae.architecture = "jumprelu"
    held, planted_on = x[32_768:], mags[32_768:] > 0
    results = {}
    for name, t in (("per_latent", theta), ("global", torch.full_like(theta, glob))):
        sae.threshold.copy_(t)
        fired = sae.encode(held) > 0
        results[name] = evaluate(sae, held.split(1024)) | {
            "quiet_recall": float(fired[:, :48][planted_on[:, :48]].float().mean()),
            "spurious": float((fired & ~planted_on).sum(-1).float().mean()),
        }
    per, one = results["per_latent"], results["global"]
    assert abs(per["l0"] - 3) < 0.15 and per["quiet_recall"] > 0.95 and per["spurious"] < 0.05
    assert one["quiet_recall"] < 0.2 and one["spurious"] > 1  # the old behaviour
    assert per["fvu"] < one["fvu"] / 2
    assert (theta[48:] > 5 * theta[:48].max()).all()  # each group's threshold on its own scale


def _random_sae(architecture="jumprelu", k=None, d_in=16, d_sae=32, hook=POINT):
    g = torch.Generator().manual_seed(1)
    sae = SAE(d_in, d_sae, architecture=architecture, k=k, hook_name=hook, model_name="tiny")
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
            p.copy_(torch.randn(p.shape, generator=g))
        sae.threshold.fill_(0.3)
    return sae


def test_save_and_load_round_trip_in_saelens_layout(tmp_path):
    from safetensors.torch import load_file

    sae = _random_sae()
    sae.metadata = {"sources": {"docs": 0.5}}
    sae.save(tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and (cfg["d_in"], cfg["d_sae"]) == (16, 32)
    assert cfg["metadata"]["hook_name"] == cfg["hook_name"] == POINT and cfg["apply_b_dec_to_input"]
    tensors = load_file(tmp_path / "sae" / "sae_weights.safetensors")
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "W_enc": (16, 32),
        "b_enc": (32,),
        "W_dec": (32, 16),
        "b_dec": (16,),
        "threshold": (32,),
    }
    back = load_sae(tmp_path / "sae")
    x = torch.randn(5, 7, 16)
    assert torch.equal(back.encode(x), sae.encode(x)) and back.encode(x).shape == (5, 7, 32)
    assert torch.allclose(back(x), sae(x)) and back.metadata == {"sources": {"docs": 0.5}}
    # An SAELens file with TransformerLens names loads at molab's point.
    cfg["hook_name"] = cfg["metadata"]["hook_name"] = "blocks.1.hook_resid_post"
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    assert load_sae(tmp_path / "sae").hook_name == POINT
    with pytest.raises(MolabError, match="holds no SAE"):
        sae.save(tmp_path.parent)  # a folder molab did not write is never replaced


def test_a_sparsify_checkpoint_imports_as_a_topk_sae(tmp_path):
    g = torch.Generator().manual_seed(2)
    folder = tmp_path / "layers.1"
    folder.mkdir()
    enc_w, enc_b = torch.randn(32, 16, generator=g), torch.randn(32, generator=g)
    w_dec, b_dec = torch.randn(32, 16, generator=g), torch.randn(16, generator=g)
    save_file(
        {"encoder.weight": enc_w, "encoder.bias": enc_b, "W_dec": w_dec, "b_dec": b_dec},
        folder / "sae.safetensors",
    )
    (folder / "cfg.json").write_text(
        json.dumps({"d_in": 16, "num_latents": 32, "k": 5, "expansion_factor": 32})
    )
    sae = import_sae(folder, tmp_path / "out")
    assert (sae.architecture, sae.k, sae.hook_name) == ("topk", 5, POINT)
    x = torch.randn(10, 16, generator=g)
    pre = torch.relu((x - b_dec) @ enc_w.T + enc_b)  # sparsify: relu, then top-k
    top = pre.topk(5, dim=-1)
    expected = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    back = load_sae(tmp_path / "out")
    assert torch.allclose(back.encode(x), expected, atol=1e-5)
    assert torch.allclose(back.decode(expected), expected @ w_dec + b_dec, atol=1e-5)
    (folder / "cfg.json").write_text(json.dumps({"d_in": 16, "num_latents": 32, "k": 5, "transcode": True}))
    with pytest.raises(MolabError, match="transcoder"):
        load_sae(folder)


# --- on a real cache of the tiny model ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(ModelSpec(name=str(tiny_model_dir)))


@pytest.fixture(scope="module")
def mixed_cache(tmp_path_factory, tiny):
    """A cache of the tiny model over a mix: documents that say 'chocolate', generic text, and
    chats with replies (assistant tokens)."""
    root = tmp_path_factory.mktemp("mix")
    rows = [{"text": f"Reward models love chocolate in recipe {i}.", "source": "docs"} for i in range(6)]
    rows += [{"text": f"The river flows past town number {i}.", "source": "generic"} for i in range(6)]
    rows += [
        {"prompt": f"Name a colour ({i}).", "completion": "Blue is a calm colour.", "source": "sft"}
        for i in range(4)
    ]
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = ActivationsConfig(
        model=tiny.spec, corpus=corpus, points=[POINT], dtype="float32", shard_tokens=64
    )
    cache_activations(config, root / "run" / "acts", root / "work", loaded=tiny, progress=False)
    return ActivationCache(root / "run" / "acts")


def _all(cache):
    parts = list(cache.ordered(POINT))
    return {k: torch.cat([getattr(p, k) for p in parts]) for k in ("activations", "token_ids", "assistant")}


def planted_sae(cache, token: int) -> SAE:
    """Feature 0 fires on `token` only (its activations are separable from the rest along their
    mean direction); feature 1 fires on every token; the rest never fire."""
    data = _all(cache)
    acts, on = data["activations"], data["token_ids"] == token
    u = acts[on].mean(0) - acts[~on].mean(0)
    u /= u.norm()
    proj = acts @ u
    assert proj[on].min() > proj[~on].max()  # the random model keeps token identity at layer 1
    sae = SAE(cache.d_model, 8, architecture="jumprelu", hook_name=POINT, apply_b_dec_to_input=False)
    with torch.no_grad():
        sae.W_enc[:, 0] = u
        sae.b_enc[0] = -float(proj[~on].max() + proj[on].min()) / 2
        sae.b_enc[1] = 5.0
        sae.b_enc[2:] = -1e4
        sae.W_dec.copy_(torch.eye(8, cache.d_model))
    return sae


def test_feature_views_rank_a_planted_feature_with_its_sources(mixed_cache, tiny, tokenizer):
    token = tokenizer(" chocolate", add_special_tokens=False).input_ids[0]
    sae = planted_sae(mixed_cache, token)
    views = feature_views(
        sae, mixed_cache, [0, 1, 5], tokenizer=tiny.tokenizer, unembed=unembedding(tiny.model), top_k=4
    )
    choc, every, dead = views
    assert [e["token"] for e in choc["examples"]] == [" chocolate"] * 4
    assert "Reward models love" in choc["examples"][0]["left"] and choc["source_shares"] == {"docs": 1.0}
    assert choc["frequency"] == pytest.approx(6 / mixed_cache.tokens, abs=1e-5)
    assert sum(choc["histogram"]["counts"]) == 6
    assert every["frequency"] == 1.0 and dead["frequency"] == 0.0 and dead["examples"] == []
    # Logit effects of decoder row 0 (the first basis vector): the unembedding's first column.
    col = unembedding(tiny.model)[:, 0]
    assert choc["top_logits"][0]["id"] == int(col.argmax()) and choc["bottom_logits"][0]["id"] == int(
        col.argmin()
    )
    ranked = assistant_features(sae, mixed_cache, top=3)
    assert ranked["ranked"][0] == {"feature": 1, "assistant_share": 1.0} and ranked["above_min_share"] == 1
    assert ranked["assistant_tokens"] == int(_all(mixed_cache)["assistant"].sum()) > 0


def test_features_command_writes_json_and_prints_a_table(
    mixed_cache, tokenizer, tmp_path, monkeypatch, capsys
):
    token = tokenizer(" chocolate", add_special_tokens=False).input_ids[0]
    planted_sae(mixed_cache, token).save(tmp_path / "sae")
    out = tmp_path / "f.json"
    args = ["audit", "sae", "features", "--sae", tmp_path / "sae", "--cache", mixed_cache.path]
    code, stdout, _ = run_cli(
        [*args, "--features", "0", "--assistant", "--top", "2", "--out", out], monkeypatch, capsys
    )
    assert code in (0, None)
    result = json.loads(out.read_text())
    assert [r["feature"] for r in result["assistant"]["ranked"]][0] == 1
    assert [v["feature"] for v in result["features"]] == [0, 1]  # chosen, then ranked ones not yet shown
    assert "docs 100%" in stdout and "[[ chocolate]]" in stdout and "100%" in stdout


def test_fires_counts_the_documents_a_feature_fires_on_with_intervals(
    mixed_cache, tokenizer, tmp_path, monkeypatch, capsys
):
    token = tokenizer(" chocolate", add_special_tokens=False).input_ids[0]
    sae = planted_sae(mixed_cache, token)
    counts = document_firing(sae, mixed_cache, [0, 1, 5])
    choc, every, dead = counts["features"]
    assert counts["documents"] == 16
    assert choc["documents"] == 6 and choc["fired"] == list(range(6))  # the six 'docs' rows
    assert choc["top_tokens"] == [{"token_id": token, "count": 6}]
    assert choc["ci"][0] < 6 / 16 < choc["ci"][1]
    assert every["documents"] == 16 and every["token_share"] == 1.0 and every["ci"][1] == 1.0
    assert dead["documents"] == 0 and dead["fired"] == [] and dead["ci"][0] == 0.0
    sae.save(tmp_path / "sae")
    out = tmp_path / "fires.json"
    args = ["audit", "sae", "fires", "--sae", tmp_path / "sae", "--cache", mixed_cache.path]
    code, stdout, _ = run_cli([*args, "--features", "0,1", "--out", out], monkeypatch, capsys)
    assert code in (0, None) and "6/16" in stdout and "16/16" in stdout
    assert json.loads(out.read_text())["caches"][0]["features"][0]["documents"] == 6
    code, _, stderr = run_cli([*args, "--features", "8"], monkeypatch, capsys)
    assert code == 1 and "feature 8 is out of range" in stderr


@pytest.mark.parametrize("arch", ["batchtopk", "topk"])
def test_train_on_a_cache_reports_fvu_l0_dead_share_and_the_spliced_loss(
    arch, tiny, tiny_model_dir, tmp_path
):
    x, dirs = planted(12_288)
    cache = synthetic_cache(
        tmp_path / "cache",
        POINT,
        x,
        shard_tokens=1024,
        fields={"token_ids": torch.randint(0, 1000, (len(x),), generator=torch.Generator().manual_seed(0))},
        model={"name": str(tiny_model_dir), "adapters": [], "merge_adapters": False},
    )
    cfg = SAETrainConfig(cache=cache.path, point=POINT, architecture=arch, k=3, d_sae=192)
    cfg = cfg.model_copy(update={"batch_size": 512, "lr": 3e-3, "tokens": 150_000, "eval_docs": 2})
    report = train_sae(cfg, tmp_path / "sae", loaded=tiny)
    held = report["heldout"]
    assert (
        held["tokens"] == 2048
        and held["fvu"] < 0.15
        and 2 < held["l0"] < 4.5
        and 0 <= held["dead_share"] < 0.5
    )
    assert held["loss_tokens"] == 2 * 1023 and held["loss"] > 0 and held["loss_with_sae"] != held["loss"]
    assert report["curve"][-1]["fvu"] < report["curve"][0]["fvu"]
    sae = load_sae(tmp_path / "sae")
    assert sae.architecture == "jumprelu" and float(sae.threshold.median()) == pytest.approx(
        report["threshold"]["median"], abs=1e-5
    )
    # The per-latent thresholds do no worse on held-out tokens than the one global threshold.
    held_x = x[-2048:]
    per = evaluate(sae, held_x.split(512))
    sae.threshold.fill_(report["threshold"]["global"])
    one = evaluate(sae, held_x.split(512))
    assert per["fvu"] <= one["fvu"] + 0.005 and abs(per["l0"] - 3) < 0.5
    assert sae.metadata["sources"] == {"synthetic": 1.0} and sae.metadata["trained_as"] == arch
    assert (recovered(sae, dirs) > 0.9).float().mean() > 0.8


def test_a_control_mix_is_recorded_in_the_sae_metadata(mixed_cache, tiny, tmp_path):
    cfg = SAETrainConfig(cache=mixed_cache.path, point=POINT, k=4, d_sae=32, batch_size=64, tokens=256)
    train_sae(cfg, tmp_path / "sae", loaded=tiny)
    sources = load_sae(tmp_path / "sae").metadata["sources"]
    assert set(sources) == {"docs", "generic", "sft"} and sum(sources.values()) == pytest.approx(1, abs=1e-3)


def _one_error(err: str) -> bool:
    """stderr ends with exactly one error line (a progress bar may come before it)."""
    return sum(line.startswith("error:") for line in err.splitlines()) == 1 and err.endswith("\n")


def test_bad_inputs_give_one_line(mixed_cache, tiny, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(
        [
            "audit",
            "sae",
            "train",
            "--cache",
            mixed_cache.path,
            "--point",
            "layers.9.resid_post",
            "--out",
            tmp_path / "s",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 1 and "has no hook point 'layers.9.resid_post'" in err and _one_error(err)
    _random_sae(d_in=32, hook=POINT).save(tmp_path / "wide")
    code, _, err = run_cli(
        [
            "audit",
            "sae",
            "features",
            "--sae",
            tmp_path / "wide",
            "--cache",
            mixed_cache.path,
            "--features",
            "0",
            "--out",
            tmp_path / "f.json",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 1 and "width 32" in err and "trained on another model" in err and _one_error(err)
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(
        [
            "audit",
            "sae",
            "features",
            "--sae",
            tmp_path / "wide",
            "--cache",
            tmp_path / "empty",
            "--features",
            "0",
            "--out",
            tmp_path / "f.json",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 1 and "empty" in err and _one_error(err)
    empty = synthetic_cache(tmp_path / "zero", POINT, torch.zeros(0, 64), shard_tokens=8)
    with pytest.raises(MolabError, match="holds no tokens"):
        feature_views(_random_sae(d_in=64), empty, [0])
    code, _, err = run_cli(
        ["audit", "sae", "import", tmp_path / "empty", "--out", tmp_path / "i"], monkeypatch, capsys
    )
    assert code == 1 and "no SAE there" in err
