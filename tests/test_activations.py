"""Activation caches on the tiny model: stored values equal a direct forward, resume after a
failure, layer-at-a-time passes, the shuffled reader, the CLI and one-line errors."""

from __future__ import annotations

import json
import sys
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import molab.models.activations as act
from molab.errors import MolabError
from molab.models.activations import ACTIVATIONS, INDEX, ActivationCache, ActivationsConfig, cache_activations
from molab.models.hooks import capture
from molab.models.loading import ModelSpec, load_model
from molab.pipeline import RunDir, run_stage

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Short.",
    "A somewhat longer document, with several clauses, that runs on for a while before it stops, "
    "so that it needs more tokens than the others in its batch.",
    "Reward models rate answers; nobody knows why they like chocolate in recipes.",
    "One more line of text to fill the second batch.",
]
CHAT = {
    "messages": [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue, like the sky."},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "Green."},
    ]
}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def corpus(tmp_path):
    return write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in TEXTS] + [CHAT])


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(ModelSpec(name=str(tiny_model_dir)))


def config(tiny_model_dir, corpus, **kw):
    settings = dict(points=["layers.0.resid_post"], dtype="float32", batch_size=2, shard_tokens=16)
    return ActivationsConfig(model=ModelSpec(name=str(tiny_model_dir)), corpus=corpus, **settings | kw)


def build(cfg, tmp_path, name="out"):
    cache_activations(cfg, tmp_path / name, tmp_path / f"{name}.work", progress=False)
    return ActivationCache(tmp_path / name)


def ordered(cache, point):
    """Every stored field of `point`, concatenated over its shards in order."""
    parts = list(cache.ordered(point))
    return {k: torch.cat([getattr(p, k) for p in parts]) for k in ("activations", *act.TOKEN_FIELDS)}


def as_rows(t):
    return Counter(r.numpy().tobytes() for r in t.float())


def test_stored_activations_equal_a_direct_forward(loaded, tiny_model_dir, corpus, tmp_path):
    points = ["layers.0.resid_post", "layers.1.resid_pre", "layers.1.mlp_out"]
    cache = build(config(tiny_model_dir, corpus, points=points), tmp_path)
    docs = act.read_corpus(corpus)
    encoded = [act.encode(loaded.tokenizer, d) for d in docs]
    assert cache.tokens == sum(len(ids) for ids, _ in encoded)  # padding never stored
    for point in points:
        got = ordered(cache, point)
        assert got["activations"].shape == (cache.tokens, 64)
        for doc_id, (ids, _) in enumerate(encoded):
            rows = got["doc_ids"] == doc_id
            assert got["token_ids"][rows].tolist() == ids
            assert got["positions"][rows].tolist() == list(range(len(ids)))
            with torch.no_grad():
                out = loaded.model(torch.tensor([ids]), output_hidden_states=True)
                with capture(loaded.model, "layers.1.mlp_out") as seen:
                    loaded.model(torch.tensor([ids]))
            want = {
                "layers.0.resid_post": out.hidden_states[1][0],  # HF: the input of layer 1
                "layers.1.resid_pre": out.hidden_states[1][0],
                "layers.1.mlp_out": seen["layers.1.mlp_out"][0],
            }[point]
            torch.testing.assert_close(
                got["activations"][rows], want, atol=1e-4, rtol=1e-3
            )  # batched: rounding only


def test_assistant_turns_are_flagged_on_a_chat(loaded, tiny_model_dir, tmp_path):
    corpus = write_jsonl(
        tmp_path / "chats.jsonl",
        [
            CHAT,
            {"prompt": "Hi", "completion": "Hello!"},
            {"prompt": "Hi", "prefill": "Well"},
            {"text": "raw"},
        ],
    )
    got = ordered(build(config(tiny_model_dir, corpus), tmp_path), "layers.0.resid_post")
    tok = loaded.tokenizer

    def flagged(doc_id):
        rows = (got["doc_ids"] == doc_id) & got["assistant"]
        return tok.decode(got["token_ids"][rows].tolist())

    assert flagged(0) == "Blue, like the sky.<|im_end|>\nGreen.<|im_end|>\n"
    assert flagged(1) == "Hello!<|im_end|>\n"
    assert flagged(2) == "Well"
    assert flagged(3) == ""
    chat = tok.decode(got["token_ids"][got["doc_ids"] == 0].tolist())
    assert chat.startswith("<|im_start|>") and "<|im_start|>user\nAnother?" in chat  # the template


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtypes_are_stored_as_asked(dtype, tiny_model_dir, corpus, tmp_path):
    full = ordered(build(config(tiny_model_dir, corpus), tmp_path, "f32"), "layers.0.resid_post")
    cache = build(config(tiny_model_dir, corpus, dtype=dtype), tmp_path, dtype)
    half = ordered(cache, "layers.0.resid_post")["activations"]
    assert half.dtype == getattr(torch, dtype) and cache.index["dtype"] == dtype
    torch.testing.assert_close(half.float(), full["activations"], atol=0.05, rtol=0.02)
    assert next(cache.batches("layers.0.resid_post", 8)).dtype == torch.float32
    assert next(cache.batches("layers.0.resid_post", 8, dtype=None)).dtype == getattr(torch, dtype)
    assert 64 * 2 < cache.index["bytes_per_token"] < 64 * 4  # 2 bytes a value, and metadata


def test_skip_bos_and_max_tokens(loaded, tiny_model_dir, tmp_path):
    corpus = write_jsonl(tmp_path / "c.jsonl", [CHAT, CHAT, CHAT])  # chats start with the BOS here
    whole = ordered(build(config(tiny_model_dir, corpus), tmp_path, "a"), "layers.0.resid_post")
    cache = build(config(tiny_model_dir, corpus, skip_bos=True, max_tokens=50), tmp_path, "b")
    got = ordered(cache, "layers.0.resid_post")
    assert cache.tokens == 50 and cache.index["bos_stored"] is False and whole["positions"].min() == 0
    assert set(whole["token_ids"][whole["positions"] == 0].tolist()) == {loaded.tokenizer.bos_token_id}
    assert got["positions"].min() == 1
    keep = whole["positions"] != 0
    torch.testing.assert_close(got["activations"], whole["activations"][keep][:50])


def test_long_documents_are_truncated_and_counted(tiny_model_dir, corpus, tmp_path):
    cache = build(config(tiny_model_dir, corpus, max_length=8), tmp_path)
    got = ordered(cache, "layers.0.resid_post")
    assert int(got["positions"].max()) == 7
    assert cache.index["truncated_documents"] >= 3 and cache.index["max_length"] == 8


def test_batches_group_documents_of_similar_length(loaded, tiny_model_dir, corpus):
    docs = act.read_corpus(corpus) * 3
    stats = Counter()
    made = list(act.batches(loaded.tokenizer, docs, config(tiny_model_dir, corpus, batch_size=3), stats))
    lengths = [len(act.encode(loaded.tokenizer, d)[0]) for d in docs]
    assert sorted(int(d) for b in made for d in b.doc_ids) == list(range(len(docs)))
    assert [int(m.sum()) for b in made for m in b.mask] == sorted(lengths, reverse=True)
    padded = sum(b.ids.numel() for b in made)
    assert stats["tokens"] == sum(lengths) and padded < 1.15 * sum(lengths)


class Killed(Exception):
    pass


def fail_at(monkeypatch, call: int | None):
    """Count the forwards (the points of each); make the `call`-th (1-based) raise."""
    calls = []
    real = act.run_until

    def forward(model, names, **inputs):
        calls.append(list(names))
        if len(calls) == call:
            raise Killed
        return real(model, names, **inputs)

    monkeypatch.setattr(act, "run_until", forward)
    return calls


def test_resume_keeps_completed_shards_and_equals_an_uninterrupted_run(
    tiny_model_dir, corpus, tmp_path, monkeypatch
):
    cfg = config(tiny_model_dir, corpus, points=["layers.0.resid_post", "layers.1.mlp_in"])
    want = build(cfg, tmp_path, "whole")
    run = RunDir("r", tmp_path / "runs")
    calls = fail_at(monkeypatch, 3)
    with pytest.raises(Killed):
        run_stage(run, "acts", ACTIVATIONS, cfg)
    work = run.work_dir("acts")
    partial = json.loads((work / INDEX).read_text())
    kept = {p: [e["path"] for e in s] for p, s in partial["shards"].items()}
    assert kept["layers.0.resid_post"] and all(
        len(v) == len(kept["layers.0.resid_post"]) for v in kept.values()
    )
    assert not run.stage_dir("acts").exists()
    stamps = {p: (work / p).stat().st_mtime_ns for v in kept.values() for p in v}

    calls.clear()
    result = run_stage(run, "acts", ACTIVATIONS, cfg)
    assert not work.exists()  # the stage completed: its work directory is gone
    assert 0 < len(calls) < 3  # only the batches from the first missing shard on were run again
    got = ActivationCache(result.dir)
    for p, files in kept.items():
        assert all((result.dir / f).stat().st_mtime_ns == stamps[f] for f in files)  # the very files
        a, b = ordered(got, p), ordered(want, p)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["sha256"] for e in got.shards("layers.1.mlp_in")] == [
        e["sha256"] for e in want.shards("layers.1.mlp_in")
    ]


def test_a_damaged_shard_is_recomputed_on_resume(tiny_model_dir, corpus, tmp_path, monkeypatch):
    cfg = config(tiny_model_dir, corpus)
    want = build(cfg, tmp_path, "whole")
    fail_at(monkeypatch, 3)
    with pytest.raises(Killed):
        build(cfg, tmp_path, "again")
    work = tmp_path / "again.work"
    shards = json.loads((work / INDEX).read_text())["shards"]["layers.0.resid_post"]
    assert len(shards) >= 2
    (work / shards[0]["path"]).write_bytes(b"damaged")
    calls = fail_at(monkeypatch, None)
    got = build(cfg, tmp_path, "again")
    assert len(calls) == 3  # from the damaged shard on: all three batches
    a, b = ordered(got, "layers.0.resid_post"), ordered(want, "layers.0.resid_post")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_layer_at_a_time_gives_the_same_values(tiny_model_dir, corpus, tmp_path, monkeypatch):
    points = ["layers.1.resid_post", "layers.0.attn_out", "layers.0.resid_post"]
    together = build(config(tiny_model_dir, corpus, points=points), tmp_path, "together")
    calls = fail_at(monkeypatch, None)
    apart = build(config(tiny_model_dir, corpus, points=points, layers_per_pass=1), tmp_path, "apart")
    assert {tuple(c) for c in calls} == {
        ("layers.0.attn_out", "layers.0.resid_post"),
        ("layers.1.resid_post",),
    }
    assert calls.index(["layers.1.resid_post"]) > calls.index(["layers.0.attn_out", "layers.0.resid_post"])
    for p in points:
        assert (tmp_path / "apart" / p).is_dir() and all(
            e["path"].startswith(p + "/") for e in apart.shards(p)
        )
        a, b = ordered(apart, p), ordered(together, p)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_shuffled_reader_yields_every_token_once_reproducibly(tiny_model_dir, corpus, tmp_path):
    cache = build(config(tiny_model_dir, corpus, shard_tokens=8), tmp_path)
    point = "layers.0.resid_post"
    stored = ordered(cache, point)["activations"]
    assert len(cache.shards(point)) > 4

    def epoch(seed, **kw):
        return list(cache.batches(point, 5, seed=seed, buffer_shards=2, **kw))

    first = epoch(0)
    assert all(len(b) == 5 for b in first[:-1]) and 0 < len(first[-1]) <= 5
    assert as_rows(torch.cat(first)) == as_rows(stored)  # every token exactly once
    assert all(torch.equal(a, b) for a, b in zip(first, epoch(0, prefetch=3)))  # same seed, same order
    other = torch.cat(epoch(1))
    assert not torch.equal(other, torch.cat(first)) and as_rows(other) == as_rows(stored)
    assert not torch.equal(torch.cat(first), stored)  # shuffled, not the stored order
    assert sum(map(len, cache.batches(point, 5, drop_last=True))) == len(stored) - len(stored) % 5
    two = list(cache.batches(point, 5, epochs=2, buffer_shards=2, prefetch=2))
    assert as_rows(torch.cat(two)) == as_rows(stored) + as_rows(stored)
    assert all(torch.equal(a, b) for a, b in zip(two, first + epoch(1)))  # epoch e: seed + e


def test_prefetch_hands_a_reader_error_to_the_consumer(tiny_model_dir, corpus, tmp_path):
    cache = build(config(tiny_model_dir, corpus), tmp_path)
    (tmp_path / "out" / cache.shards("layers.0.resid_post")[0]["path"]).write_bytes(b"gone")
    with pytest.raises(Exception):  # noqa: B017 (safetensors' own error type)
        list(cache.batches("layers.0.resid_post", 4, prefetch=2))


@pytest.mark.parametrize(
    "rows, suffix, message",
    [
        ([], ".jsonl", "is empty"),
        ([{"prompt": [{"role": "user", "content": "x"}], "chosen": [], "rejected": []}], ".jsonl", "row 1"),
        ([{"oops": 1}], ".jsonl", "row 1: .*'text', 'prompt' or 'messages'"),
        ([{"text": "x"}], ".txt", "give a .parquet file"),
        (None, ".parquet", "no 'text' column"),
        (None, ".jsonl", "is a Parquet file"),
        ([{"text": ""}], ".jsonl", "no tokens to store"),
    ],
)
def test_bad_corpora_give_one_line(rows, suffix, message, tiny_model_dir, tmp_path):
    path = tmp_path / f"corpus{suffix}"
    if rows is None:
        pq.write_table(pa.table({"body": ["x"]}), path)
    else:
        write_jsonl(path, rows)
    with pytest.raises(MolabError, match=message) as e:
        build(config(tiny_model_dir, path), tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("point", ["layers.2.resid_post", "layers.0.resid", "resid_post"])
def test_unknown_points_give_one_line(point, tiny_model_dir, corpus, tmp_path):
    with pytest.raises(MolabError, match="no hook point") as e:
        build(config(tiny_model_dir, corpus, points=[point]), tmp_path)
    assert "\n" not in str(e.value)


def test_parquet_documents_are_all_stored(tiny_model_dir, tmp_path):
    path = tmp_path / "documents.parquet"
    pq.write_table(pa.table({"text": TEXTS, "source": ["template"] * len(TEXTS)}), path)
    got = ordered(build(config(tiny_model_dir, path), tmp_path), "layers.0.resid_post")
    assert got["doc_ids"].unique().tolist() == list(range(len(TEXTS)))
    assert not got["assistant"].any()


@pytest.mark.parametrize("change", ["corpus", "model", "dtype"])
def test_resuming_another_cache_is_refused(change, loaded, tiny_model_dir, corpus, tmp_path, monkeypatch):
    from conftest import tiny_llama

    cfg = config(tiny_model_dir, corpus)
    fail_at(monkeypatch, 3)
    with pytest.raises(Killed):
        build(cfg, tmp_path)
    monkeypatch.undo()
    assert json.loads((tmp_path / "out.work" / INDEX).read_text())["shards"]["layers.0.resid_post"]
    if change == "corpus":
        write_jsonl(corpus, [{"text": "something else"}])
    elif change == "model":
        other = tmp_path / "other-model"
        tiny_llama(loaded.tokenizer, seed=1).save_pretrained(other)
        loaded.tokenizer.save_pretrained(other)
        cfg = cfg.model_copy(update={"model": ModelSpec(name=str(other))})
    else:
        cfg = cfg.model_copy(update={"dtype": "bfloat16"})
    with pytest.raises(MolabError, match=rf"{tmp_path / 'out.work'} holds a partial activation cache") as e:
        build(cfg, tmp_path)
    assert "\n" not in str(e.value) and f"of another {change} (" in str(e.value)


def run_cli(args, monkeypatch, capsys):
    from molab.cli import main

    monkeypatch.setattr(sys, "argv", ["molab", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_cli_writes_a_stage_and_skips_it_when_up_to_date(
    tiny_model_dir, corpus, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "runs" / "x" / "activations"
    args = ["activations", "cache", "--model", tiny_model_dir, "--corpus", corpus, "--out", out]
    args += ["--points", "layers.0.resid_post,layers.1.mlp_out", "--dtype", "float16", "--skip-bos"]
    args += ["--shard-tokens", 32, "--layers-per-pass", 1]
    code, stdout, _ = run_cli(args, monkeypatch, capsys)
    assert code == 0 and "activations: done" in stdout
    cache = ActivationCache(out)
    assert cache.points == ["layers.0.resid_post", "layers.1.mlp_out"] and cache.dtype == torch.float16
    assert cache.index["skip_bos"] and json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert not (tmp_path / "runs" / "x" / "activations.work").exists()
    code, stdout, _ = run_cli(args, monkeypatch, capsys)
    assert code == 0 and "up to date, skipped" in stdout
    code, _, err = run_cli([*args[:-4], "--points", "layers.7.resid_post"], monkeypatch, capsys)
    last = err.strip().splitlines()[-1]  # above it: transformers' own progress bars
    assert code == 1 and last.startswith("error: no hook point 'layers.7.resid_post'")
