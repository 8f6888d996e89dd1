"""Activation caches: chosen hook points of a model over a corpus, on disk, and read back.

Why: dictionary learning (sparse autoencoders, transcoders) and feature views read millions of
activations of one point, many times over; computing them once and streaming them from disk
keeps the model out of the training loop, and per-token metadata lets a feature's top
activations be traced back to their document, position and turn.

Writing (`cache_activations`; the `activations` stage, `molab activations cache`):
- corpus: a `.parquet` file with a `text` column (a docs stage's `documents.parquet`), or a
  JSONL file whose lines hold `text` (raw text), `prompt` (a user message, optional `system`)
  or `messages` (a chat: an SFT set's `sft.jsonl`), with an optional `prefill`, and an optional
  `completion` (a `molab generate` output: the assistant's reply). Chats are rendered with the
  model's chat template: one that ends with an assistant reply is stored whole, otherwise it
  ends with the header of the assistant's next turn (then the prefill). Every token of an
  assistant turn (its content and end-of-turn, not its header; and the prefill) is flagged.
  Raw text gets the tokenizer's own special tokens, so a BOS where the model's tokenizer adds
  one; `skip_bos` leaves a document's first token out of the store when it is the BOS token
  (it is still fed to the model; the BOS's activations are outliers dictionaries usually skip).
- long documents are truncated to `max_length` tokens (counted in the index): a window after
  the first would start mid-text, without the opening the model read, so its activations
  would not be those of the document. `max_tokens` stops once that many tokens are stored.
- batches: `batch_size` documents, right-padded, so positions count from 0 in every row as in
  a forward of the document alone; padding is never stored. Documents are sorted by length
  within windows of `WINDOW` batches (little padding) and stored in the order forwarded;
  `doc_ids` give each token's corpus row.
- passes: points are grouped by layer, `layers_per_pass` layers per pass over the corpus
  (default: all in one pass); each forward stops after its pass's deepest point.
- layout: `<point>/<k:05d>.safetensors` (shard k = tokens [kS, (k+1)S) of the stored stream,
  S = `shard_tokens`) with `activations` [n, d_model] in the asked dtype and per-token
  `token_ids`, `doc_ids` (0-based row of the corpus file), `positions` (int32) and `assistant`
  (bool), so one point's folder is all a dictionary trainer reads; `index.json` records the
  points, dtype, d_model, shard lists (path, tokens, SHA-256), model, corpus hash, settings,
  counts and bytes per token.
- memory: one batch, a buffer under a shard per point, and one shard being written by a
  background thread (the forward does not wait on the disk).
- resume: a shard is written to a temporary and renamed, and the index is rewritten after each
  shard; a re-run verifies the shards listed (SHA-256), drops a damaged one and those after,
  and starts again at the first missing shard. The batch that straddles it is recomputed with
  the same rows, so the values equal those of an uninterrupted run. A partial cache made with
  another model, corpus or setting is refused with one line naming its directory.

Why the work directory: `run_stage` writes a stage into a temporary directory renamed at the
end, which a kill throws away with every shard. Shards are the expensive part, so they are
written to the run's work directory `<run>/<stage>.work/` (kept across kills) and hard-linked
into the stage once all are there (moved where links are not possible); `run_stage` deletes
the work directory when the stage completes, so a failure in between loses nothing. Every
output folder is a stage (its parent is the run), as for the evaluations: a cache gets a
manifest, a lock, and is skipped when up to date.

Reading (`ActivationCache`): shuffled batches [batch, d_model] of one point across shards
(shards in a seeded order, shuffled within a buffer of a few shards: every token once per
pass), in float32 or the stored dtype, optionally produced ahead by a background thread; and
the tokens in stored order with their metadata, for feature views.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import operator
import os
import queue
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from molab.errors import MolabError
from molab.files import atomic_path, read_jsonl, read_text_file, sha256_file, write_json
from molab.models.checkpoints import resolve_spec
from molab.models.generation import Message, Prompt
from molab.models.hooks import resolve, run_until
from molab.models.loading import LoadedModel, ModelSpec, load_model
from molab.pipeline import RunDir, Stage, hash_path

log = logging.getLogger(__name__)

INDEX = "index.json"
FORMAT = "molab-activations/1"
TOKEN_FIELDS = {
    "token_ids": torch.int32,
    "doc_ids": torch.int32,
    "positions": torch.int32,
    "assistant": torch.bool,
}
# Index fields a resumed run must share with the partial cache it continues.
FINGERPRINT = (
    "model",
    "adapters_sha256",
    "corpus_sha256",
    "points",
    "dtype",
    "max_length",
    "max_tokens",
    "shard_tokens",
    "skip_bos",
    "batch_size",
)


class ActivationsConfig(BaseModel):
    """Cache hook points of a model over a corpus."""

    model_config = ConfigDict(extra="forbid")
    model: ModelSpec = Field(default_factory=ModelSpec)
    corpus: Path = Field(description="Parquet (`text`) or JSONL (`text`, `prompt` or `messages`).")
    points: list[str] = Field(min_length=1, description="Hook points, e.g. layers.15.resid_post.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("bfloat16", description="Stored dtype.")
    max_length: int = Field(1024, ge=1, description="Longer documents are truncated to this many tokens.")
    max_tokens: int | None = Field(None, ge=1, description="Stop once this many tokens are stored.")
    batch_size: int = Field(16, ge=1, description="Documents per forward.")
    shard_tokens: int = Field(65536, ge=1, description="Tokens per shard file.")
    skip_bos: bool = Field(False, description="Do not store a document's first token when it is the BOS.")
    layers_per_pass: int | None = Field(None, ge=1, description="Layers per pass over the corpus; None: all.")


# --- the corpus -----------------------------------------------------------------------------


def read_corpus(path: Path) -> list[Prompt]:
    """The documents of a corpus file in order (a document's `doc_id` is its index here)."""
    path = Path(path)
    if path.suffix == ".parquet":
        docs = [Prompt(text=t) for t in _parquet_texts(path)]
    elif path.suffix == ".jsonl":
        docs = []
        for n, row in enumerate(read_jsonl(path)):
            try:
                docs.append(_row_prompt(row))
            except (ValidationError, TypeError) as e:
                msg = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
                raise MolabError(
                    f"{path}, row {n + 1}: {msg} (a corpus line holds 'text', 'prompt' or 'messages')"
                ) from None
    else:
        raise MolabError(
            f"corpus {path}: give a .parquet file with a 'text' column or a .jsonl file of 'text', "
            "'prompt' or 'messages' lines"
        )
    if not docs:
        raise MolabError(f"corpus {path} is empty: it holds no documents")
    return docs


def _parquet_texts(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise MolabError(f"corpus {path}: no such file")
    try:
        table = pq.ParquetFile(path)
        names = table.schema_arrow.names
    except Exception as e:  # pyarrow raises its own types for files that are not Parquet
        raise MolabError(f"{path}: cannot read it as Parquet ({e.__class__.__name__}: {e})") from None
    if "text" not in names:
        raise MolabError(
            f"{path}: no 'text' column (columns: {', '.join(names)}): a Parquet corpus needs one"
        )
    texts = table.read(columns=["text"]).column("text").to_pylist()
    for n, text in enumerate(texts, 1):
        if not isinstance(text, str):
            raise MolabError(f"{path}, row {n}: 'text' should be a string, got {type(text).__name__}")
    return texts


def _row_prompt(row: dict) -> Prompt:
    """A JSONL corpus row as `molab generate` reads it, with its `completion` as the reply."""
    if "prompt" in row:
        prompt = Prompt.chat(row["prompt"], row.get("system"), row.get("prefill", ""))
    else:
        prompt = Prompt.model_validate({k: row[k] for k in ("messages", "text", "prefill") if k in row})
    if "completion" not in row:
        return prompt
    reply = row["completion"]
    if not isinstance(reply, str):
        raise TypeError(f"'completion' should be a string, got {type(reply).__name__}")
    if prompt.messages is None:
        return prompt.model_copy(update={"prefill": prompt.prefill + reply})
    answer = Message(role="assistant", content=prompt.prefill + reply)
    return prompt.model_copy(update={"messages": [*prompt.messages, answer], "prefill": ""})


def render_chat(tokenizer, prompt: Prompt) -> tuple[str, list[tuple[int, int]]]:
    """A chat as the model's template writes it, and the character spans of the assistant's
    turns: each reply from after its header to the end of its turn, and the prefill."""
    if not getattr(tokenizer, "chat_template", None):
        raise MolabError(
            f"the tokenizer of {getattr(tokenizer, 'name_or_path', 'this model')} has no chat template: "
            "give raw 'text' rows, or use an instruct model"
        )
    messages = [m.model_dump() for m in prompt.messages]

    def render(upto: int, opening: bool) -> str:
        return tokenizer.apply_chat_template(messages[:upto], add_generation_prompt=opening, tokenize=False)

    text = render(len(messages), messages[-1]["role"] != "assistant")
    spans = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            head, turn = render(i, True), render(i + 1, False)
            if not (turn.startswith(head) and text.startswith(turn)):
                raise MolabError(
                    f"the chat template of {getattr(tokenizer, 'name_or_path', 'this model')} does not "
                    "render the start of a chat as the start of the whole chat: cannot mark the "
                    "assistant's tokens"
                )
            spans.append((len(head), len(turn)))
    if prompt.prefill:
        spans.append((len(text), len(text) + len(prompt.prefill)))
    return text + prompt.prefill, spans


def encode(tokenizer, prompt: Prompt) -> tuple[list[int], list[bool]]:
    """Token ids of a document and, per token, whether it belongs to an assistant turn."""
    if prompt.messages is None:
        ids = tokenizer((prompt.text or "") + prompt.prefill, add_special_tokens=True).input_ids
        return list(ids), [False] * len(ids)
    text, spans = render_chat(tokenizer, prompt)
    if not spans:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        return list(ids), [False] * len(ids)
    if not getattr(tokenizer, "is_fast", False):
        raise MolabError("marking assistant tokens needs a fast tokenizer (with character offsets)")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    flags = [any(a <= start < b for a, b in spans) for start, _ in enc.offset_mapping]
    return list(enc.input_ids), flags


# --- batches --------------------------------------------------------------------------------


@dataclass
class Batch:
    """One forward's input, and which of its tokens go to the cache."""

    ids: torch.Tensor  # [batch, seq] long, right-padded
    mask: torch.Tensor  # [batch, seq] long, 1 on real tokens
    store: torch.Tensor  # [batch, seq] bool: real tokens stored (no padding, skipped BOS, or cap)
    assistant: torch.Tensor  # [batch, seq] bool
    doc_ids: torch.Tensor  # [batch] int32
    first: int  # stream index of the first stored token
    docs: int  # documents in the batch

    @property
    def count(self) -> int:
        return int(self.store.sum())

    def only(self, lo: int, hi: int) -> None:
        """Keep stored only the tokens of stream rank [first + lo, first + hi) in this batch."""
        rank = self.store.flatten().cumsum(0).view_as(self.store) - 1  # [batch, seq]
        self.store &= (rank >= lo) & (rank < hi)

    def metadata(self) -> dict[str, torch.Tensor]:
        """The per-token fields of the stored tokens, each [n]."""
        positions = torch.arange(self.ids.shape[1]).expand_as(self.ids)
        rows = self.doc_ids[:, None].expand_as(self.ids)
        fields = {"token_ids": self.ids, "doc_ids": rows, "positions": positions, "assistant": self.assistant}
        return {k: v[self.store].to(TOKEN_FIELDS[k]) for k, v in fields.items()}


WINDOW = 32  # batches whose documents are sorted by length together


def batches(tokenizer, docs: list[Prompt], config: ActivationsConfig, stats: Counter) -> Iterator[Batch]:
    """The corpus in forward batches of `batch_size` documents, counting into `stats` what is
    stored; stops once `max_tokens` are stored. Documents are taken `WINDOW` batches at a time
    and sorted by length within the window, longest first (ties in corpus order): forwarded in
    corpus order, documents of mixed lengths would spend most of the compute on padding."""
    cap = config.max_tokens or sys.maxsize
    first = 0
    size = config.batch_size * WINDOW
    for start in range(0, len(docs), size):
        window = [(d, *encode(tokenizer, docs[d])) for d in range(start, min(start + size, len(docs)))]
        window = sorted((row for row in window if row[1]), key=lambda row: -len(row[1]))  # empty: no tokens
        for i in range(0, len(window), config.batch_size):
            rows = window[i : i + config.batch_size]
            batch = _batch(tokenizer, rows, config, first, stats)
            batch.only(0, cap - first)
            count = batch.count  # the consumer may narrow `store` further (resume)
            if count:
                stats["documents"] += int(batch.store.any(dim=1).sum())
                stats["assistant_tokens"] += int((batch.store & batch.assistant).sum())
                stats["tokens"] += count
                yield batch
                first += count
            if first >= cap:
                return


def _batch(tokenizer, rows: list[tuple[int, list[int], list[bool]]], config, first: int, stats) -> Batch:
    """Documents (doc_id, token ids, assistant flags) as one right-padded batch, truncated."""
    rows = [(d, ids[: config.max_length], flags[: config.max_length], len(ids)) for d, ids, flags in rows]
    shape = (len(rows), max(len(ids) for _, ids, _, _ in rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = Batch(
        ids=torch.full(shape, pad, dtype=torch.long),
        mask=torch.zeros(shape, dtype=torch.long),
        store=torch.zeros(shape, dtype=torch.bool),
        assistant=torch.zeros(shape, dtype=torch.bool),
        doc_ids=torch.tensor([d for d, _, _, _ in rows], dtype=torch.int32),
        first=first,
        docs=len(rows),
    )
    for r, (_, ids, flags, length) in enumerate(rows):
        stats["truncated_documents"] += length > config.max_length
        stats["truncated_tokens"] += length - len(ids)
        batch.ids[r, : len(ids)] = torch.tensor(ids)
        batch.mask[r, : len(ids)] = 1
        batch.store[r, : len(ids)] = True
        batch.assistant[r, : len(ids)] = torch.tensor(flags)
        bos = ids[0] == tokenizer.bos_token_id
        stats["bos_documents"] += bos
        if bos and config.skip_bos:
            batch.store[r, 0] = False
    return batch


# --- writing --------------------------------------------------------------------------------


class _ShardWriter:
    """Buffers one pass's stored tokens and writes each full shard in a background thread
    (at most one in flight), rewriting the index after it, so a kill loses only the shard being
    written: its file is renamed into place whole, or not at all."""

    def __init__(self, root: Path, index: dict, names: list[str], shard: int, size: int):
        self.root, self.index, self.names, self.shard, self.size = root, index, names, shard, size
        self.parts: dict[str, list[torch.Tensor]] = {k: [] for k in [*names, *TOKEN_FIELDS]}
        self.buffered = 0
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="molab-shards")
        self.pending: Future | None = None

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        """Each point's [n, d_model] activations and each token field's [n] values."""
        for k, v in tensors.items():
            self.parts[k].append(v)
        self.buffered += len(next(iter(tensors.values())))
        while self.buffered >= self.size:
            self._emit(self.size)

    def close(self, flush: bool) -> None:
        """Wait for the shard in flight; with `flush`, first write the rest as the last shard
        (without, after a failure, the rest is dropped: shard boundaries stay those of a whole run)."""
        if flush and self.buffered:
            self._emit(self.buffered)
        try:
            self._wait()
        finally:
            self.pool.shutdown()

    def _wait(self) -> None:
        if self.pending is not None:
            self.pending.result()
            self.pending = None

    def _emit(self, n: int) -> None:
        joined = {k: torch.cat(v) for k, v in self.parts.items()}
        self.parts = {k: [v[n:].clone()] if len(v) > n else [] for k, v in joined.items()}
        self.buffered -= n
        self._wait()
        self.pending = self.pool.submit(self._write, self.shard, {k: v[:n] for k, v in joined.items()})
        self.shard += 1

    def _write(self, shard: int, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save

        fields = {k: tensors[k].contiguous() for k in TOKEN_FIELDS}
        entries = {}
        for name in self.names:
            data = save({"activations": tensors[name].contiguous(), **fields})
            rel = f"{name}/{shard:05d}.safetensors"
            with atomic_path(self.root / rel) as tmp:
                tmp.write_bytes(data)
            entries[name] = {"path": rel, "tokens": len(fields["token_ids"]), "sha256": _sha256(data)}
        self.index["d_model"] = tensors[self.names[0]].shape[-1]
        for name, entry in entries.items():
            self.index["shards"][name].append(entry)
        write_json(self.root / INDEX, self.index)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _new_index(config: ActivationsConfig, loaded: LoadedModel, names: list[str]) -> dict:
    spec = loaded.spec
    return {
        "format": FORMAT,
        "status": "partial",
        "model": {
            "name": spec.name,
            "adapters": spec.adapters,
            "merge_adapters": spec.merge_adapters,
            "revision": spec.revision,
            "dtype": str(next(loaded.model.parameters()).dtype).removeprefix("torch."),
        },
        "adapters_sha256": [hash_path(Path(a)) for a in spec.adapters],
        "corpus": str(config.corpus),
        "corpus_sha256": sha256_file(config.corpus),
        "points": names,
        "dtype": config.dtype,
        "d_model": None,
        "max_length": config.max_length,
        "long_documents": "truncated to max_length tokens",
        "max_tokens": config.max_tokens,
        "shard_tokens": config.shard_tokens,
        "batch_size": config.batch_size,
        "skip_bos": config.skip_bos,
        "bos_token_id": loaded.tokenizer.bos_token_id,
        "token_fields": {k: str(v).removeprefix("torch.") for k, v in TOKEN_FIELDS.items()},
        "shards": {n: [] for n in names},
        "complete_points": [],
    }


def _resume(work: Path, fresh: dict) -> dict:
    """The partial cache in `work` if it was made the same way (its damaged shards dropped),
    else `fresh`; a MolabError naming `work` if it was made another way."""
    path = work / INDEX
    if not path.is_file():
        return fresh
    try:
        index = json.loads(read_text_file(path, "index"))
        old = {k: index[k] for k in FINGERPRINT}
    except (json.JSONDecodeError, KeyError, TypeError):
        raise MolabError(f"{path} is corrupt: delete {work} to start the cache over") from None
    for key in FINGERPRINT:
        if old[key] != fresh[key]:
            raise MolabError(
                f"{work} holds a partial activation cache of another {key.removesuffix('_sha256')} "
                f"({_short(old[key])} there, {_short(fresh[key])} now): repeat the command that "
                f"started it to finish it, or delete {work} to start over"
            )
    for name, shards in index["shards"].items():
        for i, entry in enumerate(shards):
            file = work / entry["path"]
            if not file.is_file() or sha256_file(file) != entry["sha256"]:
                log.warning("%s is missing or damaged: recomputing from shard %d of %s", file, i, name)
                del shards[i:]
                if name in index["complete_points"]:
                    index["complete_points"].remove(name)
                break
    return index


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 70 else text[:67] + "..."


def _passes(model, names: list[str], per_pass: int | None) -> list[list[str]]:
    """The points of each pass: `per_pass` layers at a time, in layer order."""
    layer = {n: resolve(model, n).layer for n in names}
    layers = sorted(set(layer.values()))
    step = per_pass or len(layers)
    return [[n for n in names if layer[n] in layers[i : i + step]] for i in range(0, len(layers), step)]


def _run_pass(loaded: LoadedModel, docs: list[Prompt], config, names, index, root: Path, bar) -> Counter:
    """Cache `names` over the corpus from the first shard they lack; returns the counts."""
    lists = [index["shards"][n] for n in names]
    done = min(map(len, lists))
    for shards in lists:
        del shards[done:]
    start = sum(e["tokens"] for e in lists[0])
    writer = _ShardWriter(root, index, names, done, config.shard_tokens)
    store_dtype = getattr(torch, config.dtype)
    stats: Counter = Counter()
    device = loaded.device
    try:
        for batch in batches(loaded.tokenizer, docs, config, stats):
            bar(batch.docs)
            if batch.first + batch.count <= start:
                continue
            batch.only(start - batch.first, batch.count)
            acts = run_until(
                loaded.model,
                names,
                input_ids=batch.ids.to(device),
                attention_mask=batch.mask.to(device),
                use_cache=False,
            )
            keep = batch.store.to(device)
            writer.add({n: acts[n][keep].to(store_dtype).cpu() for n in names} | batch.metadata())
    except BaseException:
        writer.close(flush=False)
        raise
    writer.close(flush=True)
    return stats


@contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar over documents (on a terminal only); yields the function advancing it."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
    ) as p:
        task = p.add_task(label, total=total)
        yield lambda n: p.advance(task, n)


def cache_activations(
    config: ActivationsConfig,
    out_dir: Path,
    work_dir: Path,
    *,
    loaded: LoadedModel | None = None,
    progress: bool | None = None,
) -> dict:
    """Write the cache into `work_dir` (resuming what is there), then link it into `out_dir`.
    `loaded` replaces loading `config.model` (its spec is what the index records); `progress`
    defaults to showing a bar on a terminal. Returns the headline numbers."""
    docs = read_corpus(config.corpus)
    loaded = loaded or load_model(config.model)
    names = list(dict.fromkeys(resolve(loaded.model, p).name for p in config.points))
    work_dir.mkdir(parents=True, exist_ok=True)
    index = _resume(work_dir, _new_index(config, loaded, names))
    show = sys.stderr.isatty() if progress is None else progress
    for group in _passes(loaded.model, names, config.layers_per_pass):
        if set(group) <= set(index["complete_points"]):
            continue
        label = f"caching {group[0]}" + (f" (+{len(group) - 1})" if len(group) > 1 else "")
        with _progress(show, len(docs), label) as bar:
            stats = _run_pass(loaded, docs, config, group, index, work_dir, bar)
        if not stats["tokens"]:
            raise MolabError(
                f"corpus {config.corpus}: no tokens to store (every document is empty"
                + (", or only a BOS, which skip_bos leaves out)" if config.skip_bos else ")")
            )
        index["complete_points"] += group
        index |= {k: stats[k] for k in ("tokens", "documents", "truncated_documents", "truncated_tokens")}
        index |= {k: stats[k] for k in ("assistant_tokens", "bos_documents")}
        index["bos_stored"] = bool(stats["bos_documents"]) and not config.skip_bos
        write_json(work_dir / INDEX, index)
    return _publish(index, work_dir, Path(out_dir))


def _publish(index: dict, work: Path, out: Path) -> dict:
    """Link (or move) the shards into `out` and write the complete index there."""
    size = 0
    for shards in index["shards"].values():
        for entry in shards:
            src, dst = work / entry["path"], out / entry["path"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:  # a file system without hard links
                os.replace(src, dst)
            size += dst.stat().st_size
    index = index | {"status": "complete", "bytes_per_token": round(size / index["tokens"], 1)}
    write_json(out / INDEX, index)
    keys = ("tokens", "documents", "truncated_documents", "assistant_tokens", "d_model", "bytes_per_token")
    return {k: index[k] for k in keys} | {"points": len(index["points"]), "dtype": index["dtype"]}


def _stage_inputs(config: ActivationsConfig, stage_dir: Path) -> dict[str, Path]:
    """The corpus and the adapters of the model (those of a training stage named as the model
    too, once it has run, so that re-training it makes the cache stale)."""
    adapters = resolve_spec(config.model).adapters
    return {"corpus": Path(config.corpus)} | {f"adapter_{i}": Path(a) for i, a in enumerate(adapters)}


def _stage_run(config: ActivationsConfig, out: Path, stage_dir: Path) -> dict:
    run, name = RunDir.of_stage(stage_dir)
    return cache_activations(config, out, run.work_dir(name, create=True))


ACTIVATIONS = Stage(
    name="activations",
    config=ActivationsConfig,
    outputs=(INDEX,),
    run=_stage_run,
    inputs=_stage_inputs,
)


# --- reading --------------------------------------------------------------------------------


@dataclass
class TokenBatch:
    """Stored tokens in order with their metadata."""

    activations: torch.Tensor  # [n, d_model], stored dtype
    token_ids: torch.Tensor  # [n] int32
    doc_ids: torch.Tensor  # [n] int32, row of the corpus file
    positions: torch.Tensor  # [n] int32, position in the document
    assistant: torch.Tensor  # [n] bool, in an assistant turn


class ActivationCache:
    """A complete cache directory; shards are opened memory-mapped (`safe_open`) one at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        file = self.path / INDEX
        try:
            self.index = json.loads(read_text_file(file, "activation index"))
        except json.JSONDecodeError as e:
            raise MolabError(f"{file} is corrupt ({e.msg}): re-run the cache") from None
        if not isinstance(self.index, dict) or self.index.get("format") != FORMAT:
            raise MolabError(f"{file} is not a molab activation index ({FORMAT})")
        if self.index.get("status") != "complete":
            raise MolabError(f"{self.path} is a partial cache: finish it with the command that started it")

    @property
    def points(self) -> list[str]:
        return self.index["points"]

    @property
    def d_model(self) -> int:
        return self.index["d_model"]

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.index["dtype"])

    @property
    def tokens(self) -> int:
        return self.index["tokens"]

    def shards(self, point: str) -> list[dict]:
        if point not in self.index["shards"]:
            raise MolabError(f"{self.path} has no point {point!r}: it holds {', '.join(self.points)}")
        return self.index["shards"][point]

    def _load(self, entry: dict, keys) -> dict[str, torch.Tensor]:
        from safetensors import safe_open

        with safe_open(self.path / entry["path"], framework="pt") as f:
            return {k: f.get_tensor(k) for k in keys}

    def batches(
        self,
        point: str,
        batch_size: int,
        *,
        seed: int = 0,
        epochs: int | None = 1,
        buffer_shards: int = 4,
        dtype: torch.dtype | None = torch.float32,
        prefetch: int = 0,
        drop_last: bool = False,
    ) -> Iterator[torch.Tensor]:
        """Shuffled batches [batch_size, d_model] of `point`, every token once per epoch (an
        epoch's last batch is smaller unless `drop_last`); `epochs` None goes on for ever.
        Epoch e draws its shard order from `seed + e` and shuffles `buffer_shards` shards at a
        time (memory: that many shards). `dtype` None keeps the stored dtype. `prefetch` > 0
        prepares that many batches ahead in a background thread, across epoch boundaries."""
        items = map(
            operator.itemgetter(0),
            self._epochs([self.shards(point)], batch_size, seed, epochs, buffer_shards, dtype, drop_last),
        )
        return _prefetched(items, prefetch) if prefetch else items

    def paired_batches(
        self,
        points: list[str],
        batch_size: int,
        *,
        seed: int = 0,
        epochs: int | None = 1,
        buffer_shards: int = 4,
        dtype: torch.dtype | None = torch.float32,
        prefetch: int = 0,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """Like `batches`, for several points at once: tuples of batches [batch_size, d_model],
        one per point, whose rows are the same tokens (a transcoder's input and target). The
        points' shards hold the same tokens in the same order, so one shard order and one
        permutation serve all."""
        lists = [self.shards(p) for p in points]
        sizes = {tuple(e["tokens"] for e in shards) for shards in lists}
        if len(sizes) != 1:
            raise MolabError(f"{self.path}: the shards of {', '.join(points)} do not hold the same tokens")
        items = self._epochs(lists, batch_size, seed, epochs, buffer_shards, dtype, drop_last)
        return _prefetched(items, prefetch) if prefetch else items

    def _epochs(self, lists, batch_size, seed, epochs, buffer_shards, dtype, drop_last):
        passes = itertools.count() if epochs is None else range(epochs)
        return itertools.chain.from_iterable(
            self._shuffled(lists, batch_size, seed + e, buffer_shards, dtype, drop_last) for e in passes
        )

    def _shuffled(self, lists, batch_size, seed, buffer_shards, dtype, drop_last):
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(lists[0]), generator=g).tolist()
        rest = [torch.empty(0, self.d_model, dtype=self.dtype) for _ in lists]
        for i in range(0, len(order), buffer_shards):
            keys = order[i : i + buffer_shards]
            bufs = [
                torch.cat([r, *(self._load(shards[k], ["activations"])["activations"] for k in keys)])
                for r, shards in zip(rest, lists)
            ]  # each [tokens, d_model]
            perm = torch.randperm(len(bufs[0]), generator=g)
            bufs = [b[perm] for b in bufs]
            full = len(perm) - len(perm) % batch_size
            for j in range(0, full, batch_size):
                yield tuple(b[j : j + batch_size].to(dtype or b.dtype) for b in bufs)
            rest = [b[full:] for b in bufs]
        if len(rest[0]) and not drop_last:
            yield tuple(r.to(dtype or r.dtype) for r in rest)

    def ordered(self, point: str, batch_size: int | None = None) -> Iterator[TokenBatch]:
        """The tokens of `point` in stored order (whole documents, positions in order; see
        `batches` for the order of documents), with their metadata: one batch per shard, or
        `batch_size` tokens at a time."""
        for entry in self.shards(point):
            tensors = self._load(entry, ["activations", *TOKEN_FIELDS])
            step = batch_size or entry["tokens"]
            for j in range(0, entry["tokens"], step):
                yield TokenBatch(**{k: v[j : j + step] for k, v in tensors.items()})


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def _prefetched(items: Iterator, depth: int) -> Iterator:
    """`items`, produced up to `depth` ahead by a background thread (torch releases the GIL
    while it copies and shuffles, so the consumer's own work overlaps it)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as e:  # handed to the consumer, raised there
            put(_Failed(e))

    thread = threading.Thread(target=produce, name="molab-prefetch", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not end:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()  # not left running into interpreter shutdown, where torch would abort
