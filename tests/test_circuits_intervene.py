"""Feature interventions through the real model: the exact change at the MLP output and only at
the chosen positions, no-ops, swaps, the same edit on every generation path, supernodes from a
graph JSON, the command line, and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli, tiny_llama

from molab.circuits.intervene import (
    FeatureEdit,
    check_edits,
    check_generator,
    check_graph_prompt,
    compare,
    feature_edits,
    parse_edit,
    read_graph,
    supernode_edits,
    text_generator,
)
from molab.circuits.targets import prompt_ids
from molab.circuits.transcoder import Transcoder, TranscoderSet, save_set
from molab.errors import MolabError
from molab.models.generation import HFBackendConfig, SamplingConfig
from molab.models.generation.hf_backend import HFBackend
from molab.models.hooks import capture

IDS = torch.tensor([1, 504, 3102, 314, 260, 1345, 30])
PROMPT = "The capital of Texas is"
ATOL = 5e-5  # float32 rounding of y + change, with |y| up to about 100 in the random model


def transcoders(model, width: int = 48) -> TranscoderSet:
    """Random transcoders for every layer, thresholds at 0 (about half the features fire)."""
    g = torch.Generator().manual_seed(1)
    d = model.config.hidden_size
    out = {}
    for layer in range(model.config.num_hidden_layers):
        t = Transcoder(d, width, layer)
        with torch.no_grad():
            t.W_enc.copy_(torch.randn(width, d, generator=g) / d**0.5)
            t.W_dec.copy_(torch.randn(width, d, generator=g) * 0.3)
        out[layer] = t
    return TranscoderSet(out, {"model_name": "tiny", "n_layers": model.config.num_hidden_layers})


@pytest.fixture(scope="module")
def setup(tokenizer):
    model = tiny_llama(tokenizer).eval()
    return model, transcoders(model)


@torch.no_grad()
def mlp_io(model, layer: int, ids=IDS):
    names = [f"layers.{layer}.mlp_in", f"layers.{layer}.mlp_out"]
    with capture(model, names) as got:
        logits = model(input_ids=ids[None]).logits[0]
    return got[names[0]][0], got[names[1]][0], logits


def active_feature(tset, x: torch.Tensor, layer: int, pos: int) -> int:
    return int(tset[layer].encode(x[pos]).argmax())


def test_ablation_removes_exactly_the_features_share_at_its_positions(setup):
    model, tset = setup
    x, y, _ = mlp_io(model, 0)
    f = active_feature(tset, x, 0, 3)
    a = tset[0].encode(x)[:, f]  # [n_pos]
    assert a[3] > 0
    with feature_edits(model, tset, [FeatureEdit(0, f, "ablate", positions=(3, 5))]):
        _, y_edit, _ = mlp_io(model, 0)
    expected = y.clone()
    for p in (3, 5):
        expected[p] -= a[p] * tset[0].W_dec[f]
    assert torch.allclose(y_edit, expected, atol=ATOL)
    assert torch.equal(y_edit[[0, 1, 2, 4, 6]], y[[0, 1, 2, 4, 6]])  # bit for bit elsewhere


def test_scale_one_is_a_no_op_and_set_and_swap_move_activations(setup):
    model, tset = setup
    x, y, logits = mlp_io(model, 1)
    f = active_feature(tset, x, 1, 2)
    with feature_edits(model, tset, [FeatureEdit(1, f, "scale", 1.0)]):
        assert torch.equal(mlp_io(model, 1)[2], logits)
    acts = tset[1].encode(x)  # [n_pos, d_tc]
    g = int((acts[2] == 0).nonzero()[0])  # a feature off at position 2
    with feature_edits(model, tset, [FeatureEdit(1, f, "swap", positions=(2,), target=g)]):
        _, y_swap, _ = mlp_io(model, 1)
    expected = y[2] + acts[2, f] * (tset[1].W_dec[g] - tset[1].W_dec[f])
    assert torch.allclose(y_swap[2], expected, atol=ATOL)
    assert torch.equal(y_swap[[0, 1, 3, 4, 5, 6]], y[[0, 1, 3, 4, 5, 6]])
    with feature_edits(model, tset, [FeatureEdit(1, g, "set", 2.5)]):
        _, y_set, _ = mlp_io(model, 1)
    assert torch.allclose(y_set - y, (2.5 - acts[:, g])[:, None] * tset[1].W_dec[g], atol=ATOL)
    # Edits of one feature compose in order: scale by 3, then set to 1 -> 1.
    chain = [FeatureEdit(1, f, "scale", 3.0), FeatureEdit(1, f, "set", 1.0)]
    with feature_edits(model, tset, chain):
        _, y_chain, _ = mlp_io(model, 1)
    assert torch.allclose(y_chain - y, (1.0 - acts[:, f])[:, None] * tset[1].W_dec[f], atol=ATOL)


def strong_edits(model, tset, n: int) -> list[FeatureEdit]:
    """Edits that change greedy text: the last position's top layer-0 features flipped hard at
    the first and last prompt positions, and layer 1's top features flipped on generated tokens."""
    x0, _, _ = mlp_io(model, 0)
    x1, _, _ = mlp_io(model, 1)
    top0 = tset[0].encode(x0)[-1].topk(4).indices.tolist()
    top1 = tset[1].encode(x1)[-1].topk(4).indices.tolist()
    return [FeatureEdit(0, f, "scale", -30.0, (1, n - 1)) for f in top0] + [
        FeatureEdit(1, f, "scale", -30.0, (), generated=True) for f in top1
    ]


@torch.no_grad()
def greedy_without_cache(model, tset, edits, ids, steps: int) -> list[int]:
    """The reference: each new token from a full forward of the whole sequence under the edits."""
    seq = ids.tolist()
    for _ in range(steps):
        with feature_edits(model, tset, edits, len(ids)):
            seq.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(ids) :]


def test_an_edit_is_the_same_on_every_generation_path(setup, tokenizer):
    model, tset = setup
    steps, n = 8, len(IDS)
    edits = strong_edits(model, tset, n)
    plain = greedy_without_cache(model, tset, [], IDS, steps)
    reference = greedy_without_cache(model, tset, edits, IDS, steps)
    assert reference != plain  # the edits matter, so agreeing below is evidence
    assert reference[0] != plain[0] and reference[1:] != plain[1:]
    want = tokenizer.decode(reference, skip_special_tokens=True)
    greedy = SamplingConfig(max_new_tokens=steps, temperature=0.0)
    stops = [tokenizer.eos_token_id]
    assert tokenizer.eos_token_id not in reference
    fast = text_generator("hf", model, tokenizer, stops)
    loop = HFBackend(model, tokenizer, HFBackendConfig(batch_size=1), stops)
    assert loop.fast
    loop.fast = False  # the generic loop over the HF forward (torch hooks)
    paths = {
        "fast decoder": fast,
        "generic loop": lambda ids, s: loop.generate_ids([ids], s, progress=False)[0].text,
        "model.generate": text_generator("generate", model, tokenizer, stops),
    }
    for name, generate in paths.items():
        with feature_edits(model, tset, edits, n):
            assert generate(IDS.tolist(), greedy) == want, name
        assert generate(IDS.tolist(), greedy) == tokenizer.decode(plain, skip_special_tokens=True), name


def test_compare_reports_probabilities_kl_and_text(setup, tokenizer):
    model, tset = setup
    edits = strong_edits(model, tset, len(IDS))
    generate = text_generator("hf", model, tokenizer, [tokenizer.eos_token_id])
    sampling = SamplingConfig(max_new_tokens=6, temperature=0.0)
    record = compare(model, tokenizer, tset, IDS, edits, generate, sampling, top_k=5, watch=[42])
    assert record["kl_divergence"] > 1e-3 and record["text_before"] != record["text_after"]
    watched = [r for r in record["probabilities"] if r["watched"]]
    assert [r["id"] for r in watched] == [42]
    top = max(record["probabilities"], key=lambda r: r["before"])
    assert top["rank_before"] == 0 and top["change"] == pytest.approx(top["after"] - top["before"])
    json.dumps(record)  # plain JSON
    same = compare(model, tokenizer, tset, IDS, [FeatureEdit(0, 0, "scale", 1.0)], generate, sampling)
    assert same["kl_divergence"] == 0 and same["text_before"] == same["text_after"]
    hot = SamplingConfig(max_new_tokens=6, temperature=1.5, seed=3)
    one = compare(model, tokenizer, tset, IDS, edits, generate, hot)
    assert one["text_after"] == compare(model, tokenizer, tset, IDS, edits, generate, hot)["text_after"]


def test_positional_edits_refuse_a_batch(setup):
    model, tset = setup
    with feature_edits(model, tset, [FeatureEdit(0, 1, "ablate", positions=(2,))]):
        with pytest.raises(MolabError, match="one sequence at a time, not a batch of 2"):
            model(input_ids=IDS[None].repeat(2, 1))
    with feature_edits(model, tset, [FeatureEdit(0, 1, "ablate")]):  # every position: any batch
        model(input_ids=IDS[None].repeat(2, 1))


def write_graph(tmp_path, tokenizer, supernodes, model="tiny", prompt=PROMPT):
    """A graph JSON in the frontend schema, by hand: two features, an error, a token, two logits."""
    tokens = [tokenizer.decode([t]) for t in prompt_ids(tokenizer, prompt).tolist()]

    def node(node_id, kind, layer, pos, feature=0, **more):
        return {
            "node_id": node_id,
            "feature": feature,
            "layer": str(layer),
            "ctx_idx": pos,
            "feature_type": kind,
            "token_prob": 0.0,
            "is_target_logit": False,
            "run_idx": 0,
            "reverse_ctx_idx": 0,
            "jsNodeId": node_id,
            "clerp": "",
            "influence": 0.1,
            "activation": 1.0,
        } | more

    last = len(tokens) - 1
    nodes = [
        node("0_7_3", "cross layer transcoder", 0, 3),
        node("1_4_5", "cross layer transcoder", 1, 5),
        node("0_1_2", "mlp reconstruction error", 1, 2, -1),
        node("E_504_1", "embedding", "E", 1),
        node(f"3_99_{last}", "logit", 3, last, 99, token_prob=0.1),
        node(f"3_42_{last}", "logit", 3, last, 42, token_prob=0.3, is_target_logit=True),
    ]
    meta = {"slug": "g", "scan": "tiny", "transcoder_list": [], "prompt_tokens": tokens, "prompt": prompt}
    meta |= {"node_threshold": 0.8, "schema_version": 1, "molab": {"model_name": model}}
    q = {"pinnedIds": [], "supernodes": supernodes, "linkType": "both", "clickedId": "", "sg_pos": ""}
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"metadata": meta, "qParams": q, "nodes": nodes, "links": []}))
    return path


def test_a_supernode_edits_its_features_at_their_positions(setup, tmp_path, tokenizer):
    model, tset = setup
    path = write_graph(tmp_path, tokenizer, [["Texas", "0_7_3", "1_4_5", "0_1_2", "E_504_1"], ["x", "0_7_3"]])
    graph = read_graph(path, "tiny")
    assert graph.logit_tokens == [42, 99]  # the target first
    edits = supernode_edits(graph, "Texas")
    assert edits == [FeatureEdit(0, 7, "ablate", None, (3,)), FeatureEdit(1, 4, "ablate", None, (5,))]
    ids = prompt_ids(tokenizer, PROMPT)
    check_graph_prompt(graph, [tokenizer.decode([t]) for t in ids.tolist()])
    x0, y0, _ = mlp_io(model, 0, ids)
    with feature_edits(model, tset, edits, len(ids)):
        _, y_edit, _ = mlp_io(model, 0, ids)
    a = tset[0].encode(x0[3])[7]
    assert a > 0  # so the check below can fail
    expected = y0.clone()
    expected[3] -= a * tset[0].W_dec[7]
    assert torch.allclose(y_edit, expected, atol=ATOL) and torch.equal(y_edit[:3], y0[:3])
    assert supernode_edits(graph, "x", "scale", -1.0) == [FeatureEdit(0, 7, "scale", -1.0, (3,))]
    with pytest.raises(MolabError, match="no supernode 'Dallas'.*'Texas', 'x'"):
        supernode_edits(graph, "Dallas")
    with pytest.raises(MolabError, match="is a graph of 'tiny', not of 'other'"):
        read_graph(path, "other")
    with pytest.raises(MolabError, match="was made on the prompt 'The capital of Texas is'"):
        check_graph_prompt(graph, ["<|endoftext|>", "Hello"])


def test_bad_edits_give_one_line(setup):
    _, tset = setup
    assert parse_edit("1:4:0.5@3,2", "scale") == FeatureEdit(1, 4, "scale", 0.5, (2, 3))
    assert parse_edit("1:4:9", "swap") == FeatureEdit(1, 4, "swap", None, None, target=9)
    assert parse_edit("1:4:9:-2e1@gen", "swap") == FeatureEdit(1, 4, "swap", -20.0, (), 9, True)
    assert parse_edit("0:2@4,gen", "ablate") == FeatureEdit(0, 2, "ablate", None, (4,), None, True)
    for text, mode in (
        ("1:4", "scale"),
        ("1:4:2", "ablate"),
        ("x", "set"),
        ("1:2@", "ablate"),
        ("1:2:1.2.3", "set"),
    ):
        with pytest.raises(MolabError, match=f"^--{mode} '.*': expected") as err:
            parse_edit(text, mode)
        assert "\n" not in str(err.value)
    with pytest.raises(MolabError, match="no transcoder for layer 5"):
        check_edits([FeatureEdit(5, 0, "ablate")], tset, 7, "tc")
    with pytest.raises(MolabError, match="feature 48 of layer 0 is out of range"):
        check_edits([FeatureEdit(0, 48, "ablate")], tset, 7, "tc")
    with pytest.raises(MolabError, match="feature 60 of layer 1 is out of range"):
        check_edits([FeatureEdit(1, 2, "swap", target=60)], tset, 7, "tc")
    with pytest.raises(MolabError, match="position 7 is past the prompt's 7 tokens"):
        check_edits([FeatureEdit(0, 1, "ablate", positions=(7,))], tset, 7, "tc")
    for kind in ("vllm", "openai"):
        with pytest.raises(MolabError, match=f"cannot use the {kind} backend"):
            check_generator(kind)


def test_command_shows_the_change_and_checks_its_inputs(
    tmp_path, tiny_model_dir, monkeypatch, capsys, tokenizer
):
    from molab.models.loading import load_model

    model = load_model(str(tiny_model_dir)).model
    tc = save_set(tmp_path / "tc", transcoders(model))
    out = tmp_path / "r.json"
    args = ["circuits", "intervene", "--model", tiny_model_dir, "--transcoders", tc]
    prompt = [*args, "--prompt", PROMPT]
    run = [*prompt, "--scale", "0:3:-10@1,gen", "--ablate", "1:5", "--max-new-tokens", "3", "--out", out]
    code, stdout, err = run_cli([*run, "--watch", " Austin"], monkeypatch, capsys)
    assert code == 0, err
    record = json.loads(out.read_text())
    assert "KL(before || after)" in stdout and "edit: scale L0:3 x-10 @1,gen" in stdout
    assert [e["mode"] for e in record["edits"]] == ["ablate", "scale"] and record["backend"] == "hf"
    assert sum(r["watched"] for r in record["probabilities"]) == 1
    graph = write_graph(tmp_path, tokenizer, [["Texas", "0_7_3"]], model=str(tiny_model_dir))
    code, stdout, err = run_cli(
        [*args, "--graph", graph, "--supernode", "Texas", "--max-new-tokens", "2", "--backend", "generate"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    assert "edit: ablate L0:7 @3" in stdout
    assert stdout.count("  *") == 2  # the logit nodes 42 and 99 are watched
    bad = [
        ([*prompt, "--ablate", "0:999"], "feature 999 of layer 0 is out of range"),
        ([*prompt, "--ablate", "4:1"], "has no transcoder for layer 4"),
        ([*prompt, "--ablate", "0:1@40"], "position 40 is past the prompt's"),
        ([*prompt, "--ablate", "0:x"], "--ablate '0:x': expected"),
        ([*prompt, "--supernode", "x"], "--supernode needs --graph"),
        ([*prompt], "nothing to change"),
        ([*prompt, "--ablate", "0:1", "--backend", "vllm"], "cannot use the vllm backend"),
        ([*prompt, "--graph", graph, "--supernode", "Texas", "--prompt", "Hi"], "was made on the prompt"),
    ]
    for argv, message in bad:
        code, _, err = run_cli(argv, monkeypatch, capsys)
        errors = [line for line in err.splitlines() if line.startswith("error")]  # past progress bars
        assert code != 0 and len(errors) == 1 and message in errors[0], (argv, err)
        assert "Traceback" not in err
