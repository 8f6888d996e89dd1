"""The local replacement model: a Hugging Face Llama-family model made linear around one prompt.

Why ("Circuit Tracing", Ameisen et al. 2025; circuit-tracer's `replacement_model`): an
attribution graph's edges are direct effects in a model that is linear in every path left
between its nodes. Around one prompt, molab freezes from the real forward pass:

- every attention pattern (softmax probabilities): attention becomes a fixed mix of the value
  vectors, linear in the residual stream through V and O; queries and keys carry no gradient;
- every RMSNorm's denominator 1/rms(x) per position: a norm becomes x * scale * weight;
- each MLP's output: replaced by `const + skip(mlp_in) + delta`, where const is the real
  output minus the transcoder's skip path (the features' decoded sum and the error are frozen
  inside it), skip(mlp_in) = mlp_in W_skip^T is the only live path through the MLP (zero
  without a skip), and delta is the perturbation a node adds (a feature: activation x decoder
  row; an error node: real output minus reconstruction). A layer without a transcoder has
  const = its real output: all of it is error.

Attention is frozen by a registered attention function (`AttentionInterface`) that records
the eager probabilities on the first pass and replays them, detached, after; norms by a
patched `forward` on every `*RMSNorm` module while a context is open (checked against the
module's own output, so a norm of another form fails with one line instead of silently).

`record` runs the real forward once and stores all of that; `replay` runs the frozen forward
with perturbations (what a test uses for direct interventions, and, with `split=True`, what
the attribution engine differentiates: each layer's input is a fresh leaf, so a backward pass
can start at any layer and stop after one).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.models.llama import modeling_llama

from molab.circuits.transcoder import TranscoderSet
from molab.errors import MolabError
from molab.models.hooks import Replace, capture, intervene

FROZEN_ATTENTION = "molab_frozen"


@dataclass(eq=False)
class Freezes:
    """Attention probabilities and norm scales of one forward, keyed by module."""

    recording: bool = True
    patterns: dict = field(default_factory=dict)  # attention module -> [1, heads, q, k]
    norm_scales: dict = field(default_factory=dict)  # norm module -> ([1, pos, 1] 1/rms, weight form)


_OPEN: list[Freezes] = []  # the freezes in force (innermost last)


def _frozen_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Attention with its probabilities taken from (or, recording, stored in) the open freezes."""
    freezes = _OPEN[-1]
    if freezes.recording:
        eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        eager = eager or modeling_llama.eager_attention_forward
        with torch.no_grad():
            _, probs = eager(
                module, query, key, value, attention_mask, scaling=scaling, dropout=0.0, **kwargs
            )
        freezes.patterns[module] = probs.detach()
    probs = freezes.patterns[module]  # [1, heads, q, k]
    b, kv_heads, k_len, head_dim = value.shape
    groups = probs.shape[1] // kv_heads
    v = value[:, :, None].expand(b, kv_heads, groups, k_len, head_dim).reshape(b, -1, k_len, head_dim)
    out = torch.matmul(probs.to(value.dtype), v)  # [1, heads, q, head_dim]
    return out.transpose(1, 2).contiguous(), probs


AttentionInterface.register(FROZEN_ATTENTION, _frozen_attention)
AttentionMaskInterface.register(FROZEN_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def _norm_eps(module) -> float:
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if eps is None:
        raise MolabError(f"cannot freeze {type(module).__name__}: it has no variance_epsilon or eps")
    return float(eps)


def _frozen_norm(module, original):
    """A forward for an RMSNorm module: x * (frozen 1/rms) * weight (or 1 + weight, Gemma's form)."""

    def apply(x: torch.Tensor, scale: torch.Tensor, plus_one: bool) -> torch.Tensor:
        y = (x.float() * scale).to(x.dtype)
        weight = getattr(module, "weight", None)
        if weight is None:
            return y
        return y * (1.0 + weight) if plus_one else y * weight

    def forward(x: torch.Tensor) -> torch.Tensor:
        freezes = _OPEN[-1]
        if freezes.recording:
            with torch.no_grad():
                scale = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + _norm_eps(module))
                real = original(x)
                for plus_one in (False, True):
                    if torch.allclose(apply(x, scale, plus_one), real, rtol=1e-4, atol=1e-5):
                        break
                else:
                    raise MolabError(
                        f"cannot freeze {type(module).__name__}: "
                        "its output is not x / rms(x) times its weight"
                    )
            freezes.norm_scales[module] = (scale, plus_one)
        scale, plus_one = freezes.norm_scales[module]
        return apply(x, scale, plus_one)

    return forward


@contextmanager
def frozen(model, freezes: Freezes) -> Iterator[None]:
    """Run `model` with attention patterns and norm scales taken from (or recorded in) `freezes`."""
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    config = model.config
    saved_attention = config._attn_implementation
    params = [p for p in model.parameters() if p.requires_grad]
    _OPEN.append(freezes)
    try:
        for m in norms:
            m.forward = _frozen_norm(m, type(m).forward.__get__(m))
        config._attn_implementation = FROZEN_ATTENTION
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        _OPEN.remove(freezes)
        for m in norms:
            m.__dict__.pop("forward", None)
        config._attn_implementation = saved_attention
        for p in params:
            p.requires_grad_(True)


@dataclass
class ReplacementState:
    """The real forward on one prompt, as the replacement model needs it."""

    input_ids: torch.Tensor  # [n_pos] long
    freezes: Freezes
    embeddings: torch.Tensor  # [n_pos, d_model]: layer 0's input
    mlp_in: torch.Tensor  # [n_layers, n_pos, d_model]
    mlp_out: torch.Tensor  # [n_layers, n_pos, d_model]
    last_logits: torch.Tensor  # [vocab]: the real model's logits at the last position

    @property
    def n_layers(self) -> int:
        return self.mlp_in.shape[0]

    @property
    def n_pos(self) -> int:
        return len(self.input_ids)


@torch.no_grad()
def record(model, input_ids: torch.Tensor) -> ReplacementState:
    """One real forward on `input_ids` [n_pos], recording what the replacement model freezes."""
    n_layers = model.config.num_hidden_layers
    names = ["layers.0.resid_pre"] + [
        f"layers.{i}.{p}" for i in range(n_layers) for p in ("mlp_in", "mlp_out")
    ]
    freezes = Freezes()
    with frozen(model, freezes), capture(model, names) as values:
        logits = model(input_ids=input_ids[None], logits_to_keep=1).logits[0, -1]
    freezes.recording = False
    return ReplacementState(
        input_ids=input_ids,
        freezes=freezes,
        embeddings=values["layers.0.resid_pre"][0],
        mlp_in=torch.stack([values[f"layers.{i}.mlp_in"][0] for i in range(n_layers)]),
        mlp_out=torch.stack([values[f"layers.{i}.mlp_out"][0] for i in range(n_layers)]),
        last_logits=logits.float(),
    )


def skip_out(transcoders: TranscoderSet, layer: int, x: torch.Tensor) -> torch.Tensor:
    """The live part of layer `layer`'s replaced MLP: the transcoder's skip path (or zeros)."""
    if layer in transcoders and transcoders[layer].has_skip:
        return transcoders[layer].skip(x)
    return torch.zeros_like(x)


@dataclass
class Replayed:
    """One frozen forward: each layer's MLP input and the last position's final hidden state.
    With `split`, `leaves[l]` is layer l's input (l = n_layers: the final norm's input) as a
    leaf and `outputs[l]` layer l's output computed from `leaves[l]`."""

    mlp_in: list[torch.Tensor]  # n_layers x [1, n_pos, d_model]
    final: torch.Tensor  # [1, 1, d_model]: the LM head's input at the last position
    leaves: list[torch.Tensor] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)

    def feature_values(self, transcoders: TranscoderSet, features: torch.Tensor) -> torch.Tensor:
        """Pre-activations [n] of features [n, 3] (layer, position, index)."""
        out = []
        for layer, pos, idx in features.tolist():
            t = transcoders[layer]
            out.append(self.mlp_in[layer][0, pos] @ t.W_enc[idx] + t.b_enc[idx])
        return torch.stack(out) if out else torch.zeros(0)

    def logit_values(self, directions: torch.Tensor) -> torch.Tensor:
        """De-meaned logits [n] along target directions [n, d_model]."""
        return directions @ self.final[0, -1]


def replay(
    model,
    state: ReplacementState,
    transcoders: TranscoderSet,
    *,
    mlp_out_delta: torch.Tensor | None = None,  # [n_layers, n_pos, d_model]
    embed_delta: torch.Tensor | None = None,  # [n_pos, d_model]
    split: bool = False,
) -> Replayed:
    """The frozen forward with perturbations added to the MLP outputs and the embeddings."""
    n_layers = state.n_layers
    with torch.no_grad():
        const = torch.stack(
            [state.mlp_out[i] - skip_out(transcoders, i, state.mlp_in[i]) for i in range(n_layers)]
        )
    if mlp_out_delta is not None:
        const = const + mlp_out_delta
    mlp_in: list[torch.Tensor] = [None] * n_layers
    leaves: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def leaf(x: torch.Tensor) -> torch.Tensor:
        if split:
            x = x.detach().requires_grad_(True)
            leaves.append(x)
        return x

    def embed(x: torch.Tensor) -> torch.Tensor:
        return leaf(x if embed_delta is None else x + embed_delta)

    def keep_in(i: int):
        def edit(x: torch.Tensor) -> torch.Tensor:
            mlp_in[i] = x
            return x

        return edit

    def replace_out(i: int):
        return lambda _out: const[i][None] + skip_out(transcoders, i, mlp_in[i])

    def layer_out(x: torch.Tensor) -> torch.Tensor:
        outputs.append(x)
        return leaf(x)

    edits = {"layers.0.resid_pre": Replace(embed)}
    for i in range(n_layers):
        edits[f"layers.{i}.mlp_in"] = Replace(keep_in(i))
        edits[f"layers.{i}.mlp_out"] = Replace(replace_out(i))
        edits[f"layers.{i}.resid_post"] = Replace(layer_out)
    final: list[torch.Tensor] = []
    head = model.get_output_embeddings().register_forward_pre_hook(lambda _m, args: final.append(args[0]))
    try:
        with (
            torch.enable_grad() if split else torch.no_grad(),
            frozen(model, state.freezes),
            intervene(model, edits),
        ):
            model(input_ids=state.input_ids[None], logits_to_keep=1)
    finally:
        head.remove()
    return Replayed(mlp_in=mlp_in, final=final[0], leaves=leaves, outputs=outputs)


@dataclass
class LinearLayer:
    """One decoder layer of the replacement model as explicit matrices, for a fast batched
    backward (the autograd one through `replay(split=True)` is the reference and the fallback
    for layer layouts this does not describe; `linear_layers` checks each against it):
    x -> mid = x + O(P V(x * c1)) -> out = mid + skip(mid * c2) + const."""

    c1: torch.Tensor  # [n_pos, d_model]: input norm's frozen scale x weight
    c2: torch.Tensor  # [n_pos, d_model]: the MLP's input norm's
    w_v: torch.Tensor  # [kv_heads * head_dim, d_model]
    w_o: torch.Tensor  # [d_model, heads * head_dim]
    probs: torch.Tensor  # [heads, n_pos, n_pos] frozen attention
    w_skip: torch.Tensor | None  # [d_model, d_model]

    def vjp(self, g_out: torch.Tensor, g_in: torch.Tensor | None, n: int):
        """Gradients at the layer's input from gradients at its output and at its MLP input,
        on the first n positions (a gradient at position q reaches only positions <= q).
        g_out, g_in: [B, n, d_model] (g_in may be None); returns the one at the input [B, n, d_model]."""
        g_mlp_in = g_out @ self.w_skip if self.w_skip is not None else None
        if g_in is not None:
            g_mlp_in = g_in if g_mlp_in is None else g_mlp_in + g_in
        g_mid = g_out if g_mlp_in is None else g_out + g_mlp_in * self.c2[:n]
        heads = self.probs.shape[0]
        kv_heads = self.w_v.shape[0] * heads // self.w_o.shape[1]
        b = len(g_mid)
        g_attn = (g_mid @ self.w_o).view(b, n, heads, -1)  # [B, n, heads, head_dim]
        head_dim = g_attn.shape[-1]
        g_attn = g_attn.permute(2, 1, 0, 3).reshape(heads, n, b * head_dim)
        g_v = torch.bmm(self.probs[:, :n, :n].transpose(1, 2), g_attn)  # [heads, n keys, B * head_dim]
        g_v = g_v.view(kv_heads, heads // kv_heads, n, b, head_dim).sum(1)  # [kv_heads, n, B, head_dim]
        g_v = g_v.permute(2, 1, 0, 3).reshape(b, n, kv_heads * head_dim)
        return g_mid + (g_v @ self.w_v) * self.c1[:n]


def _norm_factor(state: ReplacementState, norm) -> torch.Tensor:
    scale, plus_one = state.freezes.norm_scales[norm]
    weight = getattr(norm, "weight", None)
    factor = scale[0].expand(-1, state.mlp_in.shape[-1])
    if weight is None:
        return factor.clone()
    return factor * ((1.0 + weight) if plus_one else weight).detach()


def linear_layers(model, state: ReplacementState, transcoders: TranscoderSet, replayed: Replayed):
    """Each layer's `LinearLayer`, or None where its explicit backward disagrees with autograd
    on a random gradient (an architecture it does not describe: extra norms, gates, ...)."""
    from molab.models.hooks import _layers

    out = []
    g = torch.Generator().manual_seed(0)
    for i, layer in enumerate(_layers(model)):
        try:
            attn = layer.self_attn
            lin = LinearLayer(
                c1=_norm_factor(state, layer.input_layernorm),
                c2=_norm_factor(state, layer.post_attention_layernorm),
                w_v=attn.v_proj.weight.detach(),
                w_o=attn.o_proj.weight.detach(),
                probs=state.freezes.patterns[attn][0],
                w_skip=transcoders[i].W_skip.detach()
                if i in transcoders and transcoders[i].has_skip
                else None,
            )
        except (AttributeError, KeyError):
            out.append(None)
            continue
        shape = (1, state.n_pos, state.mlp_in.shape[-1])
        seed_out, seed_in = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        outputs = [replayed.outputs[i], replayed.mlp_in[i]]
        (want,) = torch.autograd.grad(outputs, replayed.leaves[i], [seed_out, seed_in], retain_graph=True)
        with torch.no_grad():
            got = lin.vjp(seed_out, seed_in, state.n_pos)
        ok = torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
        out.append(lin if ok else None)
    return out
