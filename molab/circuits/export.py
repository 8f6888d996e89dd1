"""An attribution graph as the JSON of circuit-tracer's and Neuronpedia's graph viewer.

Why: that frontend schema is what the open viewers read (circuit-tracer's local server,
Neuronpedia's hosted one), so a graph molab computes opens there, and molab's own offline viewer
(`molab.circuits.viewer`) reads the same file. The fields and conventions are circuit-tracer's
(`circuit_tracer/frontend/graph_models.py`, `utils/create_graph_files.py`); pydantic checks a
file read back, so a broken one fails with one line naming the file and the field.

The file (`<slug>.json`) holds only the pruned graph (`molab.circuits.prune`):
- `metadata`: slug, scan, transcoder_list, prompt_tokens, prompt, node_threshold,
  schema_version 1; and molab's additions, which viewers ignore: pruning_settings,
  generation_settings, info (the generator) and `molab` (model, layers, transcoder layers, the
  full and pruned replacement and completeness scores);
- `qParams`: pinnedIds, supernodes (each `[label, node_id, ...]`), linkType, clickedId, sg_pos:
  the viewer's state, which molab's viewer saves back;
- `nodes`: features `"{layer}_{feature}_{pos}"` (`feature` = Cantor pairing of layer and
  feature index, type "cross layer transcoder" as circuit-tracer writes for every transcoder,
  with the activation), errors `"0_{layer}_{pos}"` (feature -1, "mlp reconstruction error"),
  tokens `"E_{token id}_{pos}"` ("embedding"), logits `"{n_layers + 1}_{token id}_{last pos}"`
  ("logit", clerp `Output "tok" (p=0.123)`, the first is the target logit); `influence` is the
  node's cumulative influence share;
- `links`: source, target, weight (the raw direct effect) of every edge kept.

The index `graph-metadata.json` beside it is `{"graphs": [metadata, ...]}`, one entry per slug.
circuit-tracer's error and feature ids can coincide (a layer-0 feature whose index equals an
error's layer, at the same position); molab keeps the convention and warns when it happens.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from molab.circuits.graph import Graph
from molab.circuits.prune import Pruned, graph_scores, prune
from molab.errors import MolabError
from molab.files import check_writable_dir, read_text_file, write_json

log = logging.getLogger(__name__)

INDEX = "graph-metadata.json"
SCHEMA_VERSION = 1
FEATURE_TYPE = "cross layer transcoder"  # what circuit-tracer writes for every transcoder kind
ERROR_TYPE = "mlp reconstruction error"
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def cantor(layer: int, index: int) -> int:
    """The frontend's single feature number of (layer, index)."""
    return (layer + index) * (layer + index + 1) // 2 + index


def cantor_unpair(z: int) -> tuple[int, int]:
    """(layer, index) of a Cantor-paired feature number."""
    w = int(((8 * z + 1) ** 0.5 - 1) // 2)
    while w * (w + 1) // 2 > z:  # float rounding on very large numbers
        w -= 1
    while (w + 1) * (w + 2) // 2 <= z:
        w += 1
    index = z - w * (w + 1) // 2
    return w - index, index


# --- the schema, as the frontend reads it ------------------------------------------------------


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Metadata(_Open):
    slug: str
    scan: str
    transcoder_list: list[str]
    prompt_tokens: list[str]
    prompt: str
    node_threshold: float | None = None
    schema_version: int | None = SCHEMA_VERSION


class QParams(_Open):
    pinnedIds: list[str]
    supernodes: list[list[str]]
    linkType: str
    clickedId: str
    sg_pos: str


class Node(_Open):
    node_id: str
    feature: int
    layer: str
    ctx_idx: int
    feature_type: str
    token_prob: float = 0.0
    is_target_logit: bool = False
    run_idx: int = 0
    reverse_ctx_idx: int = 0
    jsNodeId: str
    clerp: str = ""
    influence: float | None = None
    activation: float | None = None


class Link(_Open):
    source: str
    target: str
    weight: float


class GraphFile(_Open):
    metadata: Metadata
    qParams: QParams
    nodes: list[Node]
    links: list[Link]


def empty_qparams() -> dict[str, Any]:
    return {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}


def check_qparams(qparams: Any, where: str) -> dict[str, Any]:
    """`qparams` if it has the viewer state's fields; a MolabError naming `where` otherwise."""
    try:
        return QParams.model_validate(qparams).model_dump()
    except ValidationError as e:
        raise MolabError(f"{where}: qParams {_first_error(e)}") from None


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    return f"{loc}: {err['msg']}" if loc else err["msg"]


# --- writing -----------------------------------------------------------------------------------


def _feature_node(layer: int, pos: int, index: int, influence: float, activation: float) -> dict:
    return {
        "node_id": f"{layer}_{index}_{pos}",
        "feature": cantor(layer, index),
        "layer": str(layer),
        "ctx_idx": pos,
        "feature_type": FEATURE_TYPE,
        "token_prob": 0.0,
        "is_target_logit": False,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "jsNodeId": f"{layer}_{index}-0",
        "clerp": "",
        "influence": influence,
        "activation": activation,
    }


def _error_node(layer: int, pos: int, influence: float) -> dict:
    return _feature_node(layer, pos, 0, influence, 0.0) | {
        "node_id": f"0_{layer}_{pos}",
        "feature": -1,
        "feature_type": ERROR_TYPE,
        "jsNodeId": f"{layer}_{pos}-0",
        "activation": None,
    }


def _token_node(pos: int, token_id: int, influence: float) -> dict:
    return _feature_node(0, pos, 0, influence, 0.0) | {
        "node_id": f"E_{token_id}_{pos}",
        "feature": pos,
        "layer": "E",
        "feature_type": "embedding",
        "jsNodeId": f"E_{token_id}-{pos}",
        "activation": None,
    }


def _logit_node(graph: Graph, i: int, text: str) -> dict:
    token_id, prob, pos = int(graph.logit_tokens[i]), float(graph.logit_probs[i]), graph.n_pos - 1
    layer = str(graph.n_layers + 1)
    return _feature_node(0, pos, 0, 0.0, 0.0) | {
        "node_id": f"{layer}_{token_id}_{pos}",
        "feature": token_id,
        "layer": layer,
        "feature_type": "logit",
        "token_prob": prob,
        "is_target_logit": i == 0,
        "jsNodeId": f"L_{token_id}-{pos}",
        "clerp": f'Output "{text}" (p={prob:.3f})',
        "influence": None,
        "activation": None,
    }


def logit_strings(graph: Graph, tokenizer=None) -> list[str]:
    """The logit tokens as text: decoded with `tokenizer`, else the strings the graph's settings
    record (`logit_token_strings`), else `#<id>`."""
    ids = [int(t) for t in graph.logit_tokens]
    if tokenizer is not None:
        return [tokenizer.decode([t]) for t in ids]
    recorded = graph.settings.get("logit_token_strings")
    if isinstance(recorded, list) and len(recorded) == len(ids):
        return [str(s) for s in recorded]
    return [f"#{t}" for t in ids]


def graph_json(
    graph: Graph,
    slug: str,
    pruned: Pruned,
    *,
    node_threshold: float,
    edge_threshold: float,
    scan: str | None = None,
    tokenizer=None,
    scores: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The frontend JSON of `graph` pruned by `pruned` (module docstring)."""
    f, e, p = graph.n_features, graph.n_errors, graph.n_pos
    influence = pruned.cumulative_scores.tolist()
    texts = logit_strings(graph, tokenizer)
    nodes: dict[int, dict] = {}
    for i in pruned.node_mask.nonzero().flatten().tolist():
        if i < f:
            layer, pos, index = graph.features[i].tolist()
            nodes[i] = _feature_node(layer, pos, index, influence[i], float(graph.activations[i]))
        elif i < f + e:
            layer, pos = divmod(i - f, p)
            nodes[i] = _error_node(layer, pos, influence[i])
        elif i < f + e + p:
            pos = i - f - e
            nodes[i] = _token_node(pos, int(graph.input_ids[pos]), influence[i])
        else:
            nodes[i] = _logit_node(graph, i - f - e - p, texts[i - f - e - p])
    targets, sources = pruned.edge_mask.nonzero(as_tuple=True)
    weights = graph.adjacency[targets, sources].tolist()
    links = [
        {"source": nodes[s]["node_id"], "target": nodes[t]["node_id"], "weight": w}
        for t, s, w in zip(targets.tolist(), sources.tolist(), weights)
    ]
    ids = [n["node_id"] for n in nodes.values()]
    if len(set(ids)) < len(ids):
        log.warning("graph %s: some feature and error node ids coincide (circuit-tracer's id scheme)", slug)
    transcoders = str(graph.transcoders)
    if scan is None:
        scan = str(Path(transcoders).resolve()) if Path(transcoders).is_dir() else transcoders
    metadata = {
        "slug": slug,
        "scan": scan,
        "transcoder_list": [],
        "prompt_tokens": list(graph.tokens),
        "prompt": graph.prompt,
        "node_threshold": node_threshold,
        "schema_version": SCHEMA_VERSION,
        "pruning_settings": {"node_threshold": node_threshold, "edge_threshold": edge_threshold},
        "generation_settings": dict(graph.settings),
        "info": {"generator": {"name": "molab"}},
        "molab": {
            "model_name": graph.model_name,
            "n_layers": graph.n_layers,
            "transcoders": transcoders,
            "transcoder_layers": list(graph.transcoder_layers),
            "scores": scores or {},
        },
    }
    return {"metadata": metadata, "qParams": empty_qparams(), "nodes": list(nodes.values()), "links": links}


def check_slug(slug: str) -> str:
    if not _SLUG.fullmatch(slug):
        raise MolabError(f"slug {slug!r}: use letters, digits, '.', '_' and '-' (it names a file)")
    return slug


def write_graph_files(
    graph: Graph,
    out_dir: str | Path,
    slug: str,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    *,
    scan: str | None = None,
    tokenizer=None,
) -> Path:
    """Prune `graph`, write `<slug>.json` in `out_dir` and add (or replace) its entry in the
    folder's `graph-metadata.json`; both atomically. Returns the graph file's path. An existing
    `<slug>.json` or index that is not a graph file or index is left alone (an error)."""
    out_dir = Path(out_dir)
    check_slug(slug)
    check_writable_dir(out_dir, f"graph files in {out_dir}")
    path, index_path = out_dir / f"{slug}.json", out_dir / INDEX
    if path.exists():
        read_graph_json(path)  # only a graph file is replaced
    index = read_index(index_path) if index_path.exists() else {"graphs": []}
    pruned = prune(graph, node_threshold, edge_threshold)
    full, kept = graph_scores(graph), graph_scores(graph, pruned)
    scores = full | {f"pruned_{k}": v for k, v in kept.items()}
    data = graph_json(
        graph,
        slug,
        pruned,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
        scan=scan,
        tokenizer=tokenizer,
        scores=scores,
    )
    write_json(path, data)
    index["graphs"] = [g for g in index["graphs"] if g.get("slug") != slug] + [data["metadata"]]
    write_json(index_path, index)
    return path


# --- reading -----------------------------------------------------------------------------------


def _load_json(path: Path, kind: str) -> Any:
    try:
        return json.loads(read_text_file(path, kind))
    except json.JSONDecodeError as e:
        raise MolabError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None


def read_index(path: str | Path) -> dict[str, Any]:
    """A `graph-metadata.json` ({"graphs": [metadata, ...]})."""
    path = Path(path)
    data = _load_json(path, "graph index")
    if not (isinstance(data, dict) and isinstance(data.get("graphs"), list)):
        raise MolabError(f'{path} is not a graph index: expected {{"graphs": [...]}}')
    if not all(isinstance(g, dict) for g in data["graphs"]):
        raise MolabError(f"{path}: every entry of graphs should be an object")
    return data


def file_model(data: dict[str, Any]) -> str | None:
    """The model a graph JSON records (molab's files do; circuit-tracer's do not)."""
    return (data.get("metadata", {}).get("molab") or {}).get("model_name")


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def read_graph_json(path: str | Path, model_name: str | None = None) -> dict[str, Any]:
    """A graph JSON (molab's or circuit-tracer's), checked against the schema: one line naming
    the file and the field when it is broken, or when it records another model than
    `model_name`. Returns the parsed JSON."""
    path = Path(path)
    data = _load_json(path, "graph JSON")
    try:
        GraphFile.model_validate(data)
    except ValidationError as e:
        raise MolabError(f"{path}: {_first_error(e)}") from None
    ids = {n["node_id"] for n in data["nodes"]}
    for i, link in enumerate(data["links"]):
        for end in ("source", "target"):
            if link[end] not in ids:
                raise MolabError(f"{path}: links[{i}].{end} {link[end]!r} is not a node of the graph")
    recorded = file_model(data)
    if model_name is not None and recorded is not None and not _same_model(recorded, model_name):
        raise MolabError(f"{path} is a graph of {recorded!r}, not of {model_name!r}")
    return data


def write_qparams(path: str | Path, qparams: Any) -> dict[str, Any]:
    """Replace the viewer state of the graph file at `path` (atomically); returns it checked."""
    path = Path(path)
    data = read_graph_json(path)
    data["qParams"] = check_qparams(qparams, str(path))
    write_json(path, data)
    return data["qParams"]
