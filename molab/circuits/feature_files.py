"""Feature files for graph viewers: what each transcoder feature fires on and what it writes, in
circuit-tracer's local feature-file format.

Why: a graph node means little without its feature's examples. circuit-tracer's viewer reads
feature files from a local folder (its local server serves them under `/features/`), but no
released tool writes them; molab does, and its own viewer (`molab.circuits.viewer`) reads the
same files. The format, as circuit-tracer's frontend reads it (`frontend/feature_models.py`,
`assets/feature_examples/init-feature-examples.js`, `assets/util.js`):

- `index.json.gz`: gzip'd JSON list indexed by layer, each `{"filename": "layer_<i>.bin",
  "offsets": [...]}` with d_transcoder + 1 byte offsets: feature f's record is the bytes from
  `offsets[f]` to `offsets[f + 1]` (equal offsets: a feature not written; a layer without a
  transcoder has no file);
- a record: a 4-byte little-endian length, then that many bytes of gzip'd JSON with
  `transcoder_id`, `index`, `examples_quantiles` (`[{quantile_name, examples: [{tokens,
  tokens_acts_list, train_token_ind, is_repeated_datapoint}]}]`), `top_logits`,
  `bottom_logits` (token strings), `act_min`, `act_max`, `quantile_values` (the 1st to 100th
  percentiles of the nonzero activations), `histogram` (counts of the nonzero activations in
  equal bins from act_min to act_max) and `activation_frequency`;
- molab's own record of how the folder was made: `molab-features.json` (also its mark of
  ownership: molab replaces only a folder holding one).

The examples (the ideas of `molab.audit.features`, for transcoders): per feature the top
activations, then a few random ones from each equal-width interval of its activation range
(`is_repeated_datapoint` marks a token already shown), each with up to `context` tokens of its
document either side and the feature's activation on every one. Activations stream from an
activation cache (`layers.{i}.mlp_in`, molab.models.activations) in three passes per layer
(maxima and top examples, histograms and interval samples, then the context windows'
activations), so memory holds one batch and the per-feature summaries, never a layer's
activations (jumprelu and relu transcoders encode only the features asked for). A document's
BOS token is left out (its activations are outliers, which graphs zero too).
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import torch

from molab.circuits.export import FEATURE_TYPE, cantor_unpair
from molab.circuits.transcoder import INPUT_POINT, TranscoderSet
from molab.errors import MolabError
from molab.files import atomic_path, write_json
from molab.models.activations import ActivationCache

INDEX = "index.json.gz"
RECORD = "molab-features.json"
FORMAT = "molab-features/1"
_FINE = 20  # fine histogram bins per displayed bin, for the percentiles


def layer_point(layer: int) -> str:
    return f"layers.{layer}.{INPUT_POINT}"


def graph_features(data: dict[str, Any]) -> dict[int, list[int]]:
    """The (layer -> feature indices) of the feature nodes of a graph JSON."""
    out: dict[int, set[int]] = {}
    for node in data["nodes"]:
        if node["feature_type"] == FEATURE_TYPE:
            layer, index = cantor_unpair(node["feature"])
            out.setdefault(layer, set()).add(index)
    return {layer: sorted(v) for layer, v in sorted(out.items())}


def _check(tset: TranscoderSet, cache: ActivationCache, features: dict[int, list[int]]) -> None:
    if cache.d_model != tset.d_model:
        raise MolabError(
            f"{cache.path} holds activations of width {cache.d_model}; the transcoders read {tset.d_model}"
        )
    for layer, indices in features.items():
        if layer not in tset:
            raise MolabError(f"no transcoder for layer {layer}: the set holds layers {tset.layers}")
        width = tset[layer].d_transcoder
        bad = [i for i in indices if not 0 <= i < width]
        if bad:
            raise MolabError(f"feature {bad[0]} of layer {layer} is out of range (0..{width - 1})")
        if layer_point(layer) not in cache.points:
            raise MolabError(
                f"{cache.path} has no {layer_point(layer)}: cache the MLP inputs of every layer the "
                f"transcoders read (it holds {', '.join(cache.points)})"
            )


def _owned(out: Path) -> bool:
    """Whether molab may replace `out`: absent, an empty folder, or a feature folder of molab's."""
    if not out.exists():
        return False
    if out.is_dir() and (not any(out.iterdir()) or (out / RECORD).is_file()):
        return True
    raise MolabError(f"{out} exists and holds no molab feature files: molab will not replace it")


@torch.no_grad()
def write_feature_files(
    transcoders: TranscoderSet,
    cache: ActivationCache,
    out: str | Path,
    *,
    tokenizer=None,
    unembed: torch.Tensor | None = None,
    features: dict[int, list[int]] | None = None,
    transcoder_id: str | None = None,
    top_k: int = 10,
    intervals: int = 3,
    per_interval: int = 5,
    context: int = 8,
    bins: int = 40,
    logits: int = 10,
    batch_size: int = 1024,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the feature files of `features` (layer -> indices; None: every feature of every
    layer of the set) into the folder `out`, atomically. `tokenizer` decodes tokens (else ids
    are shown), `unembed` [vocab, d_model] (`molab.audit.features.unembedding`) gives the top
    and bottom logits (else none). Returns the folder's record."""
    out = Path(out)
    replace = _owned(out)
    if features is None:
        features = {layer: list(range(transcoders[layer].d_transcoder)) for layer in transcoders.layers}
    features = {layer: sorted(set(v)) for layer, v in sorted(features.items()) if v}
    if not features:
        raise MolabError("no features to write")
    _check(transcoders, cache, features)
    if unembed is not None and unembed.shape[1] != transcoders.d_model:
        raise MolabError(
            f"the unembedding has width {unembed.shape[1]}; the transcoders write {transcoders.d_model}"
        )
    record = transcoders.record
    scan = transcoder_id or str(record.get("scan") or record.get("model_name") or "molab")
    n_layers = transcoders.n_layers or max(transcoders.layers) + 1
    settings = dict(top_k=top_k, intervals=intervals, per_interval=per_interval, context=context, bins=bins)
    index: list[dict] = [{"filename": None, "offsets": []} for _ in range(n_layers)]
    with atomic_path(out, replace_dir=replace) as tmp:
        tmp.mkdir()
        for layer, indices in features.items():
            tc = transcoders[layer]
            name = f"{scan}/layer_{layer}"
            records = _layer_records(
                tc, cache, indices, tokenizer, unembed, name, settings, logits, batch_size, seed
            )
            index[layer] = _write_layer(tmp / f"layer_{layer}.bin", records, tc.d_transcoder)
            index[layer]["filename"] = f"layer_{layer}.bin"
        (tmp / INDEX).write_bytes(gzip.compress(json.dumps(index).encode(), mtime=0))
        record = {
            "format": FORMAT,
            "transcoder_id": scan,
            "model_name": transcoders.record.get("model_name"),
            "cache": str(cache.path),
            "tokens": cache.tokens,
            "settings": settings,
            "features": {str(k): v for k, v in features.items()},
        }
        write_json(tmp / RECORD, record)
    return record


def _write_layer(path: Path, records: dict[int, dict], width: int) -> dict:
    offsets, position = [0], 0
    with open(path, "wb") as f:
        for feature in range(width):
            if feature in records:
                body = gzip.compress(json.dumps(records[feature], ensure_ascii=False).encode(), mtime=0)
                f.write(struct.pack("<I", len(body)) + body)
                position += 4 + len(body)
            offsets.append(position)
    return {"offsets": offsets}


def _encoded(tc, cache: ActivationCache, point: str, columns: torch.Tensor, batch_size: int, bos):
    """(first stream index, batch, activations [n, F] of the chosen features, BOS zeroed)."""
    start = 0
    for batch in cache.ordered(point, batch_size):
        x = batch.activations.float()  # [n, d_model]
        if tc.activation == "topk":  # a token's k winners depend on every feature
            acts = tc.encode(x)[:, columns]  # [n, F]
        else:  # jumprelu and relu act feature by feature: encode only the chosen ones
            pre = x @ tc.W_enc[columns].T + tc.b_enc[columns]  # [n, F]
            acts = pre * (pre > tc.threshold[columns]) if tc.activation == "jumprelu" else pre.relu()
        if bos is not None:
            acts[(batch.positions == 0) & (batch.token_ids == bos)] = 0
        yield start, batch, acts
        start += len(acts)


def _layer_records(tc, cache, indices, tokenizer, unembed, transcoder_id, settings, logits, batch_size, seed):
    point, columns = layer_point(tc.layer), torch.tensor(indices, dtype=torch.long)
    n_feat, bos = len(indices), cache.index.get("bos_token_id")
    top_k, intervals, per, bins = (settings[k] for k in ("top_k", "intervals", "per_interval", "bins"))

    # pass 1: counts, maxima, top examples; and every token's metadata
    count = torch.zeros(n_feat)
    best = torch.zeros(n_feat, 0)  # [F, <=top_k]
    best_at = torch.zeros(n_feat, 0, dtype=torch.long)
    ids, docs = [], []
    for start, batch, acts in _encoded(tc, cache, point, columns, batch_size, bos):
        ids.append(batch.token_ids.long())
        docs.append(batch.doc_ids.long())
        count += (acts > 0).sum(0)
        where = torch.arange(start, start + len(acts)).expand(n_feat, -1)
        top = torch.cat([best, acts.T], 1).topk(min(top_k, best.shape[1] + len(acts)), dim=1)
        best, best_at = top.values, torch.cat([best_at, where], 1).gather(1, top.indices)
    token_ids, doc_ids = torch.cat(ids), torch.cat(docs)
    act_max = best[:, 0] if best.shape[1] else torch.zeros(n_feat)

    # pass 2: fine histograms over (0, max] and random samples of each interval
    fine = bins * _FINE
    hist = torch.zeros(n_feat * fine)
    g = torch.Generator().manual_seed(seed)
    keys = torch.full((intervals, n_feat, 0), float("inf"))
    keys_at = torch.zeros(intervals, n_feat, 0, dtype=torch.long)
    scale = act_max.clamp(min=1e-30)
    for start, _, acts in _encoded(tc, cache, point, columns, batch_size, bos):
        on = acts > 0
        rel = acts / scale  # [n, F] in (0, 1] where on
        cell = (rel * fine).long().clamp(0, fine - 1) + torch.arange(n_feat) * fine
        hist.scatter_add_(0, cell[on], torch.ones(int(on.sum())))
        band = (rel * intervals).long().clamp(0, intervals - 1)
        draw = torch.rand(acts.shape, generator=g)
        where = torch.arange(start, start + len(acts)).expand(n_feat, -1)
        merged_keys, merged_at = [], []
        for j in range(intervals):
            k = torch.where(on & (band == j), draw, float("inf")).T  # [F, n]
            low = torch.cat([keys[j], k], 1).topk(min(per, keys.shape[2] + k.shape[1]), dim=1, largest=False)
            merged_keys.append(low.values)
            merged_at.append(torch.cat([keys_at[j], where], 1).gather(1, low.indices))
        if intervals:
            keys, keys_at = torch.stack(merged_keys), torch.stack(merged_at)
    hist = hist.view(n_feat, fine)

    # the examples, their context windows, and pass 3: the feature's activation on each token
    examples = []  # per feature: [(quantile name, stream index)]
    for i in range(n_feat):
        chosen = [("Top activations", int(at)) for v, at in zip(best[i], best_at[i]) if v > 0]
        for j in reversed(range(intervals)):
            lo, hi = float(act_max[i]) * j / intervals, float(act_max[i]) * (j + 1) / intervals
            name = f"Interval {intervals - j}: {lo:.3g} to {hi:.3g}"
            chosen += [(name, int(at)) for key, at in zip(keys[j, i], keys_at[j, i]) if key < float("inf")]
        examples.append(chosen)
    windows = {}
    total = len(token_ids)
    for chosen in examples:
        for _, at in chosen:
            if at not in windows:
                lo, hi = max(0, at - settings["context"]), min(total, at + settings["context"] + 1)
                span = torch.arange(lo, hi)
                windows[at] = span[doc_ids[lo:hi] == doc_ids[at]]
    rows, cols = [], []
    for i, chosen in enumerate(examples):
        for _, at in chosen:
            rows.append(windows[at])
            cols.append(torch.full((len(windows[at]),), i))
    rows_t = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    cols_t = torch.cat(cols) if cols else torch.zeros(0, dtype=torch.long)
    values = torch.zeros(len(rows_t))
    if len(rows_t):
        for start, _, acts in _encoded(tc, cache, point, columns, batch_size, bos):
            sel = (rows_t >= start) & (rows_t < start + len(acts))
            values[sel] = acts[rows_t[sel] - start, cols_t[sel]]

    decode = (lambda t: tokenizer.decode([t])) if tokenizer is not None else str
    effects = unembed @ tc.W_dec[columns].detach().float().T if unembed is not None else None  # [vocab, F]
    records, cursor = {}, 0
    for i, feature in enumerate(indices):
        quantiles: dict[str, list[dict]] = {}
        seen = set()
        for name, at in examples[i]:
            span = windows[at]
            acts = values[cursor : cursor + len(span)]
            cursor += len(span)
            quantiles.setdefault(name, []).append(
                {
                    "tokens": [decode(int(t)) for t in token_ids[span]],
                    "tokens_acts_list": [round(float(a), 4) for a in acts],
                    "train_token_ind": int((span == at).nonzero()[0]),
                    "is_repeated_datapoint": at in seen,
                }
            )
            seen.add(at)
        records[feature] = {
            "transcoder_id": transcoder_id,
            "index": feature,
            "examples_quantiles": [{"quantile_name": k, "examples": v} for k, v in quantiles.items()],
            "top_logits": _logit_tokens(effects, i, logits, decode, largest=True),
            "bottom_logits": _logit_tokens(effects, i, logits, decode, largest=False),
            "act_min": 0.0,
            "act_max": round(float(act_max[i]), 4),
            "quantile_values": _percentiles(hist[i], float(act_max[i])),
            "histogram": [float(c) for c in hist[i].view(bins, _FINE).sum(1)],
            "activation_frequency": float(count[i]) / max(total, 1),
        }
    return records


def _percentiles(fine_hist: torch.Tensor, top: float) -> list[float]:
    """The 1st to 100th percentiles of the activations a fine histogram over (0, top] counts
    (each the upper edge of its bin)."""
    n = float(fine_hist.sum())
    if n == 0:
        return []
    cumulative = fine_hist.cumsum(0) / n
    cells = torch.searchsorted(cumulative, torch.arange(1, 101) / 100 - 1e-9).clamp(max=len(fine_hist) - 1)
    return [round(float(c + 1) * top / len(fine_hist), 4) for c in cells]


def _logit_tokens(effects, i: int, n: int, decode, *, largest: bool) -> list[str]:
    if effects is None:
        return []
    ids = effects[:, i].topk(min(n, len(effects)), largest=largest).indices
    return [decode(int(t)) for t in ids]


# --- reading -----------------------------------------------------------------------------------


def read_index(folder: str | Path) -> list[dict]:
    folder = Path(folder)
    try:
        index = json.loads(gzip.decompress((folder / INDEX).read_bytes()))
    except FileNotFoundError:
        raise MolabError(f"{folder} holds no feature files ({INDEX} is missing)") from None
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise MolabError(f"{folder / INDEX} is not a gzip'd JSON feature index ({e})") from None
    if not isinstance(index, list) or not all(isinstance(e, dict) and "offsets" in e for e in index):
        raise MolabError(f"{folder / INDEX}: expected a list of {{filename, offsets}} per layer")
    return index


def read_feature(folder: str | Path, layer: int, index: int, *, layers: list[dict] | None = None) -> dict:
    """One feature's record; `layers` is the folder's index if already read."""
    folder = Path(folder)
    layers = layers if layers is not None else read_index(folder)
    entry = layers[layer] if 0 <= layer < len(layers) else {"filename": None, "offsets": []}
    offsets = entry["offsets"]
    if not entry.get("filename") or not 0 <= index < len(offsets) - 1 or offsets[index] == offsets[index + 1]:
        raise MolabError(f"{folder} holds no feature {index} of layer {layer}")
    with open(folder / entry["filename"], "rb") as f:
        f.seek(offsets[index])
        data = f.read(offsets[index + 1] - offsets[index])
    (length,) = struct.unpack("<I", data[:4])
    try:
        return json.loads(zlib.decompress(data[4 : 4 + length], wbits=47))  # gzip or zlib
    except (zlib.error, ValueError) as e:
        raise MolabError(f"{folder / entry['filename']}: feature {index} is damaged ({e})") from None


def read_features(folder: str | Path, wanted: dict[int, list[int]]) -> dict[str, dict]:
    """The records the folder holds of `wanted` (layer -> indices), keyed "{layer}_{index}";
    those it lacks are left out."""
    layers = read_index(folder)
    out = {}
    for layer, indices in wanted.items():
        offsets = layers[layer]["offsets"] if 0 <= layer < len(layers) else []
        for index in indices:
            if 0 <= index < len(offsets) - 1 and offsets[index] < offsets[index + 1]:
                out[f"{layer}_{index}"] = read_feature(folder, layer, index, layers=layers)
    return out
