"""Attribution graphs: the direct effects between active features, error nodes, token
embeddings and logit targets of one prompt, on the local replacement model.

The algorithm is circuit-tracer's ("Circuit Tracing", Ameisen et al. 2025;
`circuit_tracer/attribution/attribute_nnsight.py`), so both tools give the same graph:
nodes are the active features (the first position's zeroed), one error node per (layer,
position), one token node per position and the logit targets (`molab.circuits.targets`);
a row of the adjacency is a target node, read off one backward pass of the frozen replacement
model (`molab.circuits.replacement`) started from that target's value (a feature's
pre-activation: its encoder row at its MLP input; a logit: its de-meaned unembedding row at
the final norm's output). The gradient at layer l's MLP output, dotted with a source feature's
activation x decoder row, is that edge; with an error vector, an error edge; the gradient at
the embeddings dotted with a token's embedding, a token edge. Logit rows come first, then
feature rows in order of estimated influence on the logits (re-ranked every 4 batches), up to
`max_feature_nodes`.

How it differs from circuit-tracer, for speed and memory (same numbers):
- one forward at batch 1, not a batch-expanded one: the replay forward cuts the graph at each
  layer's input (`replay(split=True)`), and a batch of rows is one batched vector-Jacobian
  product per layer (`torch.autograd.grad(..., is_grads_batched=True)`), through the linear
  paths only (V and O with frozen patterns, frozen norms, the skip path);
- a batch's rows are sorted by their target's layer, and only rows whose target lies above a
  layer go through it: a backward from a layer-l feature costs l layers, not all of them;
- influence is computed in one pass down the layers (rows of one layer never feed each other,
  so processing layers top-down sums the series A + A^2 + ... exactly), not by power iteration
  over a normalised copy of the rows;
- memory is bounded: the rows computed so far are stored per target layer in blocks holding
  only the columns that can carry an edge (sources below the target: `RowStore`), float32,
  freed layer by layer while the final [N, N] adjacency is filled; before any work, the
  feature rows are capped so that rows (counted at full width, an upper bound) and adjacency
  fit `max_memory_gb` (long prompts get fewer rows, recorded in the graph's stats, rather
  than running out of memory), and no [features x features] matrix exists beyond those rows.
"""

from __future__ import annotations

import time

import torch
from pydantic import BaseModel, ConfigDict, Field

from molab.circuits.edges import RowEngine, encode
from molab.circuits.graph import Graph
from molab.circuits.replacement import linear_layers, record, replay
from molab.circuits.targets import LogitTargets, logit_targets, prompt_ids
from molab.circuits.transcoder import TranscoderSet
from molab.errors import MolabError

UPDATE_INTERVAL = 4  # batches between influence re-rankings (circuit-tracer's default)
BLOCK_BYTES = 48 * 2**20  # above glibc's largest mmap threshold (32 MiB): freed blocks return to the system


class AttributionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_n_logits: int = Field(10, ge=1, description="At most this many logit targets.")
    desired_logit_prob: float = Field(
        0.95, gt=0, le=1, description="Top logits up to this cumulative probability."
    )
    targets: list[str] | None = Field(
        None, description="Tokens (or ids) to attribute instead of the top logits."
    )
    batch_size: int = Field(128, ge=1, description="Rows per batched backward pass.")
    max_feature_nodes: int | None = Field(7500, ge=0, description="Cap on feature rows (None: all active).")
    zero_bos: bool = Field(True, description="Zero the first position's features and error (circuit-tracer).")
    fast_backward: bool = Field(True, description="Explicit per-layer backward where it matches autograd's.")
    max_memory_gb: float = Field(8.0, gt=0, description="Rows and adjacency must fit: caps feature rows.")


class RowStore:
    """The rows computed so far, with what influence ranking needs about each, kept per target
    layer without the columns that cannot hold an edge: a row whose target sits at layer l has
    sources only below it, so it is stored as [features of layers < l | errors of layers < l |
    tokens] (a logit row: every column). That halves the store on average, the largest
    allocation of a graph. Rows live in blocks of at least BLOCK_BYTES (allocations that large
    are mapped and unmapped whole, so untouched rows cost nothing and a freed block's memory goes
    back to the system while the adjacency is filled)."""

    def __init__(self, starts: list[int], n_pos: int, logit_probs: torch.Tensor):
        self.starts, self.n_pos, self.logit_probs = starts, n_pos, logit_probs
        self.n_layers = len(starts) - 1
        self.n_active = starts[-1]
        self.blocks: list[list[torch.Tensor]] = [[] for _ in range(self.n_layers + 1)]  # per layer
        self.used: list[int] = [0] * (self.n_layers + 1)  # rows written in each layer's last block
        self.nodes = [torch.zeros(0, dtype=torch.long) for _ in range(self.n_layers + 1)]
        self.abs_sums = [torch.zeros(0) for _ in range(self.n_layers + 1)]  # each row's sum of |edges|

    def width(self, layer: int) -> int:
        """Stored columns of a row targeting `layer` (n_layers: a logit)."""
        return self.starts[layer] + (layer + 1) * self.n_pos

    def columns(self, layer: int) -> torch.Tensor:
        """The full-row columns [width(layer)] that a row targeting `layer` keeps."""
        errors = self.n_active + torch.arange(layer * self.n_pos)
        tokens = self.n_active + self.n_layers * self.n_pos + torch.arange(self.n_pos)
        return torch.cat([torch.arange(self.starts[layer]), errors, tokens])

    def add(self, rows: torch.Tensor, nodes: torch.Tensor, layers: torch.Tensor) -> None:
        """Store full rows [b, n_cols] of targets `nodes` [b] (feature index, or n_active +
        logit index) at `layers` [b]."""
        for layer in layers.unique().tolist():
            keep = (layers == layer).nonzero(as_tuple=True)[0]
            f, e = self.starts[layer], self.n_active + layer * self.n_pos
            compact = torch.cat([rows[keep, :f], rows[keep, self.n_active : e], rows[keep, -self.n_pos :]], 1)
            self.nodes[layer] = torch.cat([self.nodes[layer], nodes[keep]])
            self.abs_sums[layer] = torch.cat([self.abs_sums[layer], compact.abs().sum(1).clamp(min=1e-8)])
            while len(compact):
                blocks, width = self.blocks[layer], compact.shape[1]
                if not blocks or self.used[layer] == len(blocks[-1]):
                    blocks.append(torch.empty(max(1, -(-BLOCK_BYTES // (4 * max(width, 1)))), width))
                    self.used[layer] = 0
                block, used = blocks[-1], self.used[layer]
                n = min(len(compact), len(block) - used)
                block[used : used + n] = compact[:n]
                self.used[layer] += n
                compact = compact[n:]

    def rows(self, layer: int):
        """A layer's stored rows, block by block: [rows, width(layer)] views."""
        for i, block in enumerate(self.blocks[layer]):
            yield block[: self.used[layer]] if i == len(self.blocks[layer]) - 1 else block

    def free(self, layer: int) -> None:
        self.blocks[layer] = []

    @torch.no_grad()
    def influence(self) -> torch.Tensor:
        """Each active feature's influence on the logits through the rows so far [n_active]:
        p (A + A^2 + ...) with A the row-normalised |rows|, summed one layer at a time from the
        top (a row's weight is final once every layer above it is done)."""
        x = torch.zeros(self.n_active + len(self.logit_probs))
        x[self.n_active :] = self.logit_probs
        for layer in range(self.n_layers, 0, -1):
            f, done = self.starts[layer], 0
            for block in self.rows(layer):
                nodes = self.nodes[layer][done : done + len(block)]
                w = x[nodes] / self.abs_sums[layer][done : done + len(block)]
                x[:f] += w @ block[:, :f].abs()
                done += len(block)
        return x[: self.n_active]


def feature_row_cap(n_active: int, n_cols: int, n_other: int, n_logits: int, want: int, budget: float) -> int:
    """Most feature rows r <= want whose rows and final adjacency fit `budget` bytes."""

    def need(r: int) -> float:
        return 4.0 * ((r + n_logits) * n_cols + (r + n_other) ** 2)

    if need(0) > budget:
        raise MolabError(
            f"this prompt's graph needs {need(0) / 2**30:.1f} GB before any feature row "
            f"(max_memory_gb {budget / 2**30:g}): use a shorter prompt or raise the limit"
        )
    lo, hi = 0, want
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if need(mid) <= budget else (lo, mid - 1)
    return lo


def check_prompt(model, ids: torch.Tensor) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and len(ids) > limit:
        raise MolabError(
            f"the prompt is {len(ids)} tokens (with its leading special token); "
            f"the model's context is {limit}"
        )


def attribute(
    model,
    tokenizer,
    transcoders: TranscoderSet,
    prompt: str | list[int],
    config: AttributionConfig | None = None,
) -> Graph:
    """The attribution graph of `prompt` (unpruned; see the module docstring); `config`
    defaults to `AttributionConfig()`."""
    config = config or AttributionConfig()
    times: dict[str, float] = {}
    clock = time.perf_counter()
    transcoders.check_model(model, "transcoders")
    ids = prompt_ids(tokenizer, prompt)
    check_prompt(model, ids)

    state = record(model, ids)
    feats, errors = encode(state, transcoders, config.zero_bos)
    targets = logit_targets(
        model,
        tokenizer,
        state.last_logits,
        max_n_logits=config.max_n_logits,
        desired_logit_prob=config.desired_logit_prob,
        names=config.targets,
    )
    replayed = replay(model, state, transcoders, split=True)
    linear = (
        linear_layers(model, state, transcoders, replayed)
        if config.fast_backward
        else [None] * state.n_layers
    )
    engine = RowEngine(replayed, linear, feats, errors, state.embeddings)
    n_active, n_logits, n_layers, n_pos = engine.n_active, len(targets.tokens), engine.n_layers, engine.n_pos
    want = n_active if config.max_feature_nodes is None else min(config.max_feature_nodes, n_active)
    n_other = (n_layers + 1) * n_pos + n_logits
    n_rows = feature_row_cap(n_active, engine.n_cols, n_other, n_logits, want, config.max_memory_gb * 2**30)
    times["setup_s"] = time.perf_counter() - clock

    store = RowStore(engine.feats.starts, n_pos, targets.probs)
    with torch.no_grad():
        _logit_rows(engine, store, targets, config.batch_size)
    times["logit_rows_s"] = time.perf_counter() - clock - sum(times.values())
    visited = _feature_rows(engine, store, n_rows, config.batch_size)
    times["feature_rows_s"] = time.perf_counter() - clock - sum(times.values())
    adjacency, selected = _assemble(store, visited, n_other, n_logits)
    times["assemble_s"] = time.perf_counter() - clock - sum(times.values())
    times["total_s"] = time.perf_counter() - clock

    ids_list = ids.tolist()
    return Graph(
        prompt=prompt if isinstance(prompt, str) else tokenizer.decode(ids_list),
        input_ids=ids,
        tokens=[tokenizer.decode([i]) for i in ids_list],
        features=feats.index[selected],
        activations=feats.values[selected].float(),
        logit_tokens=targets.tokens,
        logit_probs=targets.probs,
        adjacency=adjacency,
        n_layers=n_layers,
        model_name=str(getattr(model.config, "name_or_path", "") or type(model).__name__),
        transcoders=str(transcoders.record.get("path") or transcoders.record.get("scan") or ""),
        transcoder_layers=list(transcoders.layers),
        settings=config.model_dump(),
        stats={
            **times,
            "active_features": n_active,
            "feature_rows": int(visited.sum()),
            "row_cap": n_rows,
            "fast_layers": sum(x is not None for x in linear),
        },
    )


def _logit_rows(engine: RowEngine, store: RowStore, targets: LogitTargets, batch_size: int) -> None:
    n = len(targets.tokens)
    for start in range(0, n, batch_size):
        vectors = targets.directions[start : start + batch_size].float()
        b = len(vectors)
        layers = torch.full((b,), engine.n_layers)
        block = torch.zeros(b, engine.n_cols)
        engine.rows(block, layers, torch.full((b,), engine.n_pos - 1), vectors)
        store.add(block, engine.n_active + torch.arange(start, start + b), layers)


def _feature_rows(engine: RowEngine, store: RowStore, n_rows: int, batch_size: int) -> torch.Tensor:
    """Feature rows, most influential first; returns which features were visited [n_active]."""
    index = engine.feats.index
    visited = torch.zeros(engine.n_active, dtype=torch.bool)
    scratch = torch.zeros(min(batch_size, n_rows), engine.n_cols)  # one batch's full rows
    done = 0
    while done < n_rows:
        if n_rows == engine.n_active:
            pending = torch.arange(engine.n_active)
        else:
            rank = store.influence().argsort(descending=True)
            pending = rank[~visited[rank]][: min(UPDATE_INTERVAL * batch_size, n_rows - done)]
        # batches of nearby positions (a backward from position p reaches positions <= p only),
        # each sorted by layer, top first (rows join the backward at their own layer)
        pending = pending[index[pending, 1].argsort(stable=True)]
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            batch = batch[index[batch, 0].argsort(descending=True, stable=True)]
            layers, positions, feats = index[batch].unbind(1)
            vectors = engine.feats.encoders[batch]  # [batch, d_model]
            block = scratch[: len(batch)].zero_()
            engine.rows(block, layers, positions, vectors)
            store.add(block, batch, layers)
            visited[batch] = True
            done += len(batch)
    return visited


@torch.no_grad()
def _assemble(store: RowStore, visited: torch.Tensor, n_other: int, n_logits: int):
    """The [N, N] adjacency (node order: selected features, errors, tokens, logits), filled
    layer by layer while the row blocks are freed; and the selected features' indices."""
    n_active, n_layers, n_pos = store.n_active, store.n_layers, store.n_pos
    selected = visited.nonzero(as_tuple=True)[0]
    n_sel = len(selected)
    n = n_sel + n_other
    rank = torch.full((n_active + n_logits,), -1, dtype=torch.long)
    rank[selected] = torch.arange(n_sel)
    rank[n_active:] = torch.arange(n - n_logits, n)
    adjacency = torch.empty(n, n)  # rows zeroed as they are filled: pages are touched as blocks are freed
    adjacency[n_sel : n - n_logits] = 0  # error and token nodes have no incoming edges
    for layer in range(n_layers + 1):
        f = store.starts[layer]
        sel = int(torch.searchsorted(selected, f))  # selected sources below this layer
        kept = torch.cat([selected[:sel], f + torch.arange(layer * n_pos)])  # stored columns
        cols = torch.cat([torch.arange(sel), n_sel + torch.arange(layer * n_pos)])  # adjacency columns
        token_cols = slice(n_sel + n_layers * n_pos, n - n_logits)
        done = 0
        for block in store.rows(layer):
            dst = rank[store.nodes[layer][done : done + len(block)]]
            adjacency[dst] = 0
            adjacency[dst[:, None], cols] = block[:, kept]
            adjacency[dst, token_cols] = block[:, -n_pos:]
            done += len(block)
        store.free(layer)
    return adjacency, selected
