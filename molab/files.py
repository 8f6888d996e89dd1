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
from pathlib import Path
from typing import Any

from molab.errors import MolabError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`.

    Works for files and directories. On an exception the temporary is removed and any
    existing `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / "out"
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            # A directory cannot be renamed over a non-empty one: move the old one aside first.
            old = tmp / "old"
            os.replace(path, old)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file; a bad line raises a MolabError naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MolabError(f"cannot read {path}: {e.__class__.__name__}: {e}") from e
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise MolabError(f"{path}, line {n}: not valid JSON ({e.msg})") from e
        if not isinstance(row, dict):
            raise MolabError(f"{path}, line {n}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_yaml_list(source, kind: str, items: str) -> list:
    """The non-empty YAML list in `source` (a path or a package resource), a `kind` file of
    `items`; a MolabError naming the file when it cannot be read, is not YAML, or is empty."""
    import yaml

    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as e:
        raise MolabError(f"cannot read {kind} file {source}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise MolabError(f"{source}: not valid YAML ({e})") from None
    if not isinstance(data, list) or not data:
        raise MolabError(f"{source}: expected a non-empty list of {items}")
    return data
