"""Evaluating trained transcoders: per layer on held-out cached tokens, and the replacement
model's next-token loss (`molab circuits train` reports both).

Per layer (the saved JumpReLU form, on the held-out shards of the group's cache):
- FVU: squared error of the predicted MLP output over the total variance of the real one;
- L0: mean active features per token; dead share: features active on no held-out token.

For the set: the model's mean next-token loss on held-out documents with every MLP that has a
transcoder replaced by it (its output = transcoder(the MLP's input), errors dropped: the
replacement model of "Circuit Tracing", Ameisen et al. 2025) against the original loss. The
replacement is two edits per layer through `molab.models.hooks`: the `mlp_in` point records
the MLP's input, the `mlp_out` point swaps the MLP's output for the transcoder's. A document's
BOS that the cache skipped keeps its real MLP outputs (no transcoder saw one in training).
"""

from __future__ import annotations

import torch

from molab.audit.features import shard_tensor
from molab.circuits.transcoder import Transcoder, TranscoderSet
from molab.errors import MolabError
from molab.models.activations import ActivationCache, encode


@torch.no_grad()
def evaluate_layer(tc: Transcoder, pairs) -> dict[str, float]:
    """FVU, mean L0 and dead share of `tc` over `pairs` of (mlp_in, mlp_out) [n, d_model]."""
    err = sumsq = l0 = 0.0
    total = 0
    mean = torch.zeros(tc.d_model, dtype=torch.float64)
    fired = torch.zeros(tc.d_transcoder, dtype=torch.bool)
    for x, y in pairs:
        f = tc.encode(x)  # [n, d_transcoder]
        err += float((y - tc.decode(f, x)).double().pow(2).sum())
        sumsq += float(y.double().pow(2).sum())
        mean += y.double().sum(0)
        total += len(x)
        l0 += float((f > 0).sum())
        fired |= (f > 0).any(0)
    if not total:
        raise MolabError("no held-out tokens to evaluate the transcoder on")
    variance = sumsq - float(mean.pow(2).sum()) / total
    return {
        "fvu": round(err / max(variance, 1e-12), 4),
        "l0": round(l0 / total, 2),
        "dead_share": round(1 - float(fired.float().mean()), 4),
        "tokens": total,
    }


def heldout_doc_ids(cache: ActivationCache, point: str, shards: list[dict], limit: int) -> list[int]:
    """Up to `limit` corpus rows whose stored tokens start in the held-out `shards` (their first
    stored position is 0, or 1 after a skipped BOS), in stored order."""
    found: list[int] = []
    for entry in shards:
        doc = shard_tensor(cache, entry, "doc_ids")  # [n]
        pos = shard_tensor(cache, entry, "positions")  # [n]
        starts = doc[(pos == 0) | ((pos == 1) & bool(cache.index.get("skip_bos")))]
        for d in starts.tolist():
            if d not in found:
                found.append(d)
            if len(found) >= limit:
                return found
    return found


@torch.no_grad()
def replacement_loss(
    model, tokenizer, tset: TranscoderSet, docs: list, *, max_length: int, skip_bos: bool, batch_size: int = 8
) -> dict:
    """Mean next-token loss over `docs` (molab Prompts) of the model and of its replacement
    model (every MLP with a transcoder in `tset` replaced by it), and the tokens counted."""
    from molab.models.hooks import Replace, intervene

    device = next(model.parameters()).device
    tset = tset.to(device)
    encoded = [encode(tokenizer, d)[0][:max_length] for d in docs]
    encoded = [ids for ids in encoded if len(ids) > 1]
    state: dict = {}  # this batch's mask of replaced positions, and each layer's MLP input
    edits = {}
    for layer in tset.layers:

        def record(x: torch.Tensor, layer: int = layer) -> torch.Tensor:  # x: [batch, seq, d_model]
            state[layer] = x
            return x

        def swap(y: torch.Tensor, layer: int = layer) -> torch.Tensor:
            out = tset[layer](state[layer].float()).to(y.dtype)  # [batch, seq, d_model]
            return torch.where(state["replace"][..., None], out, y)

        edits[f"layers.{layer}.mlp_in"] = Replace(record)
        edits[f"layers.{layer}.mlp_out"] = Replace(swap)
    totals = {"loss": 0.0, "replacement_loss": 0.0}
    count = 0
    for i in range(0, len(encoded), batch_size):
        rows = encoded[i : i + batch_size]
        ids = torch.full((len(rows), max(map(len, rows))), tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros_like(ids)
        replace = torch.zeros(ids.shape, dtype=torch.bool)
        for r, toks in enumerate(rows):
            ids[r, : len(toks)], mask[r, : len(toks)] = torch.tensor(toks), 1
            first = int(skip_bos and toks[0] == tokenizer.bos_token_id)
            replace[r, first : len(toks)] = True
        ids, mask = ids.to(device), mask.to(device)
        state["replace"] = replace.to(device)
        labels = ids.masked_fill(mask == 0, -100)
        n = int((labels[:, 1:] != -100).sum())
        totals["loss"] += float(model(input_ids=ids, attention_mask=mask, labels=labels).loss) * n
        with intervene(model, edits):
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
        totals["replacement_loss"] += float(out.loss) * n
        count += n
    tset.cpu()
    if not count:
        return {}
    result = {k: round(v / count, 4) for k, v in totals.items()}
    return result | {"loss_increase": round(result["replacement_loss"] - result["loss"], 4), "tokens": count}
