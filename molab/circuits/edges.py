"""Active features and the engine that reads adjacency rows off batched backward passes of
the split replacement model (see `molab.circuits.attribution` for the algorithm and why it is
fast: explicit per-layer backward passes, rows joining at their own layer, positions cut to
the ones a row reaches, one batched matmul per layer for its feature edges)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from molab.circuits.replacement import ReplacementState, Replayed
from molab.circuits.transcoder import TranscoderSet


@dataclass
class ActiveFeatures:
    """Active features sorted by (layer, position, feature); per layer, their activation x
    decoder rows padded by position, so reading a layer's edges is one batched matmul."""

    index: torch.Tensor  # [n, 3] long: layer, position, feature
    values: torch.Tensor  # [n] activations
    starts: list[int]  # n_layers + 1 offsets into index, layer by layer
    decoders: list[torch.Tensor]  # per layer [n_pos, most at one position, d_model]
    slots: list[torch.Tensor]  # per layer [its features]: position * most + rank at its position
    encoders: torch.Tensor  # [n, d_model]: each feature's encoder row (its row's target direction)


@torch.no_grad()
def encode(state: ReplacementState, transcoders: TranscoderSet, zero_bos: bool):
    """Active features and error vectors [n_layers, n_pos, d_model] (a layer without a
    transcoder: its whole MLP output is error)."""
    n_pos, d = state.n_pos, state.mlp_in.shape[-1]
    index, values, decoders, slots, starts, encoders = [], [], [], [], [0], []
    errors = state.mlp_out.clone()
    for layer in range(state.n_layers):
        pos = feat = a = torch.zeros(0, dtype=torch.long)
        if layer in transcoders:
            t = transcoders[layer]
            x = state.mlp_in[layer]
            acts = t.encode(x)  # [n_pos, d_transcoder]
            errors[layer] -= t.decode(acts, x)
            if zero_bos:
                acts[0] = 0
            pos, feat = acts.nonzero(as_tuple=True)
            a = acts[pos, feat]
        counts = torch.bincount(pos, minlength=n_pos)
        most = int(counts.max()) if len(pos) else 0
        rank = torch.arange(len(pos)) - (counts.cumsum(0) - counts)[pos]
        slot = pos * most + rank
        padded = torch.zeros(n_pos * most, d)
        if len(pos):
            padded[slot] = a[:, None] * t.W_dec[feat]
        encoders.append(t.W_enc[feat].float() if len(pos) else torch.zeros(0, d))
        index.append(torch.stack([torch.full_like(pos, layer), pos, feat], 1))
        values.append(a.float())
        decoders.append(padded.view(n_pos, most, d))
        slots.append(slot)
        starts.append(starts[-1] + len(pos))
    if zero_bos:
        errors[:, 0] = 0
    feats = ActiveFeatures(torch.cat(index), torch.cat(values), starts, decoders, slots, torch.cat(encoders))
    return feats, errors


class RowEngine:
    """Computes adjacency rows [batch, n_active + n_layers * n_pos + n_pos] by batched
    backward passes of the split replacement model."""

    def __init__(self, replayed: Replayed, linear: list, feats: ActiveFeatures, errors, embeddings):
        self.r, self.linear, self.feats, self.errors, self.embeddings = (
            replayed,
            linear,
            feats,
            errors,
            embeddings,
        )
        self.n_layers, self.n_pos, self.d_model = errors.shape
        self.n_active = len(feats.index)
        self.n_cols = self.n_active + (self.n_layers + 1) * self.n_pos

    def rows(self, block: torch.Tensor, layers: torch.Tensor, positions: torch.Tensor, vectors: torch.Tensor):
        """Write into `block` [B, n_cols] (zeros) the rows of targets injected at `layers` [B]
        (sorted descending; n_layers = the final norm's output at the last position),
        `positions` [B], along `vectors` [B, d_model]."""
        r, n_layers, d = self.r, self.n_layers, self.d_model
        at_or_above = [int((layers >= i).sum()) for i in range(n_layers + 1)]
        g = torch.zeros(0, 0, d)  # [rows above, positions reached, d_model]: gradient at a layer's output
        if at_or_above[n_layers]:
            seed = vectors[: at_or_above[n_layers], None, None, :]  # [n, 1, 1, d_model]
            (g,) = torch.autograd.grad(
                r.final, r.leaves[n_layers], seed, is_grads_batched=True, retain_graph=True
            )
            g = g[:, 0]
        for layer in reversed(range(n_layers)):
            above, n = at_or_above[layer + 1], at_or_above[layer]
            if above:
                self._read_layer(block, layer, g)
            if n == 0:
                continue
            linear = self.linear[layer]
            n_pos = int(positions[:n].max()) + 1 if linear is not None else self.n_pos
            g_out = g
            if g.shape[:2] != (n, n_pos):
                g_out = g.new_zeros(n, n_pos, d)
                g_out[:above, : g.shape[1]] = g
            g_in = None
            if n > above:
                g_in = g.new_zeros(n, n_pos, d)
                g_in[torch.arange(above, n), positions[above:n]] = vectors[above:n]
            if linear is not None:
                g = linear.vjp(g_out, g_in, n_pos)
                continue
            outputs, seeds = [r.outputs[layer]], [g_out[:, None]]
            if g_in is not None:
                outputs.append(r.mlp_in[layer])
                seeds.append(g_in[:, None])
            (g,) = torch.autograd.grad(
                outputs, r.leaves[layer], seeds, is_grads_batched=True, retain_graph=True
            )
            g = g[:, 0]
        tokens = self.n_active + n_layers * self.n_pos
        n_pos = g.shape[1]
        block[: len(g), tokens : tokens + n_pos] = torch.einsum("bpd,pd->bp", g, self.embeddings[:n_pos])

    def _read_layer(self, block: torch.Tensor, layer: int, grad: torch.Tensor) -> None:
        """Edges from layer `layer`'s features and errors, given the gradient at its MLP output
        (= at its output: the MLP's output is added to the residual stream) [rows, positions
        reached, d_model]."""
        n, n_pos = grad.shape[:2]
        dec, slots, start = self.feats.decoders[layer], self.feats.slots[layer], self.feats.starts[layer]
        if dec.shape[1]:
            edges = torch.bmm(grad.transpose(0, 1), dec[:n_pos].transpose(1, 2))  # [n_pos, n, most]
            reached = int((slots < n_pos * dec.shape[1]).sum())  # features at positions < n_pos
            edges = edges.transpose(0, 1).reshape(n, -1)
            block[:n, start : start + reached] = edges[:, slots[:reached]]
        err = self.n_active + layer * self.n_pos
        block[:n, err : err + n_pos] = torch.einsum("bpd,pd->bp", grad, self.errors[layer, :n_pos])
