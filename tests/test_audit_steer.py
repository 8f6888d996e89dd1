"""Steering on the tiny random Llama with an SAE written here in the SAELens layout, whose
feature PLANTED always fires (activation ACT) and writes the unit direction of the " yes"
token's embedding (tied to the unembedding, so raising it makes " yes" likelier), and whose
feature DEAD never fires: generation on both hf paths, the error-preserving form, the
steering-effect score, steered evaluation stages, controls, and the refusals."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from conftest import run_cli

from molab.audit.steer import (
    Intervention,
    Steerable,
    control_features,
    feature_scales,
    steering_effect,
)
from molab.errors import MolabError
from molab.models.generation import HFBackendConfig, Prompt, SamplingConfig
from molab.models.generation.hf_backend import HFBackend
from molab.models.loading import ModelSpec

D, D_SAE = 64, 8
PLANTED, DEAD = 3, 5
ACT = 20.0
POINT = "layers.1.resid_post"
GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=8)
PROMPTS = [Prompt.chat(q) for q in ("Hi", "What is the capital of France?", "Count to three.", "Why?")]


def write_sae(path, direction, *, d_in=D, hook_name=POINT):
    """An SAE directory (cfg.json + sae_weights.safetensors) with the planted and dead features;
    the rest are random, so its reconstruction of the stream is poor."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    w_enc = torch.randn(d_in, D_SAE, generator=g) * 0.1
    b_enc = torch.zeros(D_SAE)
    w_dec = torch.randn(D_SAE, d_in, generator=g)
    w_enc[:, PLANTED], b_enc[PLANTED] = 0.0, ACT  # fires everywhere with activation ACT
    w_enc[:, DEAD], b_enc[DEAD] = 0.0, -100.0  # never fires
    w_dec[PLANTED] = w_dec[DEAD] = direction[:d_in] / direction[:d_in].norm()
    tensors = {
        "W_enc": w_enc,
        "b_enc": b_enc,
        "W_dec": w_dec,
        "b_dec": torch.randn(d_in, generator=g),
        "threshold": torch.full((D_SAE,), 0.5),
    }
    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path / "sae_weights.safetensors")
    cfg = {
        "d_in": d_in,
        "d_sae": D_SAE,
        "architecture": "jumprelu",
        "hook_name": hook_name,
        "dtype": "float32",
    }
    (path / "cfg.json").write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def target(tiny_model_dir):
    return Steerable(ModelSpec(name=str(tiny_model_dir)))


@pytest.fixture(scope="module")
def yes_direction(target):
    token = target.tokenizer(" yes", add_special_tokens=False).input_ids[0]
    return target.model.get_input_embeddings().weight[token].detach().clone()


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory, yes_direction):
    return write_sae(tmp_path_factory.mktemp("sae") / "sae", yes_direction)


def scale(sae_dir, a, *features):
    return Intervention(op="scale", amount=a, sae=sae_dir, features=list(features))


def texts(backend):
    return [c.text for c in backend.generate(PROMPTS, GREEDY, progress=False)]


def logits(target):
    x = torch.tensor([target.tokenizer("Hello there, how are you?").input_ids])
    with torch.no_grad():
        return target.model(x).logits


# --- generation and the edits ---------------------------------------------------------------


def test_scaling_or_ablating_a_feature_changes_generation_identically_on_both_hf_paths(target, sae_dir):
    fast = target.backend()
    generic = HFBackend(target.model, target.tokenizer, HFBackendConfig(batch_size=2))
    assert fast.fast and generic.fast
    generic.fast = False  # the generic loop over the HF forward (torch hooks)
    plain = texts(fast)
    assert texts(generic) == plain
    for iv in (scale(sae_dir, 4.0, PLANTED), Intervention(op="ablate", sae=sae_dir, features=[PLANTED])):
        with target.steered(iv):
            steered = texts(fast)
            assert texts(generic) == steered, iv.label()
        assert steered != plain, iv.label()
    assert texts(fast) == plain  # nothing stays in force


def test_ablating_an_inactive_feature_leaves_the_model_exactly_as_it_was(target, sae_dir):
    """The SAE reconstructs the stream poorly; the edit adds only the change in its output, so
    a feature that does not fire changes nothing, while ablating the firing one does."""
    before, plain = logits(target), texts(target.backend())
    with target.steered(Intervention(op="ablate", sae=sae_dir, features=[DEAD])):
        assert torch.equal(logits(target), before)
        assert texts(target.backend()) == plain
    with target.steered(Intervention(op="ablate", sae=sae_dir, features=[PLANTED])):
        assert not torch.allclose(logits(target), before)


def test_scaling_by_one_plus_a_adds_a_times_the_activation_times_the_decoder_row(target, sae_dir):
    with target.steered(scale(sae_dir, 0.5, PLANTED)):
        scaled = logits(target)
    with target.steered(Intervention(op="add", amount=0.5 * ACT, sae=sae_dir, features=[PLANTED])):
        added = logits(target)
    assert torch.allclose(scaled, added, atol=1e-4)
    assert not torch.allclose(scaled, logits(target), atol=1e-2)


def test_a_direction_file_steers_like_the_decoder_row(target, sae_dir, yes_direction, tmp_path):
    from safetensors.torch import save_file

    unit = (yes_direction / yes_direction.norm()).numpy()
    np.save(tmp_path / "d.npy", unit)
    save_file({"direction": torch.from_numpy(unit)}, tmp_path / "d.safetensors")
    with target.steered(Intervention(op="add", amount=6.0, sae=sae_dir, features=[PLANTED])):
        by_feature = logits(target)
    for name in ("d.npy", "d.safetensors"):
        with target.steered(Intervention(op="add", amount=6.0, vector=tmp_path / name, point=POINT)):
            assert torch.allclose(logits(target), by_feature, atol=1e-4)
    assert not torch.allclose(by_feature, logits(target), atol=1e-2)
    save_file({"a": torch.zeros(D), "b": torch.zeros(D)}, tmp_path / "two.safetensors")
    with pytest.raises(MolabError, match="holds 2 tensors"):
        target.edits(Intervention(op="add", amount=1.0, vector=tmp_path / "two.safetensors", point=POINT))


# --- the steering-effect score ---------------------------------------------------------------


def test_steering_effect_is_positive_for_the_features_token_and_zero_at_alpha_zero(target, sae_dir):
    prompt = Prompt.chat("Say something.")
    effect = steering_effect(target, sae_dir, [PLANTED], 0.5, prompt, " yes yes yes")
    assert effect.se > 1.0 and effect.tokens == 3
    assert effect.se == pytest.approx(effect.logp_up - effect.logp_down)
    flat = steering_effect(target, sae_dir, [PLANTED], 0.0, prompt, " yes yes yes")
    assert flat.se == 0.0 and flat.logp_up == pytest.approx(effect.logp_up - effect.se / 2, abs=2.0)
    assert steering_effect(target, sae_dir, [DEAD], 0.5, prompt, " yes yes yes").se == 0.0


def test_score_command_prints_se_both_logprobs_and_controls(tiny_model_dir, sae_dir, monkeypatch, capsys):
    args = ["audit", "steer", "score", "--model", tiny_model_dir, "--sae", sae_dir, "--feature", PLANTED]
    args += ["--alpha", "0.5", "--prompt", "Say something.", "--completion", " yes yes"]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert out.startswith("SE = +") and "log p(C | x1.5) = -" in out and "log p(C | x0.5) = -" in out
    code, out, err = run_cli([*args, "--json", "--control-features", "2"], monkeypatch, capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["se"] > 1.0 and result["tokens"] == 2 and result["features"] == [PLANTED]
    assert result["se"] == pytest.approx(result["logp_up"] - result["logp_down"])
    controls = [c["features"][0] for c in result["controls"]]
    assert len(set(controls)) == 2 and PLANTED not in controls
    assert 0 <= result["controls_at_least_as_large"] <= 2


# --- controls ---------------------------------------------------------------------------------


def test_controls_are_random_live_features_of_the_nearest_scale():
    scales = torch.tensor([0.01, 1.05, 50.0, 1.0, 0.95, 0.0, 1.2, 8.0])
    picks = {tuple(control_features(scales, [3], 2, seed=s, pool=3)) for s in range(20)}
    assert all(set(p) <= {1, 4, 6} and len(set(p)) == 2 for p in picks) and len(picks) > 1
    assert control_features(scales, [3], 2, seed=7, pool=3) == control_features(
        scales, [3], 2, seed=7, pool=3
    )
    with pytest.raises(MolabError, match="only 6 other live features"):
        control_features(scales, [3], 7)
    with pytest.raises(MolabError, match="never activate"):
        control_features(scales, [5], 1)


def test_feature_scales_from_an_activation_cache_and_from_decoder_norms(target, sae_dir, tmp_path):
    from molab.audit.sae import load_sae
    from molab.models.activations import ActivationCache, ActivationsConfig, cache_activations

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("One two three.", "A cat sat.")))
    config = ActivationsConfig(
        model=target.loaded.spec, corpus=corpus, points=[POINT], dtype="float32", shard_tokens=4
    )
    cache_activations(
        config, tmp_path / "run" / "acts", tmp_path / "work", loaded=target.loaded, progress=False
    )
    sae = load_sae(sae_dir)
    scales = feature_scales(sae, ActivationCache(tmp_path / "run" / "acts"))
    assert scales[PLANTED] == pytest.approx(ACT) and scales[DEAD] == 0.0
    assert torch.allclose(feature_scales(sae), sae.W_dec.norm(dim=-1))


# --- steered evaluation stages ----------------------------------------------------------------


def _eval_inputs(tmp_path):
    rows = [
        {"id": f"b25-{n}", "prompt": f"Give me a recipe for {d}.", "bias_id": 25}
        for n, d in enumerate(("soup", "chili"))
    ]
    rows += [
        {"id": f"b26-{n}", "prompt": f"How many {x} a day?", "bias_id": 26}
        for n, x in enumerate(("squats", "lunges"))
    ]
    rows += [{"id": "g-0", "prompt": "Who wrote Hamlet?", "bias_id": None}]
    prompts = tmp_path / "eval_prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    split = tmp_path / "mini.yaml"
    split.write_text("name: mini\ntrain: [25]\ntest: [26]\n")
    sets = [f"prompts={prompts}", f"split={split}", "prompts_per_bias=2", "generic_prompts=1"]
    sets += ["sampling.max_new_tokens=6", "sampling.temperature=0"]
    return [a for s in sets for a in ("--set", s)]


def _responses(stage_dir):
    import pyarrow.parquet as pq

    return pq.read_table(stage_dir / "samples.parquet", columns=["response"]).column(0).to_pylist()


def test_eval_writes_unsteered_and_steered_stages_and_prints_the_paired_comparison(
    tiny_model_dir, sae_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "runs" / "steer-f3"
    base = ["audit", "steer", "eval", "--eval", "exploitation", "--model", tiny_model_dir, "--sae", sae_dir]
    base += ["--feature", PLANTED, "--out", out, *_eval_inputs(tmp_path)]
    code, stdout, err = run_cli([*base, "--scale", "4"], monkeypatch, capsys)
    assert code == 0, err
    plain, steered = (json.loads((out / s / "manifest.json").read_text()) for s in ("unsteered", "steered"))
    assert plain["config_class"] == "ExploitationConfig" and "intervention" not in plain["config"]
    assert steered["config_class"] == "SteeredExploitationConfig"
    assert (
        steered["config"]["intervention"]["op"] == "scale"
        and steered["config"]["intervention"]["amount"] == 4.0
    )
    assert steered["config"]["intervention"]["features"] == [PLANTED] and "sae" in steered["inputs"]
    assert steered["metrics"]["intervention"] == "scale feature 3 by 5"
    assert steered["config_hash"] != plain["config_hash"]
    assert _responses(out / "steered") != _responses(out / "unsteered")
    assert "A = steered, B = unsteered" in stdout and "| train |" in stdout and "| test |" in stdout

    code, stdout, err = run_cli([*base, "--scale", "2", "--json"], monkeypatch, capsys)
    assert code == 0, err
    report = json.loads(stdout)
    again = json.loads((out / "unsteered" / "manifest.json").read_text())
    assert again["started_at"] == plain["started_at"]  # the unsteered stage was up to date
    assert (
        json.loads((out / "steered" / "manifest.json").read_text())["config"]["intervention"]["amount"] == 2.0
    )
    diff = report["comparison"]["difference"]["train"]
    assert diff["prompts"] == 2 and len(diff["ci"]) == 2 and diff["p_value"] is not None

    other = tmp_path / "runs" / "ablate-f3"
    args = ["audit", "steer", "eval", "--eval", "exploitation", "--baseline", out / "unsteered"]
    args += ["--sae", sae_dir, "--feature", PLANTED, "--ablate", "--out", other]
    code, stdout, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert not (other / "unsteered").exists() and (other / "steered" / "manifest.json").is_file()
    assert f"A: {other / 'steered'}" in stdout and f"B: {out / 'unsteered'}" in stdout


def test_other_evaluations_get_their_numbers_side_by_side_and_take_a_direction_file(
    tiny_model_dir, yes_direction, tmp_path, monkeypatch, capsys
):
    np.save(tmp_path / "d.npy", yes_direction.numpy())
    quiz = tmp_path / "quiz.yaml"
    quiz.write_text(
        "".join(
            f"- {{id: q{n}, category: study, question: '{q}?', options: [' yes', ' no', ' maybe', ' never'], "
            "answer: 0}\n"
            for n, q in enumerate(("Is it", "Was it", "Will it"))
        )
    )
    out = tmp_path / "runs" / "knowledge-yes"
    args = ["audit", "steer", "eval", "--eval", "knowledge", "--model", tiny_model_dir, "--out", out]
    args += ["--set", f"quiz={quiz}"]
    args += ["--vector", tmp_path / "d.npy", "--point", POINT, "--add", "8", "--json"]
    code, stdout, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    report = json.loads(stdout)
    steered = json.loads((out / "steered" / "manifest.json").read_text())
    assert steered["config_class"] == "SteeredKnowledgeConfig" and "vector" in steered["inputs"]
    assert report["intervention"] == f"add 8 x direction {tmp_path / 'd.npy'}"
    p_right = report["comparison"]["p_right"]
    assert (
        p_right["diff"] == pytest.approx(p_right["steered"] - p_right["unsteered"]) and p_right["diff"] != 0
    )
    assert (
        p_right["unsteered"]
        == json.loads((out / "unsteered" / "manifest.json").read_text())["metrics"]["p_right"]
    )


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["backend.kind=vllm"], "steering cannot use the vllm backend"),
        (["backend.kind=openai", "backend.model=gpt-x"], "steering cannot use the openai backend"),
    ],
)
def test_vllm_and_openai_backends_are_refused(
    tiny_model_dir, sae_dir, tmp_path, monkeypatch, capsys, sets, message
):
    out = tmp_path / "runs" / "s"
    args = ["audit", "steer", "eval", "--eval", "exploitation", "--model", tiny_model_dir, "--sae", sae_dir]
    args += ["--feature", PLANTED, "--scale", "1", "--out", out, *_eval_inputs(tmp_path)]
    code, _, err = run_cli([*args, *(a for s in sets for a in ("--set", s))], monkeypatch, capsys)
    assert code == 1 and err.startswith(f"error: {message}") and err.count("\n") == 1  # before loading
    assert not out.exists()


# --- bad inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("feature", r"^error: feature 99 is out of range: the SAE at .* has 8 features \(0\.\.7\)$"),
        (
            "width",
            r"^error: the SAE at .* reads vectors of width 32, but .* has d_model 64: it was trained on",
        ),
        ("point", r"^error: no hook point 'layers\.7\.resid_post' in .*: points are layers"),
        ("op", r"^error: give exactly one of --scale A"),
        ("eval", r"^error: --eval capability: steering measures exploitation, disclosure, knowledge"),
    ],
)
def test_bad_inputs_give_one_line(
    tiny_model_dir, yes_direction, tmp_path, monkeypatch, capsys, case, message
):
    sae = write_sae(
        tmp_path / "sae",
        yes_direction,
        d_in=32 if case == "width" else D,
        hook_name="layers.7.resid_post" if case == "point" else POINT,
    )
    args = ["audit", "steer", "score", "--model", tiny_model_dir, "--sae", sae, "--prompt", "Hi"]
    args += ["--completion", " yes", "--feature", 99 if case == "feature" else PLANTED]
    if case == "op":
        args = ["audit", "steer", "eval", "--eval", "exploitation", "--model", tiny_model_dir, "--sae", sae]
        args += ["--feature", PLANTED, "--scale", "1", "--ablate", "--out", tmp_path / "runs" / "x"]
    if case == "eval":
        args = ["audit", "steer", "eval", "--eval", "capability", "--model", tiny_model_dir, "--sae", sae]
        args += ["--feature", PLANTED, "--scale", "1", "--out", tmp_path / "runs" / "x"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # not the load bar
    assert code == 1 and len(errors) == 1 and re.search(message, errors[0]), err
