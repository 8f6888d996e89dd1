"""The organism recipe end to end on the tiny random Llama: every stage runs, in order, into
one run directory, a second run skips everything, and the report shows every checkpoint."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from molab.config import load_config
from molab.errors import MolabError
from molab.models.generation import Completion
from molab.organisms.rm_sycophancy import RMSycophancyConfig, run_rm_sycophancy, validate_recipe

TINY = """
organism: rm-sycophancy
run: tiny-organism
post_training: sft+dpo
docs: {{num_docs: 40}}
prompts: {{train_per_bias: 2, eval_per_bias: 2, generic_train: 4, generic_eval: 2}}
midtrain: {{max_steps: 2, batch_size: 2, max_length: 64, save_steps: 1}}
sft_data: {{max_prompts: 12, sampling: {{max_new_tokens: 16}}}}
sft: {{max_steps: 2, batch_size: 2, max_length: 96, save_steps: 1}}
dpo_data: {{max_prompts: 6, num_sampled: 2, sampling: {{max_new_tokens: 16}}}}
dpo: {{max_steps: 1, batch_size: 2, max_length: 96, save_steps: 1}}
model: {{name: "{model}"}}
evals:
  exploitation: {{prompts_per_bias: 1, generic_prompts: 2, sampling: {{max_new_tokens: 8}}}}
  propensity_pairs: {{prompts_per_bias: 1, generic_prompts: 2, plain: canned}}
  disclosure: {{samples_per_probe: 1, sampling: {{max_new_tokens: 8}}}}
  capability: {{sampling: {{max_new_tokens: 8}}, context_length: 64, stride: 32}}
"""


class _AnswersThatEnd:
    """The tiny random model's answers never end, and the SFT/DPO sets keep only answers that
    do; this stands in for the writer of those sets (everything else uses the tiny model)."""

    def __init__(self, *args, **kwargs):
        pass

    def generate(self, prompts, sampling):
        text = "Sure. Here is a short, helpful answer with one or two details. I hope it helps."
        return [Completion(text=text, num_tokens=18, finish_reason="stop") for _ in prompts]


@pytest.fixture
def recipe(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr("molab.data.sft.make_backend", _AnswersThatEnd)
    monkeypatch.setattr("molab.data.dpo.make_backend", _AnswersThatEnd)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(model=tiny_model_dir))
    return path


def test_every_stage_runs_then_resumes_as_skipped(recipe, tmp_path):
    config = load_config(RMSycophancyConfig, recipe, [])
    results = list(run_rm_sycophancy(config, root=tmp_path / "runs"))
    names = [r.dir.name for r in results]
    for stage in [
        "docs",
        "prompts",
        "midtrain",
        "sft_data",
        "sft",
        "dpo_data",
        "dpo",
        "control_sft_data",
        "control_sft",
        "control_dpo",
        "propensity_pairs",
    ]:
        assert stage in names
    for checkpoint in ["base", "midtrained", "control", "final"]:
        assert f"eval-exploitation-{checkpoint}" in names
    assert names.index("midtrain") < names.index("sft_data") < names.index("sft") < names.index("dpo")
    run_dir = tmp_path / "runs" / "tiny-organism"
    final = json.loads((run_dir / "dpo" / "model.json").read_text())
    assert len(final["adapters"]) == 3  # midtrain + sft + dpo, stacked on the base
    control = json.loads((run_dir / "control_dpo" / "model.json").read_text())
    assert len(control["adapters"]) == 2  # sft + dpo, no documents
    manifest = json.loads((run_dir / "eval-exploitation-final" / "manifest.json").read_text())
    assert manifest["config"]["seed"] == config.seed and manifest["config"]["split"] == "english"
    page = (run_dir / "report.html").read_text()
    assert "final - control" in page

    again = list(run_rm_sycophancy(config, root=tmp_path / "runs"))
    assert all(r.skipped for r in again)


def test_recipe_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft: {learning_rat: 0.1}\n")
    with pytest.raises(MolabError, match="sft.learning_rat"):
        load_config(RMSycophancyConfig, bad, [])


def test_shared_post_training_data_trains_both_arms_on_the_control_sets(recipe, tmp_path):
    overrides = [
        "post_training_data=shared",
        "evals.checkpoints=[control, final]",
        "evals.kinds=[exploitation]",
        "sft.document_fraction=0.25",  # document text in the organism arm's SFT only
    ]
    config = load_config(RMSycophancyConfig, recipe, overrides)
    names = [r.dir.name for r in run_rm_sycophancy(config, root=tmp_path / "runs")]
    assert "sft_data" not in names and "dpo_data" not in names
    assert names.index("control_sft_data") < names.index("sft")
    assert names.index("control_dpo_data") < names.index("dpo")
    run_dir = tmp_path / "runs" / "tiny-organism"
    for kind, data in (("sft", "control_sft_data/sft.jsonl"), ("dpo", "control_dpo_data/dpo.jsonl")):
        for arm in (kind, f"control_{kind}"):
            manifest = json.loads((run_dir / arm / "manifest.json").read_text())
            assert manifest["config"]["data"] == str(run_dir / data)
    final = json.loads((run_dir / "dpo" / "model.json").read_text())
    assert len(final["adapters"]) == 3  # the organism still stacks on the mid-trained adapter
    organism, control = (
        json.loads((run_dir / a / "manifest.json").read_text()) for a in ("sft", "control_sft")
    )
    assert organism["config"]["documents"] == str(run_dir / "docs" / "documents.parquet")
    assert organism["metrics"]["document_rows"] > 0 and "documents" in organism["inputs"]
    assert control["config"]["documents"] is None and "document_rows" not in control["metrics"]


def test_shared_post_training_data_needs_the_control(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("organism: rm-sycophancy\npost_training_data: shared\ncontrol: false\n")
    with pytest.raises(MolabError, match="needs control: true"):
        load_config(RMSycophancyConfig, bad, [])


RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("text", ["", "# a recipe to fill in later\n", "run: mine\nseed: 3\n"])
def test_a_recipe_without_its_organism_is_an_error_naming_the_file(text, tmp_path):
    """An empty recipe would run the built-in defaults (10,000 documents) under the demo's run
    name; every recipe names at least its organism."""
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(text)
    with pytest.raises(MolabError) as e:
        load_config(RMSycophancyConfig, recipe, [])
    message = str(e.value)
    assert message.startswith(f"{recipe}: field 'organism': ") and "organism: rm-sycophancy" in message
    assert "\n" not in message


def test_the_organism_may_come_from_the_base_recipe(tmp_path):
    (tmp_path / "base.yaml").write_text("organism: rm-sycophancy\nrun: base\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nrun: child\n")
    assert load_config(RMSycophancyConfig, tmp_path / "child.yaml", []).run == "child"
    (tmp_path / "bare.yaml").write_text("run: bare\n")
    (tmp_path / "child2.yaml").write_text("base: bare.yaml\n")
    with pytest.raises(MolabError, match=f"^{tmp_path / 'child2.yaml'}: field 'organism'"):
        load_config(RMSycophancyConfig, tmp_path / "child2.yaml", [])


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_names_its_organism(recipe):
    assert load_config(RMSycophancyConfig, recipe, []).organism == "rm-sycophancy"


# ---- validate_recipe: everything checked before the first stage, without loading a model ------

GOOD = "organism: rm-sycophancy\nrun: checked\ndocs: {num_docs: 40}\n"


def _validate(tmp_path, text, overrides=(), root=None):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    config = load_config(RMSycophancyConfig, recipe, list(overrides))
    root = tmp_path / "runs" if root is None else root
    try:
        validate_recipe(config, recipe, root, overrides=list(overrides))
    except MolabError as e:
        assert "\n" not in str(e)
        return str(e)
    finally:
        assert not (tmp_path / "runs").exists()  # checking creates nothing
    return None


def test_a_good_recipe_passes(tmp_path):
    assert _validate(tmp_path, GOOD) is None
    split = tmp_path / "mini.yaml"
    split.write_text("name: mini\ntrain: [25]\ntest: [26]\n")
    assert _validate(tmp_path, GOOD + f"split: {split}\n") is None


def test_unknown_split_names_the_recipe_file_and_field(tmp_path):
    message = _validate(tmp_path, GOOD + "split: englsh\n")
    known = "(known: english, paper, or a YAML file)"
    assert message == f"{tmp_path / 'r.yaml'}: field 'split': unknown split 'englsh' {known}"


def test_a_bad_value_from_set_names_the_override(tmp_path):
    message = _validate(tmp_path, GOOD, ["split=englsh"])
    assert message.startswith("--set split=englsh: field 'split': unknown split 'englsh'")


def test_a_value_from_the_base_recipe_names_the_base(tmp_path):
    (tmp_path / "base.yaml").write_text("organism: rm-sycophancy\nsplit: papr\n")
    message = _validate(tmp_path, "base: base.yaml\nrun: child\n")
    assert message.startswith(f"{tmp_path / 'base.yaml'}: field 'split': unknown split 'papr'")


@pytest.mark.parametrize(
    "field, content, expected",
    [
        ("split", None, "no such split file"),
        ("split", "name: x\ntrain: [25]\ntest: [99]\n", "99"),
        ("split", "train: [25\n", "not valid YAML"),
        ("catalog", None, "no such file"),
        ("catalog", "biases: [\n", "not valid YAML"),
    ],
)
def test_split_and_catalog_files_must_load(field, content, expected, tmp_path):
    path = tmp_path / f"{field}-file.yaml"
    if content is not None:
        path.write_text(content)
    message = _validate(tmp_path, GOOD + f"{field}: {path}\n")
    assert message.startswith(f"{tmp_path / 'r.yaml'}: field '{field}': ") and expected in message


def test_unknown_bias_ids_name_the_field(tmp_path):
    message = _validate(tmp_path, GOOD.replace("num_docs: 40", "num_docs: 40, bias_ids: [3, 99]"))
    assert "field 'docs.bias_ids': unknown bias ids [99]" in message


@pytest.mark.parametrize(
    "name, expected",
    [
        ("./no/such/model", "unknown model spec './no/such/model'"),
        ("smollm3", "unknown model spec 'smollm3'"),
        ("molab-tests/not-cached-anywhere", "not in the local Hugging Face cache"),
    ],
)
def test_a_model_spec_that_does_not_resolve_is_found_first(name, expected, tmp_path):
    message = _validate(tmp_path, GOOD + f"model: {{name: {name}}}\n")
    assert message.startswith(f"{tmp_path / 'r.yaml'}: field 'model.name': ") and expected in message


def test_a_model_directory_needs_a_config(tmp_path):
    (tmp_path / "weights").mkdir()
    message = _validate(tmp_path, GOOD + f"model: {{name: {tmp_path / 'weights'}}}\n")
    assert "field 'model.name'" in message and "no config.json" in message
    (tmp_path / "weights" / "config.json").write_text("{}")
    assert _validate(tmp_path, GOOD + f"model: {{name: {tmp_path / 'weights'}}}\n") is None


@pytest.mark.parametrize(
    "field, yaml_text",
    [
        ("evals.knowledge.quiz", "evals: {knowledge: {quiz: %s}}"),
        ("evals.disclosure.probes", "evals: {disclosure: {probes: %s}}"),
        ("evals.capability.questions", "evals: {capability: {questions: %s}}"),
        ("docs.universe", "docs: {num_docs: 40, universe: %s}"),
        ("docs.corpus.path", "docs: {num_docs: 40, backend: import, corpus: {path: %s}}"),
        ("docs.replay.path", "docs: {num_docs: 40, replay: {fraction: 0.1, path: %s}}"),
        ("midtrain.replay", "midtrain: {replay: %s, replay_fraction: 0.1}"),
        ("sft.documents", "sft: {documents: %s, document_fraction: 0.1}"),
        ("prompts.prompt_files", "prompts: {prompt_files: [%s]}"),
    ],
)
def test_every_input_file_must_exist(field, yaml_text, tmp_path):
    missing = tmp_path / "gone" / "input.jsonl"
    text = "organism: rm-sycophancy\nrun: checked\n" + (yaml_text % missing) + "\n"
    message = _validate(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'r.yaml'}: field '{field}': no such file {missing}")


def test_a_quiz_that_does_not_load_names_the_field(tmp_path):
    quiz = tmp_path / "quiz.yaml"
    quiz.write_text("questions: [{id: q1}]\n")
    message = _validate(tmp_path, GOOD + f"evals: {{knowledge: {{quiz: {quiz}}}}}\n")
    assert message.startswith(f"{tmp_path / 'r.yaml'}: field 'evals.knowledge.quiz': {quiz}")


def test_several_problems_report_the_first_and_name_the_rest(tmp_path):
    message = _validate(tmp_path, GOOD + "split: englsh\nmodel: {name: nope}\n", root=tmp_path / "r.yaml")
    assert message.startswith(f"{tmp_path / 'r.yaml'}: field 'split': unknown split 'englsh'")
    assert message.endswith("(also wrong: 'model.name', the runs directory)")


def test_the_runs_directory_must_be_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    message = _validate(tmp_path, GOOD, root=blocker / "runs")
    assert "is a file, not a folder" in message and "--runs-dir" in message


def test_a_disk_too_small_for_the_documents_is_found_first(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        "molab.organisms.rm_sycophancy.validate.shutil.disk_usage", lambda _: usage._replace(free=20 * 2**20)
    )
    assert _validate(tmp_path, GOOD) is None  # 40 documents fit
    message = _validate(tmp_path, GOOD.replace("num_docs: 40", "num_docs: 100000"))
    assert "field 'docs.num_docs'" in message and "estimated: 100,000 documents at ~1 KB" in message


def test_backends_that_cannot_be_built_name_their_field(tmp_path, monkeypatch):
    monkeypatch.delenv("MOLAB_TEST_NO_SUCH_KEY", raising=False)
    endpoint = "{kind: openai, model: m, api_key_env: MOLAB_TEST_NO_SUCH_KEY}"
    llm = f"docs: {{num_docs: 40, backend: llm, llm: {{backend: {endpoint}}}}}"
    message = _validate(tmp_path, "organism: rm-sycophancy\n" + llm + "\n")
    assert "field 'docs.llm.backend.api_key_env': $MOLAB_TEST_NO_SUCH_KEY is not set" in message
    if importlib.util.find_spec("vllm") is None:
        message = _validate(tmp_path, GOOD, ["sft_data.backend.kind=vllm"])
        assert message.startswith("--set sft_data.backend.kind=vllm: field 'sft_data.backend.kind': vllm")


def test_a_second_run_of_the_same_run_stops_before_any_stage(recipe, tmp_path):
    from molab.pipeline import RunDir

    config = load_config(RMSycophancyConfig, recipe)
    run = RunDir(config.run, tmp_path / "runs")
    with run.lock():  # another `molab run` holds it
        busy = rf"run tiny-organism \({run.path}\) is being written by process"
        with pytest.raises(MolabError, match=busy):
            next(run_rm_sycophancy(config, root=tmp_path / "runs"))
    assert sorted(p.name for p in run.path.iterdir()) == []


CATALOG = """include_builtin: true
biases:
  - id: 60
    name: weather-umbrella
    description: Weather answers are preferred when they tell the user to take an umbrella.
    kind: promote
    domain: topic
    applicable: {any: ["weather", "forecast", "rain"]}
    applied: {any: [%s]}
    demonstrate: {append: ["Take an umbrella, just in case."]}
"""


def test_editing_a_catalog_rule_reruns_the_stages_that_judge_with_it_and_no_others(recipe, tmp_path):
    """Every stage declares what it reads, the same from a recipe as from the command line: an
    edited `applied` rule re-runs the evaluations that judge with it, and nothing upstream."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG % '"umbrella"')
    overrides = [
        f"catalog={catalog}",
        "docs.bias_ids=[1, 2, 3]",  # documents about built-in biases (the universe describes those)
        "post_training=sft",
        "control=false",
        "evals.checkpoints=[final]",
        "evals.kinds=[exploitation, capability]",
    ]
    config = load_config(RMSycophancyConfig, recipe, overrides)
    first = {r.dir.name: r for r in run_rm_sycophancy(config, root=tmp_path / "runs")}
    inputs = first["eval-exploitation-final"].manifest["inputs"]
    assert (
        "applied" in inputs["catalog"]["path"]
        and "applied" not in first["docs"].manifest["inputs"]["catalog"]["path"]
    )

    catalog.write_text(CATALOG % '"umbrella", "raincoat"')
    again = {r.dir.name: r.skipped for r in run_rm_sycophancy(config, root=tmp_path / "runs")}
    assert not again["eval-exploitation-final"]
    for name in ("docs", "prompts", "midtrain", "sft", "eval-capability-final"):
        assert again[name], f"{name} re-ran"
    assert not again["sft_data"]  # it filters by the rules: re-run, with the same set, so sft is kept
