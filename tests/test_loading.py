"""Model specs: the default model's cache, local directories, hub ids offline, adapters."""

from __future__ import annotations

import errno
import json
import shutil
import sys

import pytest
import torch
from conftest import tiny_llama
from safetensors import SafetensorError

from molab.errors import MolabError
from molab.models import default_model
from molab.models.loading import (
    AdapterMismatchError,
    ModelSpec,
    adapter_base_name,
    attach_adapters,
    load_model,
    pick_dtype,
    resolve_model_dir,
)


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


def _copy_cache(source, tmp_path, monkeypatch):
    monkeypatch.setenv("MOLAB_CACHE", str(tmp_path))
    target = default_model.default_model_dir()
    shutil.copytree(source, target)
    return target


def test_cache_detects_corruption_and_half_written_copies(tiny_cache, tmp_path, monkeypatch):
    target = _copy_cache(tiny_cache, tmp_path, monkeypatch)
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


def test_corrupt_cache_is_rebuilt(tiny_cache, tmp_path, monkeypatch):
    target = _copy_cache(tiny_cache, tmp_path, monkeypatch)
    (target / "model.safetensors").write_bytes(b"truncated")
    calls = []

    def fake_convert(gguf, model_dir, progress):  # the real conversion takes ~30 s
        calls.append(model_dir)
        shutil.copytree(tiny_cache, model_dir)

    monkeypatch.setattr(default_model, "_convert", fake_convert)
    assert default_model.ensure_default_model() == target
    assert calls == [target] and default_model.cache_is_valid(target)
    assert default_model.ensure_default_model() == target and len(calls) == 1  # reused


def test_marker_records_every_file(default_model_dir):
    marker = json.loads((default_model_dir / default_model.CACHE_MARKER).read_text())
    files = {p.name for p in default_model_dir.iterdir()} - {default_model.CACHE_MARKER}
    assert set(marker["sha256"]) == set(marker["sizes"]) == files
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= files


@pytest.fixture(scope="module")
def tiny_cache(tokenizer, tmp_path_factory):
    """A cache directory as a conversion writes it (marker included), of the tiny model: 16 MB
    to copy where the default model's is 540 MB."""
    path = tmp_path_factory.mktemp("tiny-cache") / default_model.DEFAULT_MODEL
    default_model.write_cache(tiny_llama(tokenizer), tokenizer, path)
    return path


def _fake_convert(source, calls):
    def fake_convert(gguf, model_dir, progress):  # the real conversion takes ~30 s
        calls.append(model_dir)
        shutil.copytree(source, model_dir)

    return fake_convert


def _molab_models(monkeypatch, capsys):
    from molab.cli import main

    monkeypatch.setattr(sys, "argv", ["molab", "models"])
    with pytest.raises(SystemExit):
        main()
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("damage", ["truncate tokenizer.json", "edit tokenizer_config.json", "add a file"])
def test_damaged_tokenizer_is_detected_reported_and_rebuilt(
    damage, tiny_cache, tmp_path, monkeypatch, capsys
):
    target = _copy_cache(tiny_cache, tmp_path, monkeypatch)
    assert default_model.cache_is_valid(target)
    if damage == "truncate tokenizer.json":
        (target / "tokenizer.json").write_bytes((target / "tokenizer.json").read_bytes()[:1000])
    elif damage == "edit tokenizer_config.json":
        config = json.loads((target / "tokenizer_config.json").read_text())
        config["eos_token"] = "<|endoftext|>"  # same size class, still valid JSON: only the hash tells
        (target / "tokenizer_config.json").write_text(json.dumps(config))
    else:
        (target / "special_tokens_map.json").write_text('{"eos_token": "<|endoftext|>"}')
    assert not default_model.cache_is_valid(target)
    assert "corrupt" in _molab_models(monkeypatch, capsys)
    calls = []
    monkeypatch.setattr(default_model, "_convert", _fake_convert(tiny_cache, calls))
    assert default_model.ensure_default_model() == target and calls == [target]
    assert default_model.cache_is_valid(target) and not (target / "special_tokens_map.json").exists()
    assert (target / "tokenizer.json").read_bytes() == (tiny_cache / "tokenizer.json").read_bytes()


def test_cache_of_an_older_format_is_rebuilt_once(tiny_cache, tmp_path, monkeypatch):
    target = _copy_cache(tiny_cache, tmp_path, monkeypatch)
    marker = target / default_model.CACHE_MARKER
    old = json.loads(marker.read_text())
    weights = {"model.safetensors": old["sha256"]["model.safetensors"]}
    sizes = {"model.safetensors": old["sizes"]["model.safetensors"]}
    marker.write_text(json.dumps({**old, "format": 1, "sha256": weights, "sizes": sizes}))
    calls = []
    monkeypatch.setattr(default_model, "_convert", _fake_convert(tiny_cache, calls))
    assert default_model.ensure_default_model() == target
    assert default_model.ensure_default_model() == target and calls == [target]


def _foreign_model_dir(target, tiny_model_dir):
    shutil.copytree(tiny_model_dir, target)  # a user's own model, no molab marker


def _foreign_file_in_cache(target, tiny_cache):
    shutil.copytree(tiny_cache, target)
    (target / "model.safetensors").write_bytes(b"damaged")
    (target / "notes.txt").write_text("my notes")


@pytest.mark.parametrize("kind", ["user model dir", "user file in cache", "a file", "a symlink"])
def test_invalid_cache_molab_did_not_write_is_not_deleted(
    kind, tiny_cache, tiny_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("MOLAB_CACHE", str(tmp_path / "cache"))
    target = default_model.default_model_dir()
    target.parent.mkdir(parents=True)
    if kind == "user model dir":
        _foreign_model_dir(target, tiny_model_dir)
    elif kind == "user file in cache":
        _foreign_file_in_cache(target, tiny_cache)
    elif kind == "a file":
        target.write_text("mine")
    else:
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "data.txt").write_text("mine")
        target.symlink_to(tmp_path / "elsewhere")
    before = sorted(p.name for p in target.iterdir()) if target.is_dir() else None
    calls = []
    monkeypatch.setattr(default_model, "_convert", _fake_convert(tiny_cache, calls))
    with pytest.raises(MolabError) as info:
        default_model.ensure_default_model()
    message = str(info.value)
    assert str(target) in message and "MOLAB_CACHE" in message and "\n" not in message
    assert calls == []
    assert (sorted(p.name for p in target.iterdir()) if target.is_dir() else None) == before
    if kind == "a file":
        assert target.read_text() == "mine"
    if kind == "a symlink":
        assert target.is_symlink() and (tmp_path / "elsewhere" / "data.txt").read_text() == "mine"


def test_half_removed_cache_is_still_recognised(tiny_cache, tmp_path, monkeypatch):
    """Removal deletes the marker last: a cache whose removal was cut short still goes."""
    target = _copy_cache(tiny_cache, tmp_path, monkeypatch)
    for name in ("model.safetensors", "tokenizer.json"):
        (target / name).unlink()
    calls = []
    monkeypatch.setattr(default_model, "_convert", _fake_convert(tiny_cache, calls))
    assert default_model.ensure_default_model() == target and calls == [target]


def test_concurrent_first_uses_convert_once(tiny_cache, tmp_path, monkeypatch):
    """E.g. the ranks of a multi-GPU launch: one converts, the others wait and reuse it."""
    import threading
    import time

    monkeypatch.setenv("MOLAB_CACHE", str(tmp_path))
    calls, results = [], []
    convert = _fake_convert(tiny_cache, calls)

    def slow_convert(gguf, model_dir, progress):
        time.sleep(0.3)
        convert(gguf, model_dir, progress)

    monkeypatch.setattr(default_model, "_convert", slow_convert)
    threads = [
        threading.Thread(target=lambda: results.append(default_model.ensure_default_model()))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [default_model.default_model_dir()] * 3 and len(calls) == 1


class _Tokenizer:
    """Stands in for the GGUF tokenizer: saves the real one, or fails with `error`."""

    def __init__(self, tokenizer, error=None):
        self.tokenizer, self.error = tokenizer, error

    def save_pretrained(self, path):
        if self.error is None:
            return self.tokenizer.save_pretrained(path)
        (path / "tokenizer.json").write_bytes(b"{half")
        raise self.error


DISK_FULL = {
    "OSError in the weights": ("weights", OSError(errno.ENOSPC, "No space left on device")),
    "safetensors writer": (
        "weights",
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ),
    "tokenizers writer": ("tokenizer", Exception("No space left on device (os error 28)")),
    "OSError in the tokenizer": ("tokenizer", OSError(errno.ENOSPC, "No space left on device")),
}


@pytest.mark.parametrize("case", sorted(DISK_FULL))
def test_full_disk_during_conversion_is_one_error_and_leaves_nothing(case, tokenizer, tmp_path, monkeypatch):
    import transformers.modeling_utils

    where, error = DISK_FULL[case]
    monkeypatch.setenv("MOLAB_CACHE", str(tmp_path))
    target = default_model.default_model_dir()
    model = tiny_llama(tokenizer)

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise error

    with monkeypatch.context() as m:
        fake_tok = _Tokenizer(tokenizer, error if where == "tokenizer" else None)
        m.setattr(default_model, "_load_gguf", lambda gguf, progress: (model, fake_tok))
        if where == "weights":
            m.setattr(transformers.modeling_utils, "safe_save_file", full_disk)
        with pytest.raises(MolabError) as info:
            default_model.ensure_default_model(progress=False)
    message = str(info.value)
    assert str(target) in message and "MOLAB_CACHE" in message and "free" in message
    assert "weights alone need about 13 MB" in message and "\n" not in message
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")] == []  # no temporary
    # With room again, the same conversion writes a cache that verifies, and clears what a
    # killed conversion left (a temporary of the same name pattern).
    killed = target.parent / f".{target.name}.k1ll3d.tmp"
    (killed / "out").mkdir(parents=True)
    monkeypatch.setattr(default_model, "_load_gguf", lambda gguf, progress: (model, _Tokenizer(tokenizer)))
    assert default_model.ensure_default_model(progress=False) == target
    assert default_model.cache_is_valid(target) and not killed.exists()


def test_other_errors_during_conversion_keep_their_type(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("MOLAB_CACHE", str(tmp_path))
    model = tiny_llama(tokenizer)
    bug = _Tokenizer(tokenizer, RuntimeError("a bug, not a full disk"))
    monkeypatch.setattr(default_model, "_load_gguf", lambda gguf, progress: (model, bug))
    with pytest.raises(RuntimeError, match="a bug"):
        default_model.ensure_default_model(progress=False)
    assert not default_model.default_model_dir().exists()


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


@pytest.mark.parametrize(
    "name, damage",
    [
        ("model.safetensors", "truncate"),
        ("model.safetensors", "empty"),
        ("model.safetensors", "garbage"),
        ("config.json", "truncate"),
        ("config.json", "list"),
        ("tokenizer.json", "truncate"),
        ("tokenizer.json", "list"),
        ("tokenizer_config.json", "truncate"),
        ("chat_template.jinja", "garbage"),
    ],
)
def test_damaged_file_in_a_model_dir_is_named(name, damage, model_copy):
    path = model_copy / name
    if damage == "truncate":
        _truncate(path)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "list":
        path.write_text("[]")
    else:
        path.write_bytes(b"\xff\xfe" + b"\x00" * 64)
    with pytest.raises(MolabError) as info:
        load_model(ModelSpec(name=str(model_copy)))
    message = str(info.value)
    assert message.startswith(f"{path} is ") and "corrupt" in message and "\n" not in message
    assert "re-" in message.split(":")[-1]  # says what to do


def test_model_spec_that_is_a_file_is_named(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(MolabError, match="model.safetensors is a file, not a Hugging Face model directory"):
        resolve_model_dir(str(tmp_path / "model.safetensors"))


def test_unrelated_loading_errors_keep_their_type(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    def bug(*args, **kwargs):
        raise KeyError("a bug in a library, not a damaged file")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", bug)
    with pytest.raises(KeyError, match="a bug"):
        load_model(ModelSpec(name=str(tiny_model_dir)))


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
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    with pytest.raises(MolabError, match="safetensors"):
        attach_adapters(model, [str(tmp_path)])


@pytest.mark.parametrize(
    "damage",
    ["weights truncated", "weights empty", "config truncated", "config a list", "config without peft_type"],
)
def test_damaged_adapter_file_is_named(damage, tiny_model_dir, adapters, tmp_path):
    adapter = tmp_path / "adapter"
    shutil.copytree(adapters[0], adapter)
    weights, config = adapter / "adapter_model.safetensors", adapter / "adapter_config.json"
    if damage == "weights truncated":
        _truncate(weights)
    elif damage == "weights empty":
        weights.write_bytes(b"")
    elif damage == "config truncated":
        _truncate(config)
    elif damage == "config a list":
        config.write_text("[]")
    else:
        config.write_text(json.dumps({"r": 4}))
    named = weights if damage.startswith("weights") else config
    for stack in ([str(adapter)], [adapters[1], str(adapter)]):  # first adapter, and a stacked one
        with pytest.raises(MolabError) as info:
            load_model(ModelSpec(name=str(tiny_model_dir), adapters=stack))
        assert str(info.value).startswith(str(named)) and "\n" not in str(info.value)


def test_adapter_path_that_is_missing_or_a_file_is_named(tiny_model_dir, tmp_path):
    model = load_model(ModelSpec(name=str(tiny_model_dir))).model
    with pytest.raises(MolabError, match=f"adapter directory {tmp_path / 'gone'} does not exist"):
        attach_adapters(model, [str(tmp_path / "gone")])
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(MolabError, match="adapter_model.safetensors is a file, not a PEFT adapter directory"):
        attach_adapters(model, [str(tmp_path / "adapter_model.safetensors")])


def test_adapter_for_another_model_width_is_named(tiny_model_dir, tokenizer, adapters, tmp_path):
    from peft import LoraConfig, get_peft_model

    wide = tiny_llama(tokenizer, hidden_size=128)
    wide.name_or_path = "acme/wide-model"
    peft = get_peft_model(wide, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "wide-adapter")
    for stack in ([str(tmp_path / "wide-adapter")], [adapters[0], str(tmp_path / "wide-adapter")]):
        with pytest.raises(AdapterMismatchError) as info:
            load_model(ModelSpec(name=str(tiny_model_dir), adapters=stack))
        message = str(info.value)
        assert message.startswith(f"{tmp_path / 'wide-adapter'} does not fit {tiny_model_dir}")
        assert "[4, 128] in the adapter, [4, 64] in the model" in message
        assert "made for acme/wide-model" in message and "\n" not in message


def test_adapter_base_name_of_a_damaged_config_is_unknown(tmp_path):
    (tmp_path / "adapter_config.json").write_text("[1, 2]")
    assert adapter_base_name(tmp_path) is None
