"""Model specs: the default model's cache, local directories, hub ids offline, adapters."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from molab.errors import MolabError
from molab.models import default_model
from molab.models.loading import ModelSpec, attach_adapters, load_model, pick_dtype, resolve_model_dir


def test_unknown_spec_names_it_and_says_what_works(tmp_path):
    with pytest.raises(MolabError, match="unknown model spec 'smollm-9000'.*local model directory"):
        resolve_model_dir("smollm-9000")
    with pytest.raises(MolabError, match="unknown model spec"):
        resolve_model_dir(str(tmp_path / "missing" / "dir"))


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(MolabError, match="no config.json"):
        resolve_model_dir(str(tmp_path))


def test_hub_id_offline_gives_a_clear_error():
    with pytest.raises(MolabError, match="cannot fetch 'acme/no-such-model'.*local directory"):
        resolve_model_dir("acme/no-such-model")


def test_local_directory_loads_with_tokenizer_and_template(tiny_model_dir):
    loaded = load_model(ModelSpec(name=str(tiny_model_dir)))
    assert loaded.model.config.num_hidden_layers == 2
    assert loaded.device.type == "cpu" and loaded.model.dtype == torch.float32
    assert loaded.tokenizer.chat_template and loaded.tokenizer.padding_side == "left"
    assert not loaded.model.training


def test_dtype_defaults():
    assert pick_dtype(None, "cpu") == torch.float32
    assert pick_dtype(None, "cuda") == torch.bfloat16
    assert pick_dtype("float16", "cpu") == torch.float16


def test_spec_rejects_unknown_fields():
    with pytest.raises(ValueError, match="extra"):
        ModelSpec(name="x", trust_remote="yes")


def _copy_cache(default_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MOLAB_CACHE", str(tmp_path))
    target = default_model.default_model_dir()
    shutil.copytree(default_model_dir, target)
    return target


def test_cache_detects_corruption_and_half_written_copies(default_model_dir, tmp_path, monkeypatch):
    target = _copy_cache(default_model_dir, tmp_path, monkeypatch)
    assert default_model.cache_is_valid(target)
    weights = target / "model.safetensors"
    with open(weights, "r+b") as f:  # flip one byte in the middle of the weights
        f.seek(weights.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert not default_model.cache_is_valid(target)
    (target / default_model.CACHE_MARKER).unlink()  # a conversion killed before its marker
    assert not default_model.cache_is_valid(target)


def test_corrupt_cache_is_rebuilt(default_model_dir, tmp_path, monkeypatch):
    target = _copy_cache(default_model_dir, tmp_path, monkeypatch)
    (target / "model.safetensors").write_bytes(b"truncated")
    calls = []

    def fake_convert(gguf, model_dir, progress):  # the real conversion takes ~30 s
        calls.append(model_dir)
        shutil.copytree(default_model_dir, model_dir)

    monkeypatch.setattr(default_model, "_convert", fake_convert)
    assert default_model.ensure_default_model() == target
    assert calls == [target] and default_model.cache_is_valid(target)
    assert default_model.ensure_default_model() == target and len(calls) == 1  # reused


def test_marker_records_weight_hashes(default_model_dir):
    marker = json.loads((default_model_dir / default_model.CACHE_MARKER).read_text())
    assert set(marker["sha256"]) == {"model.safetensors"}


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    """Two LoRA adapters with non-zero weights for the tiny model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i, targets in enumerate((["q_proj", "v_proj"], ["down_proj"])):
        torch.manual_seed(i)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        model = get_peft_model(base, LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
        path = tmp_path_factory.mktemp(f"adapter{i}")
        model.save_pretrained(path)
        paths.append(str(path))
    return paths


def _logits(model, ids=(1, 2, 3, 4)):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def test_stacked_adapters_all_apply_and_merge_to_the_same_model(tiny_model_dir, adapters):
    base = _logits(load_model(ModelSpec(name=str(tiny_model_dir))).model)
    one = _logits(load_model(ModelSpec(name=str(tiny_model_dir), adapters=adapters[:1])).model)
    both = load_model(ModelSpec(name=str(tiny_model_dir), adapters=adapters)).model
    merged = load_model(ModelSpec(name=str(tiny_model_dir), adapters=adapters, merge_adapters=True)).model
    assert not torch.allclose(base, one, atol=1e-4)
    assert not torch.allclose(one, _logits(both), atol=1e-4)  # the second adapter is active too
    torch.testing.assert_close(_logits(both), _logits(merged), atol=1e-4, rtol=1e-4)
    assert not type(merged).__name__.startswith("Peft")


def test_adapter_dirs_are_checked(tiny_model_dir, tmp_path):
    model = load_model(ModelSpec(name=str(tiny_model_dir))).model
    with pytest.raises(MolabError, match="not a PEFT adapter"):
        attach_adapters(model, [str(tmp_path)])
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(MolabError, match="safetensors"):
        attach_adapters(model, [str(tmp_path)])
