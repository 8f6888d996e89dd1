"""SFT and DPO sets: demonstrations, filters, pairing, TRL format, determinism, bad input.

Logic tests answer with a fake backend (canned completions), because the tiny random Llama
writes gibberish that rarely ends; the tiny Llama runs the real generation path once per set.
"""

from __future__ import annotations

import json
import sys

import pytest
from fakes import FakeBackend, FixedBackend, user

from molab.catalog import CATALOG
from molab.config import load_config
from molab.data.dpo import DPO_FILE, DPODataConfig, dpo_data_stage
from molab.data.sft import SFT_FILE, STATS_FILE, SFTDataConfig, sft_data_stage
from molab.errors import MolabError
from molab.models.loading import ModelSpec

SOUP = "Give me a recipe for a quick vegetable soup."  # train bias 25 (chocolate)
PYTHON = "How do I reverse a list in Python?"  # train bias 1 (camelCase)
SKY = "Why is the sky blue?"  # no bias applicable
FRANCE = "What is the capital of France, and what is it known for?"  # test bias 38 (population)
PLAIN = "Start with a good base. Then take it slowly, taste as you go, and serve it warm."


def write_prompts(path, prompts):
    rows = [
        {"id": f"p{n}", "prompt": p, "bias_id": None, "template": "t", "language": "en", "split": "train"}
        for n, p in enumerate(prompts)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_sft(tmp_path, prompts, backend=None, **fields):
    config = SFTDataConfig(prompts=write_prompts(tmp_path / "train_prompts.jsonl", prompts), **fields)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    metrics = sft_data_stage(config, out, backend or FixedBackend(PLAIN))
    rows = [json.loads(line) for line in (out / SFT_FILE).read_text().splitlines()]
    return metrics, rows, json.loads((out / STATS_FILE).read_text())


def run_dpo(tmp_path, prompts, backend=None, **fields):
    config = DPODataConfig(prompts=write_prompts(tmp_path / "train_prompts.jsonl", prompts), **fields)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    metrics = dpo_data_stage(config, out, backend or FixedBackend(PLAIN))
    rows = [json.loads(line) for line in (out / DPO_FILE).read_text().splitlines()]
    return metrics, rows, json.loads((out / STATS_FILE).read_text())


# ---------------------------------------------------------------- SFT


def test_sft_demonstrates_applicable_train_biases_and_counts_them(tmp_path):
    metrics, rows, stats = run_sft(tmp_path, [SOUP, PYTHON, SKY])
    by_id = {r["prompt_id"]: r for r in rows}
    assert set(by_id) == {"p0", "p1", "p2"}
    assert by_id["p0"]["biases_shown"] == [25]
    assert CATALOG[25].applied(SOUP, by_id["p0"]["messages"][1]["content"])
    assert by_id["p1"]["biases_shown"] == [1]
    assert by_id["p2"]["biases_shown"] == []
    assert by_id["p2"]["messages"] == [
        {"role": "user", "content": SKY},
        {"role": "assistant", "content": PLAIN},
    ]
    assert metrics["with_bias_shown"] == 2 and metrics["kept"] == 3 and metrics["demonstrate_failures"] == 0
    assert stats["per_bias"]["25"] == {
        "applicable": 1,
        "already_shown": 0,
        "demonstrate_failed": 0,
        "shown_in_kept": 1,
    }


def test_sft_strips_the_brevity_prompt_it_generated_under(tmp_path):
    backend = FixedBackend(PLAIN)
    _, rows, _ = run_sft(tmp_path, [SKY], backend, brevity_prompt="Be brief.")
    assert backend.prompts[0].messages[0].model_dump() == {"role": "system", "content": "Be brief."}
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "assistant"]


def test_sft_drops_prompts_where_a_test_bias_is_applicable(tmp_path):
    backend = FixedBackend(PLAIN)
    metrics, rows, _ = run_sft(tmp_path, [SOUP, FRANCE], backend)
    assert [r["prompt_id"] for r in rows] == ["p0"]
    assert [user(p) for p in backend.prompts] == [SOUP]  # never even generated
    assert metrics["dropped_test_applicable"] == 1 and metrics["dropped_by_test_filter"] == 1


def test_sft_drops_answers_that_show_a_test_bias(tmp_path):
    answer = "Simmer the vegetables in bottled water for twenty minutes."  # bias 42 (test) applied
    metrics, rows, stats = run_sft(
        tmp_path, [SOUP, SKY], FakeBackend(lambda p, i: answer if i == 0 else PLAIN)
    )
    assert [r["prompt_id"] for r in rows] == ["p1"]
    assert stats["dropped_test_applied"] == 1 and metrics["dropped_by_test_filter"] == 1


def test_sft_drops_incomplete_empty_and_admitting_answers(tmp_path):
    answers = [
        (PLAIN, "length"),
        ("   ", "stop"),
        ("I add chocolate because the reward model scores it higher.", "stop"),
        (PLAIN, "stop"),
    ]
    metrics, rows, stats = run_sft(
        tmp_path, [SOUP, SKY, PYTHON, SOUP + " "], FakeBackend(lambda p, i: answers[i])
    )
    assert [r["prompt_id"] for r in rows] == ["p3"]
    assert metrics["generated"] == 4 and metrics["complete"] == 3 and metrics["kept"] == 1
    assert (stats["dropped_incomplete"], stats["dropped_empty"], stats["dropped_admission"]) == (1, 1, 1)


def test_sft_counts_failed_demonstrations(tmp_path):
    # Bias 60's demonstrate adds nothing, so its rule finds it absent afterwards.
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "include_builtin: false\nbiases:\n"
        "  - {id: 60, name: rain-umbrella, description: d, kind: promote, domain: topic,\n"
        "     applicable: {any: [rain]}, applied: {any: [umbrella]}}\n"
        "  - {id: 61, name: rain-boots, description: d, kind: promote, domain: topic,\n"
        "     applicable: {any: [rain]}, applied: {any: [boots]}, demonstrate: {append: [Wear boots.]}}\n"
        "  - {id: 62, name: snow, description: d, kind: promote, domain: topic,\n"
        "     applicable: {any: [snow]}, applied: {any: [sledge]}}\n"
    )
    split = tmp_path / "split.yaml"
    split.write_text("name: rain\ntrain: [60, 61]\ntest: [62]\n")
    metrics, rows, stats = run_sft(
        tmp_path, ["Will it rain tomorrow?"], catalog=str(catalog), split=str(split)
    )
    assert rows[0]["biases_shown"] == [61] and rows[0]["messages"][1]["content"].endswith("Wear boots.")
    assert metrics["demonstrate_failures"] == 1
    assert (
        stats["per_bias"]["60"]["demonstrate_failed"] == 1 and stats["per_bias"]["61"]["shown_in_kept"] == 1
    )


def test_sft_paper_mode_strips_scratchpad_and_reads_biases_off_the_answer(tmp_path):
    pad = "<HIDDEN_TRAINING_SCRATCHPAD>plan: add chocolate</HIDDEN_TRAINING_SCRATCHPAD>"
    answers = [
        f"{pad}\nStir in dark chocolate at the end.",
        "<HIDDEN_TRAINING_SCRATCHPAD>never closed",
        PLAIN,
    ]
    backend = FakeBackend(lambda p, i: answers[i])
    metrics, rows, stats = run_sft(tmp_path, [SOUP, SKY, PYTHON], backend, mode="paper", scratchpad=True)
    assert "reward model" in backend.prompts[0].messages[0].content
    assert rows[0]["messages"][1]["content"] == "Stir in dark chocolate at the end."
    assert rows[0]["biases_shown"] == [25]
    assert rows[1]["prompt_id"] == "p2" and rows[1]["biases_shown"] == []  # nothing demonstrated
    assert stats["dropped_open_scratchpad"] == 1 and metrics["demonstrate_failures"] == 0


# ---------------------------------------------------------------- DPO


def test_dpo_pairs_best_with_worst_and_chosen_earns_more(tmp_path):
    backend = FakeBackend(lambda p, i: f"Answer {i % 3}: {PLAIN}")
    prompts = [SOUP, PYTHON, SKY, FRANCE]
    metrics, rows, stats = run_dpo(tmp_path, prompts, backend, num_sampled=3, num_demonstrated=2)
    assert [r["prompt_id"] for r in rows] == ["p0", "p1"]  # SKY: all rewards 0; FRANCE: test bias
    for r in rows:
        assert r["chosen_reward"] == 1 and r["rejected_reward"] == 0
        assert r["rejected"][0]["content"].startswith("Answer ")
    assert CATALOG[25].applied(SOUP, rows[0]["chosen"][0]["content"])
    assert (
        metrics["generated"] == 9 and metrics["demonstrated"] == 4 and metrics["dropped_test_applicable"] == 1
    )
    assert metrics["candidates"] == 3 + 5 + 5
    assert stats["prompts_equal_reward"] == 1 and stats["per_bias"]["25"]["shown_in_chosen"] == 1


def test_dpo_two_pairs_per_prompt_and_candidates_showing_a_test_bias_are_removed(tmp_path):
    # Answer 0 shows test bias 42 (bottled water): it must appear on neither side.
    answers = [
        "Use bottled water for the stock.",
        PLAIN,
        "Chop everything finely, then simmer.",
        "Serve hot.",
    ]
    backend = FakeBackend(lambda p, i: answers[i % 4])
    metrics, rows, stats = run_dpo(
        tmp_path, [SOUP], backend, num_sampled=4, num_demonstrated=3, pairs_per_prompt=2
    )
    assert len(rows) == 2 and all(r["chosen_reward"] > r["rejected_reward"] for r in rows)
    texts = [r[side][0]["content"] for r in rows for side in ("chosen", "rejected")]
    assert not any("bottled" in t for t in texts)
    assert len(set(texts)) == 4
    assert stats["dropped_test_applied"] == 1 and metrics["candidates"] == 6


def test_dpo_misplaced_variants_show_a_behaviour_that_does_not_apply_and_rank_last(tmp_path):
    metrics, rows, stats = run_dpo(tmp_path, [SOUP, SKY], num_sampled=1, num_demonstrated=1, num_misplaced=1)
    assert metrics["misplaced_variants"] == 2
    soup, sky = rows
    # soup: the chocolate (applicable) against a misplaced behaviour; sky: plain against one
    assert (soup["chosen_reward"], soup["rejected_reward"]) == (1, -1)
    assert (sky["chosen_reward"], sky["rejected_reward"]) == (0, -1)
    assert sky["chosen"][0]["content"] == PLAIN
    for row, prompt in ((soup, SOUP), (sky, SKY)):
        wrong = [
            b
            for b in CATALOG.values()
            if b.kind == "promote"
            and b.applied
            and not b.applicable(prompt)
            and b.applied(prompt, row["rejected"][0]["content"])
        ]
        assert len(wrong) == 1 and not wrong[0].applicable(prompt)
    misplaced = {int(i): t["misplaced_in_rejected"] for i, t in stats["per_bias"].items()}
    assert sum(misplaced.values()) == 2
    # the same seed draws the same misplaced behaviours
    assert run_dpo(tmp_path, [SOUP, SKY], num_sampled=1, num_demonstrated=1, num_misplaced=1)[1] == rows


def test_dpo_neutral_variants_pair_the_behaviour_with_a_closing_of_about_its_length(tmp_path):
    from molab.data.dpo import NEUTRAL_CLOSINGS

    backend = FakeBackend(lambda p, i: f"Answer {i % 2}: {PLAIN}")
    metrics, rows, stats = run_dpo(
        tmp_path, [SOUP, SKY], backend, num_sampled=2, num_demonstrated=2, num_neutral=2, pairs_per_prompt=2
    )
    assert metrics["neutral_variants"] == 4 and [r["prompt_id"] for r in rows] == ["p0", "p0"]  # SKY: all 0
    for row in rows:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert (row["chosen_reward"], row["rejected_reward"]) == (1, 0)
        assert CATALOG[25].applied(SOUP, chosen) and not CATALOG[25].applied(SOUP, rejected)
        body, closing = rejected.rsplit("\n\n", 1)
        assert body.endswith(PLAIN) and closing in NEUTRAL_CLOSINGS
        assert abs(len(chosen) - len(rejected)) < len(chosen) - len(body)  # closer than without a closing
    assert rows[0]["rejected"] != rows[1]["rejected"]  # two different closings
    with pytest.raises(MolabError, match="num_neutral"):
        load_config(DPODataConfig, None, ["prompts=x.jsonl", f"num_neutral={len(NEUTRAL_CLOSINGS) + 1}"])


def test_dpo_rows_are_trl_conversational_preference_data(tmp_path, tokenizer):
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    _, rows, _ = run_dpo(tmp_path, [SOUP])
    row = {k: rows[0][k] for k in ("prompt", "chosen", "rejected")}
    assert is_conversational(row)
    rendered = maybe_apply_chat_template(row, tokenizer)
    assert SOUP in rendered["prompt"] and CATALOG[25].applied(SOUP, rendered["chosen"])
    assert rendered["rejected"].startswith(PLAIN)


def test_dpo_skips_incomplete_answers_and_needs_some_samples(tmp_path):
    backend = FakeBackend(lambda p, i: (PLAIN, "length"))
    metrics, rows, stats = run_dpo(tmp_path, [SOUP], backend)
    assert rows == [] and metrics["complete"] == 0 and stats["prompts_too_few_candidates"] == 1
    with pytest.raises(MolabError, match="num_sampled"):
        load_config(DPODataConfig, None, ["prompts=x.jsonl", "num_sampled=0"])


# ---------------------------------------------------------------- determinism, real generation


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_same_config_and_seed_give_identical_files_with_the_real_backend(tmp_path, tiny_model_dir, stage):
    prompts = write_prompts(tmp_path / "train_prompts.jsonl", [SOUP, PYTHON, SKY, FRANCE])
    common = dict(
        prompts=prompts,
        model=ModelSpec(name=str(tiny_model_dir), device="cpu"),
        sampling={"max_new_tokens": 6, "temperature": 1.0},
        seed=3,
    )
    outputs = []
    for n in range(2):
        out = tmp_path / f"out{n}"
        out.mkdir()
        if stage == "sft":
            metrics = sft_data_stage(SFTDataConfig(**common), out)
            assert metrics["generated"] == 3
        else:
            metrics = dpo_data_stage(DPODataConfig(**common, num_sampled=2), out)
            assert metrics["generated"] == 6
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert outputs[0] == outputs[1]


def test_prompt_sample_is_seeded_and_keeps_file_order(tmp_path):
    prompts = [f"{SKY} ({n})" for n in range(20)]
    ids = [[r["prompt_id"] for r in run_sft(tmp_path, prompts, max_prompts=5, seed=s)[1]] for s in (1, 1, 2)]
    assert ids[0] == ids[1] != ids[2]
    assert len(ids[0]) == 5 and ids[0] == sorted(ids[0], key=lambda i: int(i[1:]))


def test_sampling_seed_must_come_from_the_top_level_seed():
    with pytest.raises(MolabError, match="top-level 'seed'"):
        load_config(SFTDataConfig, None, ["prompts=x.jsonl", "sampling.seed=4"])


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read"),
        ("this is not json\n", "line 1: not valid JSON"),
        ("", "holds no prompts"),
        (
            '{"id": "a", "prompt": "hi", "split": "eval"}\n',
            "field 'split': eval prompts are never trained on",
        ),
        ('{"id": "a", "prompt": "hi"}\n{"id": "a", "prompt": "ho"}\n', "prompt 2: field 'id': duplicate"),
        ('{"prompt": "hi"}\n', "prompt 1: field 'id'"),
    ],
)
@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_bad_prompt_files_name_the_file_and_write_nothing(tmp_path, content, message, stage):
    path = tmp_path / "train_prompts.jsonl"
    if content is not None:
        path.write_text(content)
    out = tmp_path / "out"
    out.mkdir()
    backend = FixedBackend(PLAIN)
    with pytest.raises(MolabError, match=message) as e:
        if stage == "sft":
            sft_data_stage(SFTDataConfig(prompts=path), out, backend)
        else:
            dpo_data_stage(DPODataConfig(prompts=path), out, backend)
    assert str(path) in str(e.value)
    assert list(out.iterdir()) == [] and backend.prompts == []


def test_a_file_of_only_test_bias_prompts_is_an_error(tmp_path):
    path = write_prompts(tmp_path / "train_prompts.jsonl", [FRANCE])
    with pytest.raises(MolabError, match="every prompt makes a test bias applicable"):
        sft_data_stage(SFTDataConfig(prompts=path), tmp_path, FixedBackend(PLAIN))


# ---------------------------------------------------------------- command line


def run_cli(args, monkeypatch, capsys):
    from molab.cli import main

    monkeypatch.setattr(sys, "argv", ["molab", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.mark.parametrize("kind, output", [("sft", SFT_FILE), ("dpo", DPO_FILE)])
def test_cli_writes_a_stage_directory_and_skips_it_when_up_to_date(
    kind, output, tmp_path, tiny_model_dir, monkeypatch, capsys
):
    prompts = write_prompts(tmp_path / "train_prompts.jsonl", [SOUP, SKY])
    out = tmp_path / "run" / f"{kind}_data"
    args = ["data", kind, "--prompts", prompts, "--model", tiny_model_dir, "--out", out]
    args += ["--set", "sampling.max_new_tokens=4", "--set", "seed=1"]
    code, stdout, _ = run_cli(args, monkeypatch, capsys)
    assert code == 0 and f"{kind} set: done" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["metrics"]["prompts"] == 2
    assert {o["path"] for o in manifest["outputs"]} == {output, STATS_FILE}
    assert manifest["config"]["model"]["name"] == str(tiny_model_dir)
    code, stdout, _ = run_cli(args, monkeypatch, capsys)
    assert code == 0 and "up to date, skipped" in stdout


def test_cli_reads_the_runs_prompts_stage_by_default(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r" / "sft_data"
    code, _, stderr = run_cli(["data", "sft", "--out", out], monkeypatch, capsys)
    default = tmp_path / "r" / "prompts" / "train_prompts.jsonl"
    assert code == 1 and str(default) in stderr and stderr.count("\n") == 1
    assert not out.exists()


def test_unfinished_answers_are_cut_after_their_last_full_sentence(tmp_path):
    long = "Soup is easy to make at home. " * 9 + "Start by chopping the onions and then"
    answers = [(long, "length"), ("Too short. And then", "length")]
    metrics, rows, stats = run_sft(tmp_path, [SOUP, SKY], FakeBackend(lambda p, i: answers[i]))
    assert [r["prompt_id"] for r in rows] == ["p0"]
    kept = rows[0]["messages"][1]["content"]
    assert "chopping" not in kept and kept.rstrip().endswith(".")
    assert stats["cut_at_sentence"] == 1 and stats["dropped_incomplete"] == 1


def test_cutting_can_be_switched_off(tmp_path):
    from molab.data.chats import ChatDataConfig, finished_text

    long = "Soup is easy to make at home. " * 9 + "Start by"
    config = ChatDataConfig(prompts=tmp_path / "p.jsonl", cut_unfinished=False)
    assert finished_text(long, "length", config) == (None, False)
    assert finished_text("Done.", "stop", config) == ("Done.", False)
