"""YAML recipes: defaults < recipe (and its bases) < --set overrides, and one-line errors."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from molab.config import dump_config, load_config, recipe_origins
from molab.errors import MolabError
from molab.models.generation import BackendConfig, HFBackendConfig


class Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(1.0, ge=0.0)
    stop: list[str] = Field(default_factory=list)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "default"
    steps: int = 10
    verbose: bool = False
    tags: list[str] = Field(default_factory=list)
    sampling: Sampling = Field(default_factory=Sampling)
    backend: BackendConfig = Field(default_factory=HFBackendConfig)


class Required(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    sampling: Sampling = Field(default_factory=Sampling)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_file():
    assert load_config(Recipe, None) == Recipe()


def test_recipe_over_defaults(tmp_path):
    f = write(tmp_path / "r.yaml", "name: run1\nsampling:\n  stop: ['###']\ntags: [a, b]\nverbose: true\n")
    cfg = load_config(Recipe, f)
    assert cfg.name == "run1" and cfg.verbose is True and cfg.tags == ["a", "b"]
    assert cfg.sampling == Sampling(temperature=1.0, stop=["###"])
    assert cfg.steps == 10
    assert load_config(Recipe, str(f)) == cfg


def test_empty_recipe_is_defaults(tmp_path):
    assert load_config(Recipe, write(tmp_path / "r.yaml", "# nothing yet\n")) == Recipe()


def test_overrides_win_and_parse_yaml_values(tmp_path):
    f = write(tmp_path / "r.yaml", "steps: 3\nsampling:\n  temperature: 0.5\n")
    cfg = load_config(
        Recipe,
        f,
        [
            "sampling.temperature=0",
            "verbose=true",
            "tags=[x, y]",
            "name=a=b",
            "backend.kind=vllm",
            "backend.max_lora_rank=64",
        ],
    )
    assert cfg.steps == 3
    assert cfg.sampling.temperature == 0.0
    assert cfg.verbose is True and cfg.tags == ["x", "y"] and cfg.name == "a=b"
    assert cfg.backend.kind == "vllm" and cfg.backend.max_lora_rank == 64
    assert load_config(Recipe, None, ["steps=7"]).steps == 7


def test_base_recipe_deep_merges(tmp_path):
    write(
        tmp_path / "common" / "base.yaml",
        "name: base\nsteps: 5\ntags: [a, b]\nsampling:\n  temperature: 0.3\n  stop: [x]\n",
    )
    write(tmp_path / "common" / "mid.yaml", "base: base.yaml\nverbose: true\nsampling:\n  stop: [y]\n")
    f = write(tmp_path / "exp" / "r.yaml", "base: ../common/mid.yaml\nname: exp\ntags: [c]\n")
    cfg = load_config(Recipe, f, ["steps=9"])
    assert cfg.name == "exp" and cfg.verbose is True and cfg.steps == 9
    assert cfg.tags == ["c"]  # lists are replaced, not appended
    assert cfg.sampling == Sampling(temperature=0.3, stop=["y"])


def test_dump_round_trips(tmp_path):
    cfg = load_config(Recipe, None, ["sampling.stop=[a]", "verbose=true", "backend.kind=vllm"])
    text = dump_config(cfg)
    assert "verbose: true" in text and "kind: vllm" in text
    assert load_config(Recipe, write(tmp_path / "dump.yaml", text)) == cfg


# --- errors ------------------------------------------------------------------------------


def error(*args) -> str:
    with pytest.raises(MolabError) as e:
        load_config(*args)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_invalid_value_names_file_and_field(tmp_path):
    f = write(tmp_path / "x.yaml", "sampling:\n  temperature: -1\n")
    assert error(Recipe, f) == (
        f"{f}: field 'sampling.temperature': Input should be greater than or equal to 0"
    )


def test_wrong_type_in_list(tmp_path):
    f = write(tmp_path / "x.yaml", "tags: [a, [b]]\n")
    msg = error(Recipe, f)
    assert msg.startswith(f"{f}: field 'tags.1': ") and "string" in msg


def test_unknown_key_is_an_error(tmp_path):
    f = write(tmp_path / "x.yaml", "sampling:\n  temprature: 0.5\n")
    assert error(Recipe, f) == f"{f}: field 'sampling.temprature': unknown field"
    f = write(tmp_path / "y.yaml", "stpes: 3\n")
    assert error(Recipe, f) == f"{f}: field 'stpes': unknown field"


def test_error_inside_tagged_union_names_the_input_path(tmp_path):
    f = write(tmp_path / "x.yaml", "backend:\n  kind: vllm\n  max_lora_rank: 0\n")
    assert error(Recipe, f).startswith(f"{f}: field 'backend.max_lora_rank': Input should be greater")
    f = write(tmp_path / "y.yaml", "backend:\n  kind: tpu\n")
    assert error(Recipe, f).startswith(f"{f}: field 'backend': ")


def test_missing_required_field(tmp_path):
    f = write(tmp_path / "x.yaml", "sampling:\n  temperature: 0\n")
    assert error(Required, f) == f"{f}: field 'model': Field required"
    assert error(Required, None) == "config: field 'model': Field required"


def test_several_problems_are_counted(tmp_path):
    f = write(tmp_path / "x.yaml", "steps: many\nverbose: maybe\nname: [1]\n")
    msg = error(Recipe, f)
    assert msg.startswith(f"{f}: field 'name': ") and msg.endswith("(and 2 more problems)")


def test_bad_value_from_base_names_the_base_file(tmp_path):
    base = write(tmp_path / "base.yaml", "sampling:\n  temperature: -2\n")
    f = write(tmp_path / "x.yaml", "base: base.yaml\nname: x\n")
    assert error(Recipe, f).startswith(f"{base}: field 'sampling.temperature': ")


def test_bad_override_names_the_override(tmp_path):
    f = write(tmp_path / "x.yaml", "name: x\n")
    msg = error(Recipe, f, ["sampling.temperature=-1"])
    assert msg.startswith("--set sampling.temperature=-1: field 'sampling.temperature': ")
    assert error(Recipe, f, ["steps=ten"]).startswith("--set steps=ten: field 'steps': ")
    assert error(Recipe, f, ["nope.deep=1"]) == "--set nope.deep=1: field 'nope': unknown field"
    f = write(tmp_path / "y.yaml", "sampling:\n  temperature: 0.5\n")
    msg = error(Recipe, f, ["sampling={temperature: -1}"])
    assert msg.startswith("--set sampling={temperature: -1}: field 'sampling.temperature': ")


def test_recipe_value_over_a_base_mapping_is_the_recipes(tmp_path):
    write(tmp_path / "base.yaml", "sampling:\n  temperature: 0.5\n")
    f = write(tmp_path / "x.yaml", "base: base.yaml\nsampling: 3\n")
    assert error(Recipe, f).startswith(f"{f}: field 'sampling': ")


def test_override_without_equals(tmp_path):
    msg = error(Recipe, None, ["sampling.temperature"])
    assert "--set sampling.temperature" in msg and "FIELD=VALUE" in msg
    assert "FIELD=VALUE" in error(Recipe, None, ["=3"])
    assert "FIELD=VALUE" in error(Recipe, None, ["a..b=3"])


def test_override_through_a_scalar(tmp_path):
    msg = error(Recipe, None, ["steps=3", "steps.x=1"])
    assert msg == "--set steps.x=1: field 'steps' is not a mapping"


def test_override_value_not_yaml():
    assert "not valid YAML" in error(Recipe, None, ["tags=[a, b"])


def test_malformed_yaml_names_file_and_line(tmp_path):
    f = write(tmp_path / "x.yaml", "name: ok\nsampling:\n  temperature: [0.5\nsteps: 3\n")
    msg = error(Recipe, f)
    assert msg.startswith(f"{f}, line ") and "not valid YAML" in msg
    f = write(tmp_path / "tab.yaml", "name: ok\n\tsteps: 3\n")
    assert error(Recipe, f).startswith(f"{f}, line 2")


def test_top_level_must_be_a_mapping(tmp_path):
    f = write(tmp_path / "x.yaml", "- a\n- b\n")
    assert error(Recipe, f) == f"{f}: expected a mapping of fields at the top, got list"


def test_missing_file(tmp_path):
    f = tmp_path / "nope.yaml"
    assert error(Recipe, f) == f"{f}: no such config file"


def test_missing_base(tmp_path):
    f = write(tmp_path / "x.yaml", "base: gone.yaml\n")
    assert error(Recipe, f) == f"{tmp_path / 'gone.yaml'}: no such config file"


def test_base_cycle(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    f = write(tmp_path / "b.yaml", "base: a.yaml\n")
    assert "makes a cycle" in error(Recipe, f)


def test_base_must_be_a_path(tmp_path):
    f = write(tmp_path / "x.yaml", "base: [a.yaml]\n")
    assert error(Recipe, f).startswith(f"{f}: field 'base': ")


class Kinded(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["a", "b"]
    steps: int = 1


def test_missing_field_of_fixed_values_says_how_to_write_it(tmp_path):
    f = write(tmp_path / "k.yaml", "# empty\n")
    assert error(Kinded, f) == f"{f}: field 'kind': Field required (add `kind: a or b`)"


def test_a_wrong_value_comes_before_a_missing_field(tmp_path):
    f = write(tmp_path / "k.yaml", "steps: many\n")
    msg = error(Kinded, f)
    assert msg.startswith(f"{f}: field 'steps': ") and msg.endswith("(and 1 more problem)")


def test_recipe_origins_name_the_file_the_base_or_the_override(tmp_path):
    write(tmp_path / "base.yaml", "steps: 3\nsampling: {temperature: 0.5}\n")
    f = write(tmp_path / "r.yaml", "base: base.yaml\nname: mine\n")
    origins = recipe_origins(f, ["sampling.temperature=0.2"])
    assert origins.of("name") == str(f)
    assert origins.of("steps") == str(tmp_path / "base.yaml")
    assert origins.of("sampling.temperature") == "--set sampling.temperature=0.2"
    assert origins.of("sampling") == "--set sampling.temperature=0.2"
    assert origins.of("tags") == str(f)  # a default: named by the recipe itself
