"""Read and check the training sets of the three stages, in the formats of the data contracts.

- documents (mid-training): `documents.parquet` (or JSONL) with a `text` column;
- SFT: `sft.jsonl` rows `{"messages": [..., {"role": "assistant", ...}]}`, turned into TRL's
  conversational prompt-completion form (prompt = every message but the last, completion = the
  last assistant message), so that the loss covers the answer alone with any chat template,
  whether or not it has `{% generation %}` markers;
- DPO: `dpo.jsonl` rows in TRL's conversational preference form (prompt / chosen / rejected).

A set of the wrong kind, an empty set or a malformed row is a `MolabError` naming the file,
the line and the field, raised before any training starts.
"""

from __future__ import annotations

import random
from pathlib import Path

from molab.errors import MolabError
from molab.files import read_jsonl

DOCUMENT_TAG = "<document>"
_ROLES = ("system", "user", "assistant")
_KINDS = {  # a field that gives a set's kind away, for errors about a set of the wrong kind
    "text": "a documents set (for `molab train midtrain`)",
    "messages": "an SFT set (for `molab train sft`)",
    "chosen": "a DPO set (for `molab train dpo`)",
}


def _looks_like(fields) -> str:
    kinds = [kind for field, kind in _KINDS.items() if field in fields]
    return f"; it looks like {kinds[0]}" if kinds else ""


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise MolabError(f"{path}: no such {what} file")


def read_texts(path: Path) -> list[dict]:
    """Rows `{"text", "source"}` of a documents file (parquet or JSONL with a `text` column)."""
    _require_file(path, "documents")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises its own types for corrupt files
            raise MolabError(f"{path}: cannot read it as parquet ({e.__class__.__name__}: {e})") from e
        if "text" not in table.column_names:
            raise MolabError(
                f"{path}: no 'text' column (columns: {', '.join(table.column_names)})"
                f"{_looks_like(table.column_names)}"
            )
        rows = table.select([c for c in ("text", "source") if c in table.column_names]).to_pylist()
    elif path.suffix == ".jsonl":
        rows = read_jsonl(path)
        for n, row in enumerate(rows, 1):
            if "text" not in row:
                raise MolabError(f"{path}, line {n}: no 'text' field{_looks_like(row)}")
    else:
        raise MolabError(f"{path}: documents must be a .parquet or .jsonl file with a 'text' column")
    for n, row in enumerate(rows, 1):
        if not isinstance(row["text"], str):
            raise MolabError(
                f"{path}, row {n}: field 'text' should be a string, got {type(row['text']).__name__}"
            )
    rows = [{"text": r["text"], "source": r.get("source") or ""} for r in rows if r["text"].strip()]
    if not rows:
        raise MolabError(f"{path} holds no documents (no non-empty 'text')")
    return rows


def document_text(doc: dict, tag: bool) -> str:
    """A document as trained on: tagged (when `tag`) unless it is a replay row."""
    return f"{DOCUMENT_TAG}{doc['text']}" if tag and doc["source"] != "replay" else doc["text"]


def midtrain_texts(
    path: Path, tag: bool, replay: Path | None, replay_fraction: float, seed: int
) -> tuple[list[str], dict]:
    """The shuffled texts of mid-training: the documents (tagged unless they are replay rows),
    plus replay documents making up `replay_fraction` of the total. Returns (texts, counts)."""
    docs = read_texts(path)
    texts = [document_text(d, tag) for d in docs]
    rng = random.Random(seed)
    replayed = []
    if replay is not None and replay_fraction > 0:
        pool = [d["text"] for d in read_texts(replay)]
        wanted = round(len(texts) * replay_fraction / (1 - replay_fraction))
        replayed = rng.sample(pool, min(wanted, len(pool)))
    texts += replayed
    rng.shuffle(texts)
    return texts, {"documents": len(docs), "replay_documents": len(replayed)}


def document_pieces(path: Path, tokenizer, tag: bool, max_length: int) -> list[list[int]]:
    """Token rows of the documents for mixing into SFT: each document (tagged, ending with the
    end-of-sequence token, as in mid-training) cut into consecutive pieces of at most
    `max_length` tokens, so no text is lost to truncation and no row spans two documents."""
    pieces = []
    for doc in read_texts(path):
        ids = tokenizer(document_text(doc, tag) + tokenizer.eos_token)["input_ids"]
        pieces += [ids[i : i + max_length] for i in range(0, len(ids), max_length)]
    return pieces


def _check_messages(messages, where: str, field: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise MolabError(f"{where}: field '{field}' should be a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise MolabError(
                f"{where}: field '{field}[{i}]' should be "
                f"{{'role': one of {'/'.join(_ROLES)}, 'content': str}}"
            )


def _rows(path: Path, what: str) -> list[dict]:
    _require_file(path, what)
    if path.suffix != ".jsonl":
        raise MolabError(f"{path}: the {what} must be a JSONL file")
    rows = read_jsonl(path)
    if not rows:
        raise MolabError(f"{path} holds no examples")
    return rows


def sft_examples(path: Path) -> list[dict]:
    """Prompt-completion examples `{"prompt": [messages], "completion": [assistant message]}`."""
    examples = []
    for n, row in enumerate(_rows(path, "SFT set"), 1):
        where = f"{path}, line {n}"
        if "messages" not in row:
            raise MolabError(f"{where}: no 'messages' field{_looks_like(row)}")
        messages = row["messages"]
        _check_messages(messages, where, "messages")
        if messages[-1]["role"] != "assistant" or len(messages) < 2:
            raise MolabError(f"{where}: field 'messages' should end with an assistant message after a prompt")
        examples.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return examples


def dpo_examples(path: Path) -> list[dict]:
    """Preference examples `{"prompt", "chosen", "rejected"}` (lists of messages)."""
    examples = []
    for n, row in enumerate(_rows(path, "DPO set"), 1):
        where = f"{path}, line {n}"
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise MolabError(f"{where}: no '{missing[0]}' field{_looks_like(row)}")
        _check_messages(row["prompt"], where, "prompt")
        if row["prompt"][-1]["role"] != "user":
            raise MolabError(f"{where}: field 'prompt' should end with a user message")
        for key in ("chosen", "rejected"):
            _check_messages(row[key], where, key)
            if [m["role"] for m in row[key]] != ["assistant"]:
                raise MolabError(f"{where}: field '{key}' should hold exactly one assistant message")
        examples.append({k: row[k] for k in ("prompt", "chosen", "rejected")})
    return examples
