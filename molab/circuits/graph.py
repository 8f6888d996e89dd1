"""An attribution graph before pruning: its nodes, its dense adjacency, and its file.

Why one container: the attribution engine (`molab.circuits.attribution`) fills it, pruning and
scores (`molab.circuits.prune`), the frontend JSON and feature files (`molab.circuits.export`),
the viewer and interventions read it. The layout follows circuit-tracer's `Graph` so numbers
carry over between the two tools ("Circuit Tracing", Ameisen et al. 2025):

- nodes, in this order (n = N nodes): the selected features (`features` rows: layer, position,
  feature index; their activations in `activations`), then one error node per (layer,
  position), layer-major (index n_features + layer * n_pos + pos; a layer without a
  transcoder is all error), then one token-embedding node per position, then the logit nodes
  (`logit_tokens`, with their probabilities `logit_probs`);
- `adjacency` [N, N] float32: row = target, column = source; entry (t, s) is the direct effect
  of source s on target t in the local replacement model (a feature's effect on a feature's
  pre-activation, an error's or a token's, on a logit's de-meaned logit); rows of error and
  token nodes are zero (they have no inputs);
- the file: one safetensors file with the tensors, and the rest (prompt, token strings, model,
  transcoder set, settings, timings) as JSON in its metadata (`molab`), so it loads without
  pickle (`weights_only` rules).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from molab.errors import MolabError
from molab.files import atomic_path, check_output_file

FORMAT = "molab-graph/1"
_TENSORS = ("input_ids", "features", "activations", "logit_tokens", "logit_probs", "adjacency")


@dataclass
class Graph:
    prompt: str
    input_ids: torch.Tensor  # [n_pos] long
    tokens: list[str]  # n_pos decoded token strings
    features: torch.Tensor  # [n_features, 3] long: layer, position, feature index
    activations: torch.Tensor  # [n_features] float32
    logit_tokens: torch.Tensor  # [n_logits] long: vocabulary ids
    logit_probs: torch.Tensor  # [n_logits] float32: the model's probabilities
    adjacency: torch.Tensor  # [N, N] float32, rows targets, columns sources
    n_layers: int
    model_name: str
    transcoders: str  # the set's folder (or scan name)
    transcoder_layers: list[int]  # layers that had a transcoder; the rest are error-only
    settings: dict[str, Any] = field(default_factory=dict)  # batch size, max feature rows, ...
    stats: dict[str, Any] = field(default_factory=dict)  # timings, active features, memory

    @property
    def n_pos(self) -> int:
        return len(self.input_ids)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.n_pos

    @property
    def n_logits(self) -> int:
        return len(self.logit_tokens)

    @property
    def n_nodes(self) -> int:
        return self.n_features + self.n_errors + self.n_pos + self.n_logits

    def error_index(self, layer: int, pos: int) -> int:
        return self.n_features + layer * self.n_pos + pos

    def token_index(self, pos: int) -> int:
        return self.n_features + self.n_errors + pos

    def logit_index(self, i: int) -> int:
        return self.n_features + self.n_errors + self.n_pos + i

    def check(self) -> None:
        """Shapes agree (a damaged or hand-edited file fails here, with its reason)."""
        n = self.n_nodes
        if tuple(self.adjacency.shape) != (n, n):
            raise MolabError(f"graph adjacency is {tuple(self.adjacency.shape)}, its nodes need ({n}, {n})")
        if self.features.ndim != 2 or self.features.shape[1] != 3 or len(self.activations) != self.n_features:
            raise MolabError("graph features must be [n, 3] with one activation each")
        if len(self.tokens) != self.n_pos or len(self.logit_probs) != self.n_logits:
            raise MolabError("graph token strings or logit probabilities do not match their ids")

    def save(self, path: str | Path) -> Path:
        """Write the graph atomically to one safetensors file."""
        from safetensors.torch import save_file

        self.check()
        path = Path(path)
        check_output_file(path)
        meta = {
            "format": FORMAT,
            "prompt": self.prompt,
            "tokens": self.tokens,
            "n_layers": self.n_layers,
            "model_name": self.model_name,
            "transcoders": self.transcoders,
            "transcoder_layers": self.transcoder_layers,
            "settings": self.settings,
            "stats": self.stats,
        }
        tensors = {k: getattr(self, k).detach().cpu().contiguous() for k in _TENSORS}
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata={"molab": json.dumps(meta)})
        return path


def load_graph(path: str | Path) -> Graph:
    """A graph file written by `Graph.save`; one line naming the file when it is not one."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MolabError(f"{path}: no such graph file")
    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("molab", "null"))
            tensors = {k: f.get_tensor(k) for k in _TENSORS}
    except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise MolabError(f"{path} is not a molab graph file ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MolabError(f"{path} is not a molab graph file ({FORMAT})")
    graph = Graph(
        prompt=meta["prompt"],
        tokens=meta["tokens"],
        n_layers=meta["n_layers"],
        model_name=meta["model_name"],
        transcoders=meta["transcoders"],
        transcoder_layers=meta["transcoder_layers"],
        settings=meta.get("settings", {}),
        stats=meta.get("stats", {}),
        **tensors,
    )
    graph.check()
    return graph
