"""The frontend graph JSON: circuit-tracer's fields and ids, the metadata index, round trips,
saved viewer state, and one-line errors for broken files or a graph of another model."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from test_circuits_prune import E1, A, C, L, T, hand_graph

from molab.circuits.export import (
    INDEX,
    cantor,
    cantor_unpair,
    read_graph_json,
    write_graph_files,
    write_qparams,
)
from molab.circuits.prune import graph_scores, prune
from molab.errors import MolabError

# the hand graph's kept nodes (prune's test) under circuit-tracer's ids
IDS = {A: "0_5_0", C: "1_3_0", E1: "0_1_0", T: "E_17_0", L: "3_42_0"}


def test_cantor_pairing_round_trips():
    assert cantor(0, 5) == 20 and cantor(1, 3) == 13
    pairs = [(layer, index) for layer in range(40) for index in (0, 1, 7, 9215, 73727, 10**9)]
    assert all(cantor_unpair(cantor(*p)) == p for p in pairs)


def test_graph_file_has_circuit_tracers_fields_and_ids(tmp_path):
    g = hand_graph()
    path = write_graph_files(g, tmp_path, "hand")
    data = json.loads(path.read_text())
    meta = data["metadata"]
    assert meta["slug"] == "hand" and meta["prompt"] == "hi" and meta["prompt_tokens"] == ["hi"]
    assert meta["schema_version"] == 1 and meta["node_threshold"] == 0.8 and meta["transcoder_list"] == []
    assert meta["molab"]["model_name"] == "tiny"
    assert meta["molab"]["scores"]["replacement"] == pytest.approx(0.5)
    assert meta["molab"]["scores"]["pruned_replacement"] == pytest.approx(0.4375)
    assert data["qParams"] == {
        "pinnedIds": [],
        "supernodes": [],
        "linkType": "both",
        "clickedId": "",
        "sg_pos": "",
    }
    nodes = {n["node_id"]: n for n in data["nodes"]}
    assert set(nodes) == set(IDS.values())
    a, err, tok, logit = nodes["0_5_0"], nodes["0_1_0"], nodes["E_17_0"], nodes["3_42_0"]
    assert (a["feature"], a["layer"], a["ctx_idx"], a["jsNodeId"]) == (20, "0", 0, "0_5-0")
    assert a["feature_type"] == "cross layer transcoder" and a["activation"] == 1.5
    assert (err["feature"], err["layer"], err["feature_type"]) == (-1, "1", "mlp reconstruction error")
    assert (tok["feature"], tok["layer"], tok["feature_type"], tok["jsNodeId"]) == (
        0,
        "E",
        "embedding",
        "E_17-0",
    )
    assert (logit["feature"], logit["layer"], logit["feature_type"]) == (42, "3", "logit")
    assert logit["is_target_logit"] and logit["token_prob"] == pytest.approx(0.9)
    assert logit["clerp"] == 'Output "#42" (p=0.900)'
    pruned = prune(g)
    assert a["influence"] == pytest.approx(float(pruned.cumulative_scores[A]))
    index = json.loads((tmp_path / INDEX).read_text())
    assert index == {"graphs": [meta]}


def test_round_trip_keeps_nodes_links_and_weights(tmp_path):
    g = hand_graph()
    data = read_graph_json(write_graph_files(g, tmp_path, "hand"))
    links = {(link["target"], link["source"]): link["weight"] for link in data["links"]}
    expected = {(IDS[t], IDS[s]): float(g.adjacency[t, s]) for t, s in prune(g).edge_mask.nonzero().tolist()}
    assert links == expected  # float32 weights survive JSON exactly
    assert {n["node_id"] for n in data["nodes"]} == set(IDS.values())


def test_logit_clerp_uses_the_tokenizer_when_given(tmp_path, tokenizer):
    path = write_graph_files(hand_graph(), tmp_path, "hand", tokenizer=tokenizer)
    logit = next(n for n in read_graph_json(path)["nodes"] if n["feature_type"] == "logit")
    assert logit["clerp"] == f'Output "{tokenizer.decode([42])}" (p=0.900)'


def test_index_adds_one_entry_per_slug_and_replaces_a_rewritten_one(tmp_path):
    write_graph_files(hand_graph(), tmp_path, "one")
    write_graph_files(hand_graph(), tmp_path, "two")
    write_graph_files(hand_graph(), tmp_path, "one", node_threshold=0.5)
    graphs = json.loads((tmp_path / INDEX).read_text())["graphs"]
    assert [(g["slug"], g["node_threshold"]) for g in graphs] == [("two", 0.8), ("one", 0.5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [INDEX, "one.json", "two.json"]


def test_supernodes_and_pins_survive_saving_and_reading(tmp_path):
    path = write_graph_files(hand_graph(), tmp_path, "hand")
    state = {
        "pinnedIds": ["0_5_0", "3_42_0"],
        "supernodes": [["say hi", "0_5_0", "1_3_0"]],
        "linkType": "both",
        "clickedId": "0_5_0",
        "sg_pos": "",
    }
    write_qparams(path, state)
    data = read_graph_json(path)
    assert data["qParams"] == state
    assert {n["node_id"] for n in data["nodes"]} == set(IDS.values())
    with pytest.raises(MolabError, match=r"qParams supernodes\[0\]\[1\]: Input should be a valid string"):
        write_qparams(path, state | {"supernodes": [["x", 3]]})


def test_a_graph_of_another_model_is_refused(tmp_path):
    path = write_graph_files(hand_graph("org/model-a"), tmp_path, "hand")
    assert read_graph_json(path, model_name="org/model-a")["metadata"]["slug"] == "hand"
    with pytest.raises(MolabError, match=r"hand.json is a graph of 'org/model-a', not of 'org/model-b'"):
        read_graph_json(path, model_name="org/model-b")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["nodes"][0].pop("layer"), r"nodes\[0\]\.layer: Field required"),
        (
            lambda d: d["nodes"][1].update(ctx_idx="3"),
            r"nodes\[1\]\.ctx_idx: Input should be a valid integer",
        ),
        (lambda d: d["metadata"].pop("scan"), r"metadata\.scan: Field required"),
        (lambda d: d["links"][0].update(target="9_9_9"), r"links\[0\]\.target '9_9_9' is not a node"),
        (lambda d: d.pop("qParams"), r"qParams: Field required"),
    ],
)
def test_a_broken_graph_file_is_one_line_naming_file_and_field(tmp_path, edit, message):
    path = write_graph_files(hand_graph(), tmp_path, "hand")
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(MolabError, match=rf"hand.json: {message}"):
        read_graph_json(path)


def test_not_json_and_foreign_files_are_left_alone(tmp_path):
    (tmp_path / "notes.json").write_text("{not json")
    with pytest.raises(MolabError, match=r"notes.json, line 1: not valid JSON"):
        read_graph_json(tmp_path / "notes.json")
    with pytest.raises(MolabError, match=r"notes.json, line 1: not valid JSON"):
        write_graph_files(hand_graph(), tmp_path, "notes")
    assert (tmp_path / "notes.json").read_text() == "{not json"
    (tmp_path / INDEX).write_text('{"other": 1}')
    with pytest.raises(MolabError, match="is not a graph index"):
        write_graph_files(hand_graph(), tmp_path, "fresh")
    assert not (tmp_path / "fresh.json").exists()
    with pytest.raises(MolabError, match="slug '../x'"):
        write_graph_files(hand_graph(), tmp_path, "../x")


def test_scores_in_the_file_are_those_of_graph_scores(tmp_path):
    g = hand_graph()
    scores = read_graph_json(write_graph_files(g, tmp_path, "hand"))["metadata"]["molab"]["scores"]
    full, kept = graph_scores(g), graph_scores(g, prune(g))
    assert scores == pytest.approx(full | {f"pruned_{k}": v for k, v in kept.items()})


def test_export_command_writes_the_files_and_prints_the_scores(tmp_path, monkeypatch, capsys):
    hand_graph().save(tmp_path / "hand graph.safetensors")
    code, out, _ = run_cli(
        ["circuits", "export", tmp_path / "hand graph.safetensors", "--out", tmp_path / "graphs"],
        monkeypatch,
        capsys,
    )
    assert code in (0, None)
    printed = json.loads(out[: out.index("}") + 1])
    assert printed["replacement"] == 0.5 and printed["pruned_replacement"] == 0.4375
    assert printed["nodes"] == 5 and printed["links"] == 5
    assert "logit nodes are named by token id" in out  # the model 'tiny' is not on this machine
    data = read_graph_json(tmp_path / "graphs" / "hand-graph.json", model_name="tiny")
    assert data["metadata"]["slug"] == "hand-graph"


def test_export_command_gives_one_line_for_a_bad_graph_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "g.safetensors").write_bytes(b"not a graph")
    code, _, err = run_cli(
        ["circuits", "export", tmp_path / "g.safetensors", "--out", tmp_path], monkeypatch, capsys
    )
    assert code == 1 and "is not a molab graph file" in err
    assert sum(line.startswith("error:") for line in err.splitlines()) == 1
