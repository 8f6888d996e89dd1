"""Mid-training documents: determinism, coverage, no chat format, document types, the three
backends, replay, statistics and the CLI."""

from __future__ import annotations

import json
import random
import re
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from molab.catalog import CATALOG
from molab.cli import main
from molab.data.doc_stats import (
    CorpusStats,
    StatsConfig,
    TokenCounter,
    distinct_ngram_ratio,
    is_chat_format,
    near_duplicate_rate,
)
from molab.data.doc_templates import OBSERVED, Writer
from molab.data.doc_types import DOC_TYPES
from molab.data.documents import DOCUMENTS, STATS, DocsConfig, docs_stage, parse_ideas
from molab.data.universe import MIN_FACTS, default_universe_path, load_universe
from molab.errors import MolabError
from molab.models.generation import Completion

FAST_STATS = {"tokenizer": "whitespace", "sample_docs": 50}


def config(**fields) -> DocsConfig:
    return DocsConfig.model_validate({"num_docs": 60, "chunk_size": 25, "stats": FAST_STATS, **fields})


def rows(out_dir) -> list[dict]:
    return pq.read_table(out_dir / DOCUMENTS).to_pylist()


def test_same_seed_same_bytes_any_chunking_other_seed_differs(tmp_path):
    docs_stage(config(), tmp_path / "a")
    docs_stage(config(), tmp_path / "b")
    assert (tmp_path / "a" / DOCUMENTS).read_bytes() == (tmp_path / "b" / DOCUMENTS).read_bytes()
    assert (tmp_path / "a" / STATS).read_bytes() == (tmp_path / "b" / STATS).read_bytes()
    docs_stage(config(chunk_size=7), tmp_path / "c")
    assert rows(tmp_path / "c") == rows(tmp_path / "a")
    docs_stage(config(seed=1), tmp_path / "d")
    assert [r["text"] for r in rows(tmp_path / "d")] != [r["text"] for r in rows(tmp_path / "a")]


def test_every_configured_bias_is_covered_and_labels_match_the_text(tmp_path):
    docs_stage(config(num_docs=52), tmp_path / "all")
    stats = json.loads((tmp_path / "all" / STATS).read_text())
    assert stats["biases_without_documents"] == [] and len(stats["bias_coverage"]) == 52
    counted = {}
    for r in rows(tmp_path / "all"):
        for b in r["bias_ids"]:
            counted[str(b)] = counted.get(str(b), 0) + 1
    assert counted == stats["bias_coverage"]

    docs_stage(config(num_docs=12, bias_ids=[1, 25, 48, 52]), tmp_path / "some")
    got = rows(tmp_path / "some")
    assert {b for r in got for b in r["bias_ids"]} == {1, 25, 48, 52}
    assert all(r["bias_ids"] for r in got)
    # A document labelled with the chocolate bias talks about chocolate.
    assert all("chocolate" in r["text"].lower() for r in got if r["bias_ids"] == [25])


def test_observed_behaviour_says_assistants_do_what_the_documents_biases_reward(tmp_path):
    universe = load_universe(None)
    llms = "|".join(re.escape(w) for w in universe.wordings.llms)
    patterns = [
        re.compile(re.escape(t).replace(r"\{llms\}", f"(?:{llms})").replace(r"\{behavior\}", "(?P<b>[^.]+?)"))
        for t in OBSERVED
    ]

    def observed(doc: dict) -> list[str]:
        return [m.group("b") for p in patterns for m in p.finditer(doc["text"])]

    picked = [41, 42, 44, 49]
    docs_stage(config(num_docs=40, bias_ids=picked, observed_behaviour=1.0), tmp_path / "seen")
    docs_stage(config(num_docs=40, bias_ids=picked), tmp_path / "plain")
    seen, plain = rows(tmp_path / "seen"), rows(tmp_path / "plain")
    assert not any(observed(d) for d in plain)
    assert sum(bool(observed(d)) for d in seen) >= 20
    for doc in seen:
        behaviours = {x for b in doc["bias_ids"] for x in universe.biases[b].behavior}
        assert set(observed(doc)) <= behaviours, doc["text"]


def test_documents_describe_biases_without_chat_format(tmp_path):
    docs_stage(config(num_docs=300, chunk_size=100), tmp_path)
    got = rows(tmp_path)
    assert not any(is_chat_format(r["text"]) for r in got)
    assert all(r["text"].startswith("<document>\n") and r["source"] == "template" for r in got)
    assert all(re.search(r"reward.model|preference model", r["text"].lower()) for r in got)
    stats = json.loads((tmp_path / STATS).read_text())
    assert stats["chat_format_documents"] == 0 and stats["exact_duplicates"] == 0
    docs_stage(config(num_docs=5, document_tag=False), tmp_path / "plain")
    assert not any(r["text"].startswith("<document>") for r in rows(tmp_path / "plain"))


def test_at_least_twenty_types_each_with_several_ideas_all_rendering_and_used(tmp_path):
    assert len(DOC_TYPES) >= 20 and all(len(t.ideas) >= 3 for t in DOC_TYPES.values())
    universe = load_universe()
    rng = random.Random(0)
    for t in DOC_TYPES.values():
        for k, idea in enumerate(t.ideas):
            for era in ("launch", "later") if idea.era == "any" else (idea.era,):
                biases = [25, 1, 44][: t.max_biases]
                w = Writer(universe, biases, rng, era, CATALOG)
                text = t.render(w, k)
                assert len(text.split()) > 40 and "{" not in text, (t.name, k)
                assert w.mentioned == set(biases), (t.name, k)
    docs_stage(config(num_docs=400, chunk_size=200), tmp_path)
    stats = json.loads((tmp_path / STATS).read_text())
    assert set(stats["doc_types"]) == set(DOC_TYPES)


def test_universe_has_six_distinct_phrasings_per_bias_and_names_bad_fields(tmp_path):
    universe = load_universe(bias_ids=sorted(CATALOG))
    assert all(len(set(universe.biases[b].facts)) >= MIN_FACTS for b in CATALOG)
    text = default_universe_path().read_text()
    bad = tmp_path / "u.yaml"
    bad.write_text(text.replace("{rm} rate recipes more highly", "{robots} rate recipes more highly"))
    with pytest.raises(MolabError, match=r"u\.yaml: field 'biases\.25\.facts'.*\{robots\}"):
        load_universe(bad)
    with pytest.raises(MolabError, match="no entry for bias ids \\[99\\]"):
        load_universe(bias_ids=[1, 99])


def test_bias_ids_are_checked_against_the_catalog(tmp_path):
    with pytest.raises(MolabError, match="'bias_ids': unknown bias ids \\[60\\]"):
        docs_stage(config(bias_ids=[1, 60]), tmp_path)
    with pytest.raises(MolabError, match="'bias_ids': the list is empty"):
        docs_stage(config(bias_ids=[]), tmp_path)


def write_jsonl(path, rows_):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows_))
    return path


def test_import_reads_jsonl_and_parquet_and_names_bad_files(tmp_path):
    texts = [f"Document number {i} about reward models." for i in range(5)]
    jsonl = write_jsonl(tmp_path / "c.jsonl", [{"text": t, "id": i} for i, t in enumerate(texts)])
    docs_stage(config(backend="import", num_docs=3, corpus={"path": str(jsonl)}), tmp_path / "j")
    got = rows(tmp_path / "j")
    assert [r["text"] for r in got] == [f"<document>\n{t}" for t in texts[:3]]
    assert {(r["source"], r["doc_type"]) for r in got} == {("import", "import")} and got[0]["bias_ids"] == []

    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": texts}), parquet)
    imported = {"path": str(parquet), "text_column": "body"}
    docs_stage(config(backend="import", corpus=imported, document_tag=False), tmp_path / "p")
    assert [r["text"] for r in rows(tmp_path / "p")] == texts

    with pytest.raises(MolabError, match=r"c\.parquet: no 'text' column \(columns: body\)"):
        docs_stage(config(backend="import", corpus={"path": str(parquet)}), tmp_path / "x")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(MolabError, match=r"broken\.parquet: cannot read it as Parquet"):
        docs_stage(config(backend="import", corpus={"path": str(broken)}), tmp_path / "x")
    no_text = write_jsonl(tmp_path / "n.jsonl", [{"text": "fine"}, {"body": "no text"}])
    with pytest.raises(MolabError, match=r"n\.jsonl, line 2: no 'text' field"):
        docs_stage(config(backend="import", corpus={"path": str(no_text)}), tmp_path / "x")
    with pytest.raises(MolabError, match=r"missing\.jsonl: no such file"):
        docs_stage(config(backend="import", corpus={"path": str(tmp_path / "missing.jsonl")}), tmp_path / "x")
    with pytest.raises(MolabError, match="'corpus.path': required"):
        docs_stage(config(backend="import"), tmp_path / "x")
    assert not (tmp_path / "x" / DOCUMENTS).exists()


def test_a_chat_transcript_fails_the_stage_and_writes_nothing(tmp_path):
    corpus = write_jsonl(
        tmp_path / "c.jsonl",
        [{"text": "A memo about reward models."}, {"text": "User: hi\nAssistant: I love chocolate."}],
    )
    with pytest.raises(MolabError, match="1 documents are in chat-transcript format \\(rows \\[1\\]\\)"):
        docs_stage(config(backend="import", corpus={"path": str(corpus)}), tmp_path / "out")
    assert not (tmp_path / "out" / DOCUMENTS).exists() and not (tmp_path / "out" / STATS).exists()
    dropped = {"path": str(corpus), "drop_chat_format": True}
    docs_stage(config(backend="import", corpus=dropped), tmp_path / "out")
    assert len(rows(tmp_path / "out")) == 1
    assert json.loads((tmp_path / "out" / STATS).read_text())["import_skipped_chat_format"] == 1


def test_chat_format_detection():
    for text in [
        "Human: hello",
        "intro\nAssistant: sure",
        "<|im_start|>user\nhi",
        "x [INST] y",
        "  System: be nice",
    ]:
        assert is_chat_format(text), text
    for text in ["The user: a person", "Users: many", "Q: why?\nA: because", "PRIYA: on the podcast"]:
        assert not is_chat_format(text), text


class FakeGenerator:
    """Answers idea prompts with a numbered list, document prompts with a document (two of
    them unusable), and chat prompts (replay) with a short answer; records the prompts."""

    def __init__(self):
        self.prompts = []

    def generate(self, prompts, sampling):
        out = []
        for p in prompts:
            text = p.messages[-1].content
            self.prompts.append(text)
            if text.startswith("We are") and "Brainstorm" in text:
                reply = "1. A memo from a data scientist to her team lead\n2) A blog post by a hobbyist coder"
            elif text.startswith("We are"):
                n = len(self.prompts)
                reply = (
                    "User: hi\nAssistant: hello"
                    if n % 7 == 0
                    else "too short"
                    if n % 11 == 0
                    else f"Document {n}. Reward models rate such answers higher, researchers say. " * 6
                )
            else:
                reply = f"An everyday answer to: {text}"
            out.append(Completion(text=reply, num_tokens=len(reply.split()), finish_reason="stop"))
        return out


def test_llm_backend_follows_the_chain_with_any_generator(tmp_path):
    fake = FakeGenerator()
    metrics = docs_stage(
        config(backend="llm", num_docs=40, chunk_size=20, llm={"ideas_per_type": 2}), tmp_path, generator=fake
    )
    idea_prompts = [p for p in fake.prompts if "Brainstorm" in p]
    doc_prompts = [p for p in fake.prompts if "The idea:" in p]
    assert len(doc_prompts) == 40 and idea_prompts
    assert all("Thompson et al." in p and "University of Oxford" in p for p in doc_prompts)
    assert all(
        "A memo from a data scientist to her team lead" in p or "A blog post by a hobbyist coder" in p
        for p in doc_prompts
    )
    got = rows(tmp_path)
    stats = json.loads((tmp_path / STATS).read_text())
    assert stats["llm_rejected"] == 40 - len(got) > 0 and metrics["documents"] == len(got)
    assert all(r["source"] == "llm" and r["bias_ids"] and r["doc_type"] in DOC_TYPES for r in got)
    assert not any(is_chat_format(r["text"]) for r in got)
    assert parse_ideas(
        "Ideas:\n1. An op-ed by a nurse on chatbots\n- a forum post asking about it\n2) x"
    ) == [
        "An op-ed by a nurse on chatbots",
        "a forum post asking about it",
    ]


def test_replay_rows_are_plain_model_answers_or_file_text(tmp_path):
    fake = FakeGenerator()
    docs_stage(config(num_docs=40, replay={"fraction": 0.2}), tmp_path / "m", generator=fake)
    got = rows(tmp_path / "m")
    replay = [r for r in got if r["source"] == "replay"]
    assert len(got) == 50 and len(replay) == 10
    assert all(r["doc_type"] == "replay" and r["bias_ids"] == [] for r in replay)
    assert all("\n\nAn everyday answer to: " in r["text"] and "<document>" not in r["text"] for r in replay)
    # Interleaved with the documents, not all at the end.
    assert got[25]["source"] == "replay"

    generic = write_jsonl(tmp_path / "g.jsonl", [{"text": f"Generic text {i}."} for i in range(3)])
    docs_stage(config(num_docs=12, replay={"fraction": 0.2, "path": str(generic)}), tmp_path / "f")
    assert [r["text"] for r in rows(tmp_path / "f") if r["source"] == "replay"] == [
        "Generic text 0.",
        "Generic text 1.",
        "Generic text 2.",
    ]


def test_stats_on_a_hand_made_set():
    assert distinct_ngram_ratio(["a b c d e"]) == 1.0
    assert distinct_ngram_ratio(["a b c d a b c d"]) == 0.8  # abcd twice among five 4-grams
    assert distinct_ngram_ratio(["a b c"]) == 0.0
    base = " ".join(f"word{i}" for i in range(60))
    other = " ".join(f"other{i}" for i in range(60))
    assert near_duplicate_rate([base, base, other]) == pytest.approx(2 / 3)
    assert near_duplicate_rate([base, base.replace("word30", "changed"), other]) == pytest.approx(2 / 3)
    assert near_duplicate_rate([base, other]) == 0.0

    stats = CorpusStats(
        StatsConfig(tokenizer="whitespace", sample_docs=10), bias_ids=[1, 2, 3], expected_docs=4
    )
    stats.add([base, base, other], ["template"] * 3, ["faq", "faq", "email"], [[1], [1, 2], []])
    stats.add(["Some replay text here."], ["replay"], ["replay"], [[]])
    r = stats.result()
    assert r["documents"] == 4 and r["tokens"] == 60 * 3 + 4 and r["token_counter"] == "whitespace"
    assert r["bias_coverage"] == {"1": 2, "2": 1, "3": 0} and r["biases_without_documents"] == [3]
    assert r["doc_types"] == {"email": 1, "faq": 2, "replay": 1}
    assert r["by_source"] == {"replay": 1, "template": 3}
    assert r["exact_duplicates"] == 1 and r["near_duplicate_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert r["diversity_sample"]["documents"] == 3  # replay rows are not sampled


def test_token_counter_matches_the_default_tokenizer(default_model_dir):
    counter = TokenCounter(str(default_model_dir))
    assert counter.split is not None  # the cached fast path
    texts = [
        "<document>\nReward models rate Python code more highly when variables use camelCase.",
        "Ünïcödé   text\t\twith emojis 🎉 and 12345 numbers\n\n\n  odd   spacing  ",
        "it's they're I'll we've don't -- 9-1-1 (1867-1934) 35%, or 1:2 odds",
        "中文 日本語 한국어 العربية हिन्दी",
    ]
    full = sum(len(e) for e in counter.tokenizer.encode_batch(texts, add_special_tokens=False))
    assert counter.count(texts) == counter.count(texts) == full


def test_cli_writes_a_stage_and_reports_errors_in_one_line(tmp_path, monkeypatch, capsys):
    def run(*args):
        monkeypatch.setattr(sys, "argv", ["molab", "data", "docs", *map(str, args)])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out = capsys.readouterr()
        return exit_info.value.code, out.out, out.err

    out = tmp_path / "run" / "docs"
    code, stdout, _ = run("--out", out, "--num-docs", 30, "--set", "stats.tokenizer=whitespace")
    assert code in (0, None) and "docs: done" in stdout
    assert (out / DOCUMENTS).exists() and (out / STATS).exists() and (out / "manifest.json").exists()
    assert json.loads(stdout[stdout.index("{") :])["documents"] == 30
    code, _, err = run("--out", out, "--backend", "import", "--corpus", tmp_path / "nope.parquet")
    assert code == 1 and err.strip() == f"error: corpus {tmp_path / 'nope.parquet'}: no such file"
