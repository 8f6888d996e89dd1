"""Atomic file and directory writes, and JSONL reading and writing.

Every artifact molab writes goes through here: data is written to a temporary sibling and
renamed into place, so a killed process never leaves a half-written file that a later stage
would trust (rename is atomic on POSIX file systems).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from molab.errors import MolabError


@dataclass(frozen=True)
class Fingerprint:
    """A stage input that is not a whole file (e.g. the fields of a catalog one stage reads):
    what was read (`label`, shown in manifests) and its SHA-256."""

    label: str
    sha256: str


@contextmanager
def atomic_path(path: str | Path, *, replace_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`.

    Works for files and directories. On an exception the temporary is removed and any
    existing `path` is left untouched. An existing directory at `path` is replaced only with
    `replace_dir=True`, which a caller passes after checking that molab wrote that directory
    (`molab.pipeline` checks the stage's manifest); otherwise it is refused before any work.
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink() and not replace_dir:
        raise MolabError(f"{path} is an existing directory: molab will not replace it; choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / "out"
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            if not replace_dir or not target.is_dir():
                raise MolabError(f"{path} became a directory while molab was writing it: left as it is")
            # A directory cannot be renamed over a non-empty one: move the old one aside first.
            old = tmp / "old"
            os.replace(path, old)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """`path` resolved, if molab may write a file there; a MolabError naming it otherwise.

    Called before any work, so that a bad output location is found at once rather than after
    generation: an existing directory is never replaced by a file, and the nearest existing
    folder above the file must be writable (the file is written beside it and renamed)."""
    given = Path(path)
    resolved = given.expanduser().resolve()
    if resolved.is_dir():
        raise MolabError(f"{option} {given} is a directory: give the path of a file to write")
    check_writable_dir(resolved.parent, f"{option} {given}")
    return resolved


def check_writable_dir(folder: str | Path, what: str) -> None:
    """A MolabError naming `what` unless `folder` (or the nearest existing folder above it, where
    it would be created) can be written to."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise MolabError(f"cannot write {what}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MolabError(f"cannot write {what}: the folder {existing} is not writable")


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write one JSON object per line, atomically."""
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# Leading bytes of file kinds a user may hand over where a text file is expected.
_BINARY_KINDS = {
    b"PAR1": "a Parquet file",
    b"PK\x03\x04": "a zip archive",
    b"\x1f\x8b": "a gzip file",
    b"\x89PNG": "a PNG image",
    b"%PDF": "a PDF file",
    b"\x80\x02": "a Python pickle",
    b"GGUF": "a GGUF model file",
}


def read_text_file(path: str | Path, kind: str) -> str:
    """The UTF-8 text of `path`, a `kind` file (e.g. "JSONL", "recipe"). A MolabError naming the
    file (and the line, for invalid UTF-8) when it cannot be read, is a binary file of a known
    kind, or is not UTF-8 text."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MolabError(f"cannot read {kind} file {path}: no such file") from None
    except IsADirectoryError:
        raise MolabError(f"{path} is a directory, not a {kind} file") from None
    except OSError as e:
        raise MolabError(f"cannot read {kind} file {path}: {e.strerror or e}") from None
    for magic, what in _BINARY_KINDS.items():
        if data.startswith(magic):
            raise MolabError(f"{path} is {what}, not a {kind} file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise MolabError(
            f"{path}, line {line}, column {column}: not UTF-8 text (is it a {kind} file? re-save it as UTF-8)"
        ) from None


def iter_jsonl(path: str | Path, kind: str = "JSONL") -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file, streamed (corpora can be
    large). Bytes are split at newlines only: `str.splitlines()` would also break at U+2028 and
    other separators that `write_jsonl` (ensure_ascii=False) leaves raw inside strings. A file of
    another kind, invalid UTF-8, a line that is not JSON or not an object: a MolabError naming
    the file and line (`kind` names what the file should be)."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise MolabError(f"cannot read {kind} file {path}: no such file") from None
    except IsADirectoryError:
        raise MolabError(f"{path} is a directory, not a {kind} file") from None
    except OSError as e:
        raise MolabError(f"cannot read {kind} file {path}: {e.strerror or e}") from None
    with f:
        for n, raw in enumerate(f, 1):
            if n == 1:
                for magic, what in _BINARY_KINDS.items():
                    if raw.startswith(magic):
                        raise MolabError(f"{path} is {what}, not a {kind} file")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise MolabError(
                    f"{path}, line {n}, column {e.start + 1}: not UTF-8 text (is it a {kind} file? "
                    "re-save it as UTF-8)"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MolabError(f"{path}, line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise MolabError(f"{path}, line {n}: expected a JSON object, got {type(row).__name__}")
            yield n, row


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file; a bad line raises a MolabError naming the file and line."""
    return [row for _, row in iter_jsonl(path)]


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_yaml(path: str | Path, kind: str):
    """The YAML data of `path`, a `kind` file (e.g. "split", "catalog"); a MolabError naming the
    file (and the line, where YAML says which) when it cannot be read or parsed."""
    import yaml

    path = Path(path)
    text = read_text_file(path, kind)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise MolabError(f"{path}{where}: not valid YAML ({problem})") from None


def read_yaml_list(source, kind: str, items: str) -> list:
    """The non-empty YAML list in `source` (a path or a package resource), a `kind` file of
    `items`; a MolabError naming the file when it cannot be read, is not YAML, or is empty."""
    import yaml

    try:
        text = source.read_text(encoding="utf-8") if not isinstance(source, Path) else None
        data = yaml.safe_load(text if text is not None else read_text_file(source, kind))
    except OSError as e:
        raise MolabError(f"cannot read {kind} file {source}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise MolabError(f"{source}: not valid YAML ({e})") from None
    if not isinstance(data, list) or not data:
        raise MolabError(f"{source}: expected a non-empty list of {items}")
    return data


def entries_fingerprint(
    path: str | Path, kind: str, key: str, fields: tuple[str, ...], settings: tuple[str, ...] = ()
) -> Fingerprint:
    """The SHA-256 of the parts of a YAML file of entries that a stage reads: each entry's `id`
    and `fields`, and the top-level `settings`. The file is a list of entries, or a mapping with
    the list (or an id -> entry mapping) under `key`. A stage hashing this re-runs when those
    parts change, not when another field does (say one bias's `applied` rule in a catalog)."""
    import hashlib

    data = read_yaml(path, kind)
    if isinstance(data, list):
        data = {key: data}
    if not isinstance(data, dict):
        raise MolabError(f"{path}: expected a list of entries or a mapping with '{key}'")
    entries = data.get(key) or []
    if isinstance(entries, dict):
        entries = [{"id": k, **(v if isinstance(v, dict) else {})} for k, v in entries.items()]
    kept = [{k: e.get(k) for k in ("id", *fields)} if isinstance(e, dict) else e for e in entries]
    text = json.dumps(
        {"settings": {k: data.get(k) for k in settings}, key: kept}, sort_keys=True, default=str
    )
    return Fingerprint(f"{path} ({', '.join(fields)})", hashlib.sha256(text.encode()).hexdigest())
