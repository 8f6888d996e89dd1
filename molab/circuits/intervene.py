"""Interventions on transcoder features through the real model (`molab circuits intervene`).

Why: an attribution graph is a hypothesis about the replacement model; it becomes evidence
about the model only when pushing on its features moves the model's own output. "On the
Biology of a Large Language Model" (Lindsey et al. 2025) checks every circuit this way:
ablate, scale or swap features (or a supernode's features) at chosen positions and read the
change in next-token probabilities and in sampled text.

The edit, at layer i, in the real forward (not the replacement model): the layer's transcoder
reads the real MLP input `layers.{i}.mlp_in` in the same forward and gives each chosen
feature's actual activation a; the MLP's real output `layers.{i}.mlp_out` gets (new - a)
W_dec[f] added at the chosen positions. The MLP's own computation, and so the transcoder's
error, stay real: only the chosen features' share of the output changes, and positions an
edit does not cover are left bit for bit as they were. Modes: ablate (new = 0), scale (new =
c a), set (new = v), swap a -> b (a to 0, b to a's activation, or to a given value; where a is
off and no value is given, b is set to 0 too). Edits of one layer apply in order, each to the
activations the previous ones left. The same error-preserving form as SAE steering
(`molab.audit.steer.feature_edit`), on a transcoder's output side instead of one point.

It is built on the hook seam (`molab.models.hooks`: a `Replace` at `mlp_in` that only
records, one at `mlp_out` that adds the change), so it applies in the HF forward, in
`model.generate` and in molab's hf backend (its fast decoder calls the seam itself, its
generic loop runs the HF forward); vLLM and the openai backend run forwards the seam cannot
reach and are refused (`text_generator`).

Positions. An edit covers every position (the prompt's and, during generation, each new
token's), or listed prompt positions, optionally with every generated token (`generated`).
Cached generation computes the prompt in one forward and then one token per forward, so the
edit tracks where it is: a forward of several tokens starts the sequence at position 0, a
forward of one token continues it. That holds for one sequence at a time from a fresh
context, which is how `compare` runs it: positional edits refuse a batch of several rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from molab.circuits.transcoder import TranscoderSet
from molab.errors import MolabError
from molab.models import hooks
from molab.models.generation import SamplingConfig

Mode = Literal["ablate", "scale", "set", "swap"]
GENERATED = "gen"  # in a position list: every generated token
_POS = r"(?:@((?:\d+|gen)(?:,(?:\d+|gen))*))?"
_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_PATTERNS = {
    "ablate": re.compile(rf"(\d+):(\d+){_POS}"),
    "scale": re.compile(rf"(\d+):(\d+):{_NUM}{_POS}"),
    "set": re.compile(rf"(\d+):(\d+):{_NUM}{_POS}"),
    "swap": re.compile(rf"(\d+):(\d+):(\d+)(?::{_NUM})?{_POS}"),
}
_SHAPES = {
    "ablate": "LAYER:FEATURE[@POS,...]",
    "scale": "LAYER:FEATURE:FACTOR[@POS,...]",
    "set": "LAYER:FEATURE:VALUE[@POS,...]",
    "swap": "LAYER:FROM:TO[:VALUE][@POS,...]",
}


@dataclass(frozen=True)
class FeatureEdit:
    """One feature's change at `layer`. `value`: the factor for scale, the activation for set,
    for swap the activation given to `target` (None: the source's own). `positions`: prompt
    positions (None: every position, generated tokens included); `generated`: also every
    generated token."""

    layer: int
    feature: int
    mode: Mode
    value: float | None = None
    positions: tuple[int, ...] | None = None
    target: int | None = None  # swap: the feature that takes over
    generated: bool = False

    def covers(self, seq: int, pos: torch.Tensor | None, n_prompt: int | None) -> torch.Tensor:
        """Which of a forward's `seq` tokens, at positions `pos` [seq], this edit changes [seq]."""
        if self.positions is None:
            return torch.ones(seq, dtype=torch.bool)
        listed = torch.tensor(self.positions, dtype=pos.dtype, device=pos.device)
        mask = torch.isin(pos, listed)  # [seq]
        return mask | (pos >= n_prompt) if self.generated else mask

    def describe(self) -> str:
        where = (
            ""
            if self.positions is None
            else " @" + ",".join([*map(str, self.positions), *([GENERATED] if self.generated else [])])
        )
        what = f"L{self.layer}:{self.feature}"
        if self.mode == "swap":
            given = "its activation" if self.value is None else f"{self.value:g}"
            return f"swap {what} -> {self.target} ({given}){where}"
        amount = "" if self.mode == "ablate" else f" {'x' if self.mode == 'scale' else '='}{self.value:g}"
        return f"{self.mode} {what}{amount}{where}"


def parse_edit(text: str, mode: Mode) -> FeatureEdit:
    """`L:F[@P,..]` (ablate), `L:F:C[@P,..]` (scale, set), `L:A:B[:V][@P,..]` (swap); a position
    list may hold `gen` (every generated token). One line naming the option when bad."""
    m = _PATTERNS[mode].fullmatch(text.strip())
    if m is None:
        example = {"ablate": "3:17@4,5", "scale": "3:17:2@4,gen", "set": "3:17:5", "swap": "3:17:42@4"}
        raise MolabError(f"--{mode} {text!r}: expected {_SHAPES[mode]}, e.g. {example[mode]}")
    layer, feature, *rest = m.groups()
    pos_text = rest.pop()
    positions, generated = None, False
    if pos_text is not None:
        items = pos_text.split(",")
        generated = GENERATED in items
        positions = tuple(sorted({int(p) for p in items if p != GENERATED}))
    if mode == "swap":
        target, value = int(rest[0]), None if rest[1] is None else float(rest[1])
        return FeatureEdit(int(layer), int(feature), mode, value, positions, target, generated)
    value = float(rest[0]) if rest else None
    return FeatureEdit(int(layer), int(feature), mode, value, positions, None, generated)


def check_edits(edits: Sequence[FeatureEdit], tset: TranscoderSet, n_pos: int | None, where: str) -> None:
    """One line for a layer without a transcoder, a feature out of range, a position past the
    prompt (with `n_pos`; None checks the rest before the model loads)."""
    for e in edits:
        if e.layer not in tset:
            raise MolabError(f"{where} has no transcoder for layer {e.layer} (it holds layers {tset.layers})")
        width = tset[e.layer].d_transcoder
        for f in (e.feature, e.target):
            if f is not None and not 0 <= f < width:
                raise MolabError(
                    f"feature {f} of layer {e.layer} is out of range: "
                    f"its transcoder has {width} (0..{width - 1})"
                )
        if e.mode == "swap" and e.target == e.feature:
            raise MolabError(f"swap of feature {e.feature} of layer {e.layer} with itself changes nothing")
        for p in e.positions or ():
            if n_pos is not None and p >= n_pos:
                raise MolabError(
                    f"position {p} is past the prompt's {n_pos} tokens (positions count from 0; "
                    f"'{GENERATED}' covers generated tokens)"
                )


# --- supernodes from a graph JSON -------------------------------------------------------------


@dataclass(frozen=True)
class GraphInfo:
    """What an intervention takes from a graph JSON: its prompt, tokens and target logits."""

    path: Path
    prompt: str
    prompt_tokens: list[str]
    logit_tokens: list[int]  # vocabulary ids of its logit nodes, the target first
    supernodes: dict[str, list[dict]]  # label -> its nodes (unknown ids left out)


def read_graph(path: Path, model_name: str | None = None) -> GraphInfo:
    """A graph JSON in the frontend schema (checked by `molab.circuits.export.read_graph_json`,
    which refuses one recorded for another model than `model_name`)."""
    from molab.circuits.export import read_graph_json

    data = read_graph_json(path, model_name)
    nodes = {n["node_id"]: n for n in data["nodes"]}
    logits = sorted(
        (n for n in data["nodes"] if n["feature_type"] == "logit"), key=lambda n: not n["is_target_logit"]
    )
    groups = {g[0]: [nodes[i] for i in g[1:] if i in nodes] for g in data["qParams"]["supernodes"] if g}
    meta = data["metadata"]
    return GraphInfo(
        Path(path), meta["prompt"], meta["prompt_tokens"], [n["feature"] for n in logits], groups
    )


def supernode_edits(
    graph: GraphInfo, label: str, mode: Mode = "ablate", value: float | None = None
) -> list[FeatureEdit]:
    """Edits of every feature node of supernode `label` (Neuronpedia's `qParams.supernodes`:
    lists [label, node_id, ...]; a feature's id is "{layer}_{feature}_{pos}"), each at its own
    position; token, error and logit nodes are not features and are left out."""
    if label not in graph.supernodes:
        names = ", ".join(map(repr, graph.supernodes)) or "none"
        raise MolabError(f"{graph.path}: no supernode {label!r} (it has {names})")
    edits = []
    for node in graph.supernodes[label]:
        if node["feature_type"] in ("embedding", "logit", "mlp reconstruction error"):
            continue
        parts = node["node_id"].split("_")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise MolabError(f"{graph.path}: node {node['node_id']!r} is not a feature id LAYER_FEATURE_POS")
        layer, feature, pos = map(int, parts)
        edits.append(FeatureEdit(layer, feature, mode, value, (pos,)))
    if not edits:
        raise MolabError(f"{graph.path}: supernode {label!r} holds no feature nodes")
    return edits


def check_graph_prompt(graph: GraphInfo, tokens: list[str]) -> None:
    """One line unless the prompt's tokens are the graph's: node positions refer to those."""
    if tokens != graph.prompt_tokens:
        raise MolabError(
            f"{graph.path} was made on the prompt {graph.prompt!r} ({len(graph.prompt_tokens)} tokens), "
            f"not on this one ({len(tokens)} tokens): its nodes' positions would point elsewhere"
        )


# --- the edit on the hook seam ----------------------------------------------------------------


class _Positions:
    """Token positions [seq] of a layer's forwards, one sequence at a time (module docstring)."""

    def __init__(self):
        self.length = 0

    def __call__(self, y: torch.Tensor) -> torch.Tensor:  # y: [batch, seq, d_model]
        if y.shape[0] != 1:
            raise MolabError(
                f"edits at chosen positions follow one sequence at a time, not a batch of {y.shape[0]}"
            )
        start = 0 if y.shape[1] > 1 else self.length
        self.length = start + y.shape[1]
        return torch.arange(start, self.length, device=y.device)


def _layer_edit(tc, group: list[FeatureEdit], n_prompt: int | None):
    """(record at mlp_in, change at mlp_out) for one layer's edits."""
    seen: list[torch.Tensor] = []
    touched = sorted({f for e in group for f in (e.feature, e.target) if f is not None})
    column = {f: i for i, f in enumerate(touched)}
    positions = _Positions() if any(e.positions is not None for e in group) else None

    def record(x: torch.Tensor) -> torch.Tensor:  # [batch, seq, d_model]
        seen[:] = [x]
        return x

    def change(y: torch.Tensor) -> torch.Tensor:  # [batch, seq, d_model]
        idx = torch.tensor(touched, device=tc.W_dec.device)
        old = tc.encode(seen.pop().to(tc.W_enc))[..., idx]  # [batch, seq, n_touched]
        new = old.clone()
        pos = positions(y) if positions is not None else None
        for e in group:
            mask = e.covers(y.shape[1], pos, n_prompt).to(y.device)  # [seq]
            src = column[e.feature]
            if e.mode == "swap":
                dst = column[e.target]
                given = new[..., src] if e.value is None else torch.full_like(new[..., src], e.value)
                new[..., dst] = torch.where(mask, given, new[..., dst])
            new[..., src] = torch.where(mask, _new_activation(e, new[..., src]), new[..., src])
        delta = (new - old) @ tc.W_dec[idx]  # [batch, seq, d_model]; 0 where nothing changed
        return y + delta.to(y.dtype)

    return hooks.Replace(record), hooks.Replace(change)


def _new_activation(e: FeatureEdit, acts: torch.Tensor) -> torch.Tensor:
    if e.mode in ("ablate", "swap"):
        return torch.zeros_like(acts)
    return acts * e.value if e.mode == "scale" else torch.full_like(acts, e.value)


@contextmanager
def feature_edits(
    model, tset: TranscoderSet, edits: Sequence[FeatureEdit], n_prompt: int | None = None
) -> Iterator[None]:
    """`edits` in force in every forward of `model` in scope; `n_prompt` (the prompt's length)
    is needed by edits of generated tokens. Open one per sequence (module docstring)."""
    if n_prompt is None and any(e.generated for e in edits):
        raise MolabError("an edit of generated tokens needs the prompt's length")
    by_layer: dict[int, list[FeatureEdit]] = {}
    for e in edits:
        by_layer.setdefault(e.layer, []).append(e)
    plan: dict[str, hooks.Edit] = {}
    for layer, group in by_layer.items():
        plan[f"layers.{layer}.mlp_in"], plan[f"layers.{layer}.mlp_out"] = _layer_edit(
            tset[layer], group, n_prompt
        )
    with hooks.intervene(model, plan):
        yield


# --- reading the effect ----------------------------------------------------------------------


@torch.no_grad()
def next_token_probs(model, ids: torch.Tensor) -> torch.Tensor:
    """The next-token distribution [vocab] after `ids` [n_pos]."""
    logits = model(input_ids=ids[None].to(next(model.parameters()).device)).logits[0, -1]
    return torch.softmax(logits.float(), -1).cpu()


TextGenerator = Callable[[list[int], SamplingConfig], str]  # (prompt ids, sampling) -> text
GENERATORS = ("hf", "generate")
REFUSED = {
    "vllm": "vLLM runs its own forward, where molab's activation edits never apply",
    "openai": "it generates with a remote model whose activations molab cannot reach",
}


def check_generator(kind: str) -> None:
    """One line unless `kind` is a generation path where edits apply (see `text_generator`)."""
    if kind in REFUSED:
        raise MolabError(f"interventions cannot use the {kind} backend: {REFUSED[kind]}; use hf or generate")
    if kind not in GENERATORS:
        raise MolabError(f"no generation path {kind!r}: use hf or generate")


def text_generator(kind: str, model, tokenizer, stop_ids: Sequence[int]) -> TextGenerator:
    """Text after prompt ids, on generation path `kind`: "hf" (molab's hf backend: its fast
    decoder for Llama-family models, its generic loop over the HF forward otherwise) or
    "generate" (transformers' `model.generate`). vLLM and openai are refused."""
    check_generator(kind)
    if kind == "hf":
        from molab.models.generation import HFBackendConfig
        from molab.models.generation.hf_backend import HFBackend

        backend = HFBackend(model, tokenizer, HFBackendConfig(batch_size=1), stop_ids)
        return lambda ids, sampling: backend.generate_ids([ids], sampling, progress=False)[0].text
    return lambda ids, sampling: _hf_generate(model, tokenizer, ids, sampling, stop_ids)


@torch.no_grad()
def _hf_generate(model, tokenizer, ids: list[int], sampling: SamplingConfig, stop_ids: Sequence[int]) -> str:
    """`model.generate`, greedy or sampled with `sampling.seed` (torch's global generator)."""
    device = next(model.parameters()).device
    prompt = torch.tensor([ids], device=device)
    sample = {"do_sample": False}
    if not sampling.greedy:
        torch.manual_seed(sampling.seed)
        sample = {"do_sample": True, "temperature": sampling.temperature, "top_k": sampling.top_k or None}
        sample["top_p"] = sampling.top_p
    out = model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=sampling.max_new_tokens,
        eos_token_id=list(stop_ids) or None,
        pad_token_id=tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else (list(stop_ids) or [0])[0],
        **sample,
    )[0, len(ids) :].tolist()
    body = out[:-1] if out and out[-1] in stop_ids else out
    return tokenizer.decode(body, skip_special_tokens=True)


def compare(
    model,
    tokenizer,
    tset: TranscoderSet,
    ids: torch.Tensor,
    edits: Sequence[FeatureEdit],
    generate: TextGenerator,
    sampling: SamplingConfig,
    *,
    top_k: int = 10,
    watch: Sequence[int] = (),
) -> dict:
    """Next-token probabilities and a continuation (`generate` under `sampling`), without and
    with `edits`, as a record: the top tokens of each distribution and the `watch` tokens with
    their change and rank, KL(before || after), and both texts."""
    n = len(ids)
    before = next_token_probs(model, ids)  # [vocab]
    with feature_edits(model, tset, edits, n):
        after = next_token_probs(model, ids)
    text_before = generate(ids.tolist(), sampling)
    with feature_edits(model, tset, edits, n):  # a fresh context: positions start again
        text_after = generate(ids.tolist(), sampling)
    shown = [*before.topk(top_k).indices.tolist(), *after.topk(top_k).indices.tolist(), *watch]
    rank_before, rank_after = (
        before.argsort(descending=True).argsort(),
        after.argsort(descending=True).argsort(),
    )
    rows = [
        {
            "token": tokenizer.decode([t]),
            "id": t,
            "before": float(before[t]),
            "after": float(after[t]),
            "change": float(after[t] - before[t]),
            "rank_before": int(rank_before[t]),
            "rank_after": int(rank_after[t]),
            "watched": t in watch,
        }
        for t in dict.fromkeys(shown)
    ]
    rows.sort(key=lambda r: -max(r["before"], r["after"]))
    kl = float((before * (before.clamp_min(1e-30).log() - after.clamp_min(1e-30).log())).sum())
    return {
        "prompt_tokens": [tokenizer.decode([t]) for t in ids.tolist()],
        "edits": [asdict(e) | {"label": e.describe()} for e in edits],
        "probabilities": rows,
        "kl_divergence": kl,
        "text_before": text_before,
        "text_after": text_after,
        "sampling": sampling.model_dump(),
    }
