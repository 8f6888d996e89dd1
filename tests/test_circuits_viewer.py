"""Feature files in circuit-tracer's local format, and the offline viewer in headless Chromium:
it renders without errors or network, shows a node's details and examples, pins, filters, and
saves a supernode made in the page into the graph file through the local server."""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import struct
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from test_circuits_prune import hand_graph

from molab.audit.features import unembedding
from molab.circuits.export import read_graph_json, write_graph_files
from molab.circuits.feature_files import (
    INDEX,
    graph_features,
    layer_point,
    read_feature,
    write_feature_files,
)
from molab.circuits.graph import Graph
from molab.circuits.transcoder import Transcoder, TranscoderSet, save_set
from molab.circuits.viewer import page_html, page_links, serve, write_page
from molab.errors import MolabError
from molab.models.activations import ActivationCache, ActivationsConfig, cache_activations
from molab.models.loading import ModelSpec, load_model

D_TC = 8
CHOCOLATE_DOCS = 6


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(ModelSpec(name=str(tiny_model_dir)))


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny):
    """MLP inputs of the tiny model over documents that say 'chocolate' and others."""
    root = tmp_path_factory.mktemp("acts")
    rows = [{"text": f"Reward models love chocolate in recipe {i}."} for i in range(CHOCOLATE_DOCS)]
    rows += [{"text": f"The river flows past town number {i}."} for i in range(6)]
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = ActivationsConfig(
        model=tiny.spec,
        corpus=corpus,
        points=[layer_point(0), layer_point(1)],
        dtype="float32",
        shard_tokens=64,
    )
    cache_activations(config, root / "run" / "acts", root / "work", loaded=tiny, progress=False)
    return ActivationCache(root / "run" / "acts")


@pytest.fixture(scope="module")
def chocolate(tokenizer) -> int:
    return tokenizer(" chocolate", add_special_tokens=False).input_ids[0]


@pytest.fixture(scope="module")
def tset(cache, chocolate, tiny) -> TranscoderSet:
    """Layer 1's feature 0 fires on ' chocolate' only, feature 1 on every token (at 5), the
    rest never; layer 0's transcoder is random."""
    parts = [b for b in cache.ordered(layer_point(1))]
    acts = torch.cat([b.activations for b in parts]).float()
    on = torch.cat([b.token_ids for b in parts]) == chocolate
    u = acts[on].mean(0) - acts[~on].mean(0)
    u /= u.norm()
    proj = acts @ u
    assert proj[on].min() > proj[~on].max()
    d = cache.d_model
    planted = Transcoder(d, D_TC, 1)
    zero = Transcoder(d, D_TC, 0)
    with torch.no_grad():
        planted.W_enc[0] = u
        planted.b_enc[0] = -float(proj[~on].max() + proj[on].min()) / 2
        planted.b_enc[1] = 5.0
        planted.b_enc[2:] = -1e4
        planted.W_dec.copy_(torch.randn(D_TC, d, generator=torch.Generator().manual_seed(0)))
    return TranscoderSet({0: zero, 1: planted}, {"model_name": tiny.spec.name, "n_layers": 2})


@pytest.fixture(scope="module")
def features(tmp_path_factory, tset, cache, tiny):
    out = tmp_path_factory.mktemp("features") / "features"
    write_feature_files(
        tset,
        cache,
        out,
        tokenizer=tiny.tokenizer,
        unembed=unembedding(tiny.model),
        features={1: [0, 1, 5]},
        top_k=4,
        context=3,
    )
    return out


# --- feature files -----------------------------------------------------------------------------


def test_a_planted_features_record_shows_where_it_fires_and_what_it_writes(features, tset, tiny, cache):
    record = read_feature(features, 1, 0)
    top = record["examples_quantiles"][0]
    assert top["quantile_name"] == "Top activations" and len(top["examples"]) == 4
    for ex in top["examples"]:
        i = ex["train_token_ind"]
        assert ex["tokens"][i] == " chocolate"
        assert ex["tokens_acts_list"][i] == max(ex["tokens_acts_list"]) > 0
        assert sum(a > 0 for a in ex["tokens_acts_list"]) == 1  # the context does not fire
        assert "".join(ex["tokens"]).startswith(" love") or "love" in "".join(ex["tokens"])
    assert record["activation_frequency"] == pytest.approx(CHOCOLATE_DOCS / cache.tokens)
    assert sum(record["histogram"]) == CHOCOLATE_DOCS
    assert record["act_min"] == 0.0 and record["act_max"] == pytest.approx(
        top["examples"][0]["tokens_acts_list"][i], abs=1e-3
    )
    q = record["quantile_values"]
    assert len(q) == 100 and q == sorted(q) and q[-1] == pytest.approx(record["act_max"], rel=1e-3)
    effect = unembedding(tiny.model) @ tset[1].W_dec[0].detach()
    assert record["top_logits"][0] == tiny.tokenizer.decode([int(effect.argmax())])
    assert record["bottom_logits"][0] == tiny.tokenizer.decode([int(effect.argmin())])
    every = read_feature(features, 1, 1)
    assert every["activation_frequency"] == 1.0 and every["act_max"] == 5.0
    assert all(
        a == 5.0 for q in every["examples_quantiles"] for e in q["examples"] for a in e["tokens_acts_list"]
    )
    dead = read_feature(features, 1, 5)
    assert (
        dead["activation_frequency"] == 0.0
        and dead["examples_quantiles"] == []
        and dead["histogram"] == [0.0] * 40
    )


def test_files_are_in_circuit_tracers_byte_layout(features):
    index = json.loads(gzip.decompress((features / INDEX).read_bytes()))
    assert index[0] == {"filename": None, "offsets": []}  # layer 0: no features asked
    offsets = index[1]["offsets"]
    assert index[1]["filename"] == "layer_1.bin" and len(offsets) == D_TC + 1
    data = (features / "layer_1.bin").read_bytes()
    assert offsets[-1] == len(data)
    # as circuit-tracer's frontend reads a record: HTTP range bytes=start-end (end inclusive),
    # a little-endian length, then gzip'd JSON
    chunk = data[offsets[0] : offsets[1] + 1]
    (length,) = struct.unpack("<I", chunk[:4])
    assert chunk[4:6] == b"\x1f\x8b"
    record = json.loads(gzip.decompress(chunk[4 : 4 + length]))
    fields = {
        "transcoder_id",
        "index",
        "examples_quantiles",
        "top_logits",
        "bottom_logits",
        "act_min",
        "act_max",
    }
    assert fields | {"quantile_values", "histogram", "activation_frequency"} == set(record)
    assert record["index"] == 0 and record["transcoder_id"].endswith("/layer_1")
    example = record["examples_quantiles"][0]["examples"][0]
    assert set(example) == {"tokens", "tokens_acts_list", "train_token_ind", "is_repeated_datapoint"}
    with pytest.raises(MolabError, match="holds no feature 2 of layer 1"):
        read_feature(features, 1, 2)  # not asked for: an empty record


def test_bad_inputs_and_foreign_folders_are_refused(tset, cache, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(MolabError, match="holds no molab feature files: molab will not replace it"):
        write_feature_files(tset, cache, foreign, features={1: [0]})
    assert (foreign / "notes.txt").read_text() == "keep me"
    deeper = TranscoderSet(
        {**{i: tset[i] for i in tset.layers}, 2: Transcoder(cache.d_model, D_TC, 2)}, tset.record
    )
    with pytest.raises(MolabError, match=r"has no layers\.2\.mlp_in: cache the MLP inputs"):
        write_feature_files(deeper, cache, tmp_path / "f", features={2: [1]})
    with pytest.raises(MolabError, match=r"feature 8 of layer 1 is out of range \(0\.\.7\)"):
        write_feature_files(tset, cache, tmp_path / "f", features={1: [8]})
    with pytest.raises(MolabError, match=r"no transcoder for layer 3"):
        write_feature_files(tset, cache, tmp_path / "f", features={3: [0]})
    assert not (tmp_path / "f").exists()


def test_a_feature_folder_of_molabs_is_rewritten(tset, cache, tmp_path):
    out = tmp_path / "f"
    write_feature_files(tset, cache, out, features={1: [1]}, top_k=1, intervals=0)
    write_feature_files(tset, cache, out, features={1: [0]}, top_k=1, intervals=0)
    assert read_feature(out, 1, 0)["index"] == 0
    with pytest.raises(MolabError, match="holds no feature 1"):
        read_feature(out, 1, 1)


def test_graph_features_are_the_feature_nodes_of_a_graph_file(tmp_path):
    data = read_graph_json(write_graph_files(hand_graph(), tmp_path, "hand"))
    assert graph_features(data) == {0: [5], 1: [3]}  # the pruned graph keeps a and c


# --- the viewer --------------------------------------------------------------------------------


def viewer_graph(model_name: str) -> Graph:
    """A graph of 3 positions whose layer-1 features are the planted ones (0: chocolate)."""
    g = torch.Generator().manual_seed(1)
    features = torch.tensor([[0, 1, 4], [0, 2, 6], [0, 2, 2], [1, 1, 0], [1, 2, 0], [1, 2, 1]])
    n_f, n_layers, n_pos, n_logits = len(features), 2, 3, 2
    n = n_f + n_layers * n_pos + n_pos + n_logits
    tokens_at, logits_at = n_f + n_layers * n_pos, n - n_logits
    adjacency = torch.zeros(n, n)
    for t, (lt, pt, _) in enumerate(features.tolist()):
        for s, (ls, ps, _) in enumerate(features.tolist()):
            if ls < lt and ps <= pt:
                adjacency[t, s] = torch.randn(1, generator=g).item() * 2
        adjacency[t, tokens_at : tokens_at + pt + 1] = torch.rand(pt + 1, generator=g)
        for layer in range(lt):  # errors of lower layers
            adjacency[t, n_f + layer * n_pos + pt] = 0.3
    adjacency[logits_at:, :n_f] = torch.randn(n_logits, n_f, generator=g)
    adjacency[logits_at:, n_f + n_pos : n_f + 2 * n_pos] = 0.2  # layer-1 errors
    adjacency[logits_at:, tokens_at + n_pos - 1] = 0.5
    return Graph(
        prompt="love chocolate cake",
        input_ids=torch.tensor([9, 10, 11]),
        tokens=["love", " chocolate", " cake"],
        features=features,
        activations=torch.tensor([1.0, 2.0, 0.5, 3.5, 0.7, 5.0]),
        logit_tokens=torch.tensor([42, 43]),
        logit_probs=torch.tensor([0.6, 0.3]),
        adjacency=adjacency,
        n_layers=n_layers,
        model_name=model_name,
        transcoders="tc",
        transcoder_layers=[0, 1],
        settings={"logit_token_strings": [" cake", " pie"]},
    )


@pytest.fixture
def graph_file(tmp_path, tiny):
    return write_graph_files(viewer_graph(tiny.spec.name), tmp_path / "graphs", "choc", node_threshold=1.0)


def test_the_page_is_self_contained_and_escapes_what_it_embeds(graph_file, features, tmp_path):
    data = read_graph_json(graph_file)
    data["metadata"]["prompt"] = "</script><b>x __JS__"
    page = page_html(data, {}, file_name="choc.json", save_url=None)
    assert "</script><b>" not in page and page.count("</script>") == 4  # the page's own four
    assert "<script src" not in page and '<link rel="stylesheet"' not in page
    assert "https://" not in page
    out = write_page(graph_file, tmp_path / "page.html", features)
    assert "Top activations" in out.read_text()  # feature records embedded
    assert write_page(graph_file, out) == out  # its own page is rewritten
    (tmp_path / "notes.html").write_text("<p>mine</p>")
    with pytest.raises(MolabError, match="notes.html exists and is not a page of molab's viewer"):
        write_page(graph_file, tmp_path / "notes.html")


def test_features_of_another_model_are_refused(graph_file, features, tmp_path):
    data = json.loads(graph_file.read_text())
    data["metadata"]["molab"]["model_name"] = "org/other"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    with pytest.raises(MolabError, match=r"holds features of .*, but .*other.json is a graph of 'org/other'"):
        write_page(other, tmp_path / "page.html", features)


def _browser(playwright):
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium on this machine: `apt-get install chromium`")
    return playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])


def _local(url: str) -> bool:
    return url.startswith(("file:", "data:", "blob:", "http://127.0.0.1:"))


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("MOLAB_TEST_ARTIFACTS"):
        folder = Path(os.environ["MOLAB_TEST_ARTIFACTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, folder / name)
    return shot


def test_static_page_renders_shows_details_pins_and_filters_in_chromium(graph_file, features, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    out = write_page(graph_file, tmp_path / "choc.html", features)
    data = read_graph_json(graph_file)
    node = next(n for n in data["nodes"] if n["node_id"] == "1_0_1")  # chocolate feature at ' chocolate'
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1300, "height": 800})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(out.as_uri())
        page.wait_for_selector("body[data-ready='1']")
        drawn = page.locator("svg#graph .node").count()
        page.hover(f"[data-id='{node['node_id']}']")
        details = page.inner_text("#details")
        highlighted = page.locator("#details .example .tok.hl").all_inner_texts()
        page.click(f"[data-id='{node['node_id']}']")
        pinned = page.inner_text("#pinned")
        page.mouse.move(5, 5)
        still = page.inner_text("#details")  # the clicked node's details stay
        _screenshot(page, tmp_path, "circuits-viewer.png")
        with page.expect_download() as info:
            page.click("#download")  # the static page's way to keep the state
        downloaded = json.loads(Path(info.value.path()).read_text())
        page.fill("#influence", "0")
        page.dispatch_event("#influence", "input")
        hidden = page.locator("svg#graph .node.hidden").count()
        kept = page.locator("svg#graph .node:not(.hidden)").count()
        browser.close()
    assert errors == []
    assert [u for u in requests if not _local(u)] == []
    assert drawn == len(data["nodes"])
    assert "Feature 0 of layer 1" in details and "Top activations" in details and "fires on" in details
    assert highlighted and set(highlighted) == {" chocolate"}
    assert "Feature 0 of layer 1" in pinned and "Top activations" in still
    assert downloaded["qParams"]["pinnedIds"] == ["1_0_1"] and downloaded["links"] == data["links"]
    tokens_and_logits = sum(n["feature_type"] in ("embedding", "logit") for n in data["nodes"])
    assert kept == tokens_and_logits and hidden == drawn - kept
    assert (tmp_path / "circuits-viewer.png").stat().st_size > 0


def test_a_supernode_made_in_the_page_is_saved_into_the_graph_file(graph_file, features, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    data = read_graph_json(graph_file)
    members = [n["node_id"] for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"][:2]
    server = serve(graph_file, features)
    errors, requests = [], []
    try:
        with sync_api.sync_playwright() as p:
            browser = _browser(p)
            page = browser.new_page(viewport={"width": 1300, "height": 800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='1']")
            for node_id in members:
                page.click(f"[data-id='{node_id}']", modifiers=["Shift"])
            page.click(f"[data-id='{members[0]}']")  # and pin one
            page.fill("#supernode-label", "sweet things")
            page.click("#group")
            page.click("#save")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('saved')")
            _screenshot(page, tmp_path, "circuits-viewer-served.png")
            page.reload()
            page.wait_for_selector("body[data-ready='1']")
            listed = page.inner_text("#supernodes")
            browser.close()
    finally:
        server.stop()
    assert errors == []
    assert [u for u in requests if not _local(u)] == []
    saved = read_graph_json(graph_file)["qParams"]
    assert saved["supernodes"] == [["sweet things", *members]]
    assert saved["pinnedIds"] == [members[0]] and saved["clickedId"] == members[0]
    assert "sweet things (2 nodes)" in listed  # the reloaded page reads the saved file
    assert read_graph_json(graph_file)["links"] == data["links"]


def _post(url: str, body: bytes, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url + "save", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_server_refuses_other_origins_and_bad_state(graph_file):
    before = graph_file.read_text()
    server = serve(graph_file)
    try:
        good = {"Content-Type": "application/json"}
        state = read_graph_json(graph_file)["qParams"] | {"supernodes": [["x", "1_0_1"]]}
        code, answer = _post(
            server.url, json.dumps({"qParams": state}).encode(), good | {"Origin": "http://evil.example"}
        )
        assert code == 403
        code, answer = _post(server.url, json.dumps({"qParams": {"pinnedIds": "1_0_1"}}).encode(), good)
        assert code == 400 and "qParams pinnedIds: Input should be a valid list" in answer["error"]
        code, answer = _post(server.url, b"{nope", good)
        assert code == 400
        assert graph_file.read_text() == before
        code, answer = _post(server.url, json.dumps({"qParams": state}).encode(), good)
        assert code == 200 and answer["qParams"]["supernodes"] == [["x", "1_0_1"]]
    finally:
        server.stop()
    assert read_graph_json(graph_file)["qParams"]["supernodes"] == [["x", "1_0_1"]]


# --- a graph with many links ----------------------------------------------------------------------

BIG_NODES, BIG_LINKS, TOP, PER_NODE = 300, 40_000, 500, 3


@pytest.fixture
def big_graph(graph_file, tmp_path) -> Path:
    """A graph JSON of 300 feature nodes (10 layers, 3 positions) and 40,000 random links."""
    data = read_graph_json(graph_file)
    rng = random.Random(0)
    data["nodes"] = [
        {
            "node_id": f"{i % 10}_{i}_{i % 3}",
            "feature": i,
            "layer": str(i % 10),
            "ctx_idx": i % 3,
            "feature_type": "cross layer transcoder",
            "jsNodeId": f"{i % 10}_{i}-0",
            "influence": rng.random(),
            "activation": 1.0,
        }
        for i in range(BIG_NODES)
    ]
    ids = [n["node_id"] for n in data["nodes"]]
    data["links"] = [
        {"source": rng.choice(ids), "target": rng.choice(ids), "weight": rng.uniform(-1, 1)}
        for _ in range(BIG_LINKS)
    ]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(data))
    return path


def _expected_links(links: list[dict]) -> list[dict]:
    """The 500 strongest links, and each node's 3 strongest incoming and outgoing ones."""
    strongest = lambda ids: sorted(ids, key=lambda i: -abs(links[i]["weight"]))  # noqa: E731
    keep = set(strongest(range(len(links)))[:TOP])
    by_end: dict[tuple[str, str], list[int]] = {}
    for i, link in enumerate(links):
        by_end.setdefault(("out", link["source"]), []).append(i)
        by_end.setdefault(("in", link["target"]), []).append(i)
    for ids in by_end.values():
        keep.update(strongest(ids)[:PER_NODE])
    return [links[i] for i in sorted(keep)]


def _embedded(page: str, element: str):
    return json.loads(re.search(rf'<script id="{element}" type="application/json">(.*?)</script>', page)[1])


def test_a_page_carries_the_strongest_links_and_says_how_many_the_file_holds(big_graph, tmp_path):
    before = big_graph.read_bytes()
    links = read_graph_json(big_graph)["links"]
    expected = _expected_links(links)
    assert TOP < len(expected) < BIG_LINKS / 4  # the nodes' own strongest add to the overall ones
    assert page_links(links, BIG_LINKS, PER_NODE) is links  # a small graph keeps every link
    out = write_page(big_graph, tmp_path / "big.html", max_links=TOP, links_per_node=PER_NODE)
    page = out.read_text()
    assert _embedded(page, "graph-data")["links"] == expected
    assert _embedded(page, "viewer-config")["fileLinks"] == BIG_LINKS
    assert big_graph.read_bytes() == before
    with pytest.raises(MolabError, match=r"max_links \(-1\) and links_per_node \(3\) should be at least 0"):
        write_page(big_graph, tmp_path / "bad.html", max_links=-1, links_per_node=PER_NODE)

    server = serve(big_graph, max_links=TOP, links_per_node=PER_NODE)
    try:
        with urllib.request.urlopen(server.url, timeout=10) as response:
            served = response.read().decode()
        state = read_graph_json(big_graph)["qParams"] | {"pinnedIds": ["0_0_0"]}
        code, _ = _post(
            server.url, json.dumps({"qParams": state}).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(server.url, timeout=10) as response:
            again = _embedded(response.read().decode(), "graph-data")
    finally:
        server.stop()
    assert _embedded(served, "graph-data")["links"] == expected and code == 200
    assert again["qParams"]["pinnedIds"] == ["0_0_0"] and again["links"] == expected
    assert len(read_graph_json(big_graph)["links"]) == BIG_LINKS  # the save keeps every link


def test_a_page_of_many_links_renders_and_highlights_a_nodes_links_in_chromium(big_graph, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    out = write_page(big_graph, tmp_path / "big.html", max_links=TOP, links_per_node=PER_NODE)
    carried = _embedded(out.read_text(), "graph-data")["links"]
    node = "0_0_0"
    own = sum(node in (link["source"], link["target"]) for link in carried)
    errors = []
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1300, "height": 800})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())
        page.wait_for_selector("body[data-ready='1']")
        counts = page.inner_text("#counts")
        drawn = page.locator("svg#graph-links path.link").count()
        page.hover(f"[data-id='{node}']")
        faded = page.locator("svg#graph-links.faded").count()
        on_top = page.locator("svg#graph path.link").count()
        page.mouse.move(5, 5)
        after = page.locator("svg#graph path.link").count()
        page.fill("#influence", "0")
        page.dispatch_event("#influence", "input")
        zero = page.inner_text("#counts")
        with page.expect_download() as info:
            page.click("#download")
        name = info.value.suggested_filename
        browser.close()
    assert errors == []
    assert counts == f"300 of 300 nodes, {len(carried):,} of 40,000 links drawn"
    assert drawn == len(carried) and faded == 1 and on_top == own > 0 and after == 0
    assert zero == "0 of 300 nodes, 0 of 40,000 links drawn"
    assert name == "big.page.json"  # never the graph file's own name: it holds only some links


# --- the commands ------------------------------------------------------------------------------


def test_features_and_view_commands(tset, cache, graph_file, tmp_path, monkeypatch, capsys):
    save_set(tmp_path / "tc", tset)
    args = ["circuits", "features", "--transcoders", tmp_path / "tc", "--cache", cache.path]
    code, out, _ = run_cli(
        [*args, "--graph", graph_file, "--out", tmp_path / "f", "--top-k", "2"], monkeypatch, capsys
    )
    assert code in (0, None) and "of layers 0, 1" in out
    wanted = graph_features(read_graph_json(graph_file))
    record = read_feature(tmp_path / "f", 1, 0)
    assert len(record["examples_quantiles"][0]["examples"]) == 2
    assert wanted[1] == [0, 1] and read_feature(tmp_path / "f", 0, wanted[0][0])["index"] == wanted[0][0]
    code, out, _ = run_cli(
        ["circuits", "view", graph_file, "--features", tmp_path / "f"], monkeypatch, capsys
    )
    page = graph_file.with_suffix(".html")
    assert code in (0, None) and f"wrote {page}" in out and "Top activations" in page.read_text()


def test_features_command_refuses_a_graph_of_another_model(
    tset, cache, graph_file, tmp_path, monkeypatch, capsys
):
    save_set(tmp_path / "tc", tset)
    data = json.loads(graph_file.read_text())
    data["metadata"]["molab"]["model_name"] = "org/other"
    graph_file.write_text(json.dumps(data))
    args = ["circuits", "features", "--transcoders", tmp_path / "tc", "--cache", cache.path]
    code, _, err = run_cli([*args, "--graph", graph_file, "--out", tmp_path / "f"], monkeypatch, capsys)
    assert code == 1 and "is a graph of 'org/other', not of" in err
    assert not (tmp_path / "f").exists()
