"""Named places inside a Llama-family decoder, to read activations there or edit them.

Why: auditing a model organism means looking inside it (what does layer 12's residual stream
hold on a prompt that triggers the hidden objective?) and pushing on it (does adding a
direction there bring the objective out, does ablating it hide it?). Both need the same few
places in every layer, named the same way for every model and honoured by every code path
that runs it: the HF forward, `model.generate`, and molab's fast decoder.

Points of layer i, named `layers.{i}.{point}`, each [batch, seq, d_model]:
- `resid_pre`: the layer's input (the residual stream before the layer);
- `attn_out`: self-attention's contribution before it is added to the stream (for layouts
  that normalise it first, Gemma2/3 and OLMo2, after that norm);
- `resid_mid`: the stream after that addition, resid_pre + attn_out;
- `mlp_in`: the MLP's input (after its norm);
- `mlp_out`: the MLP's contribution before it is added (after its norm, as for attn_out);
- `resid_post`: the layer's output, resid_mid + mlp_out.

Reading: `capture(model, names)` (or `run_until`, which stops the forward after the deepest
point asked for). Writing: `intervene(model, {name: edits})` with `Add`, `Scale`, `Ablate`
or `Replace`. The model may be a PEFT wrapper: points live on the base model's decoder layers,
so a wrapper and its base share one set of contexts.

Rules, the same on every path:
- at a point, the edits of all open `intervene` contexts apply in the order the contexts were
  entered (within one, in list order), then captures record the result;
- edits apply at every position of every forward in scope. For generation an edit should act
  on each position alone: the hf backend reorders prompts and splits their forwards (prefill,
  then one token per step; its fast decoder computes a shared prompt prefix once), so it
  refuses a `Replace` value with batch or sequence dimensions;
- a capture holds the last forward's values (during generation, the last decoding step's).

How each path applies them. The HF forward: torch hooks on the layer, its attention, MLP and
norms, installed while a context is open and removed on exit, exceptions included.
transformers adds the residual inside the layer's forward with no module in between, so
`resid_mid` is computed in the attention hook as resid_pre + attn_out (the same addition the
layer does), and an edit there becomes attention's contribution edit(resid_mid) - resid_pre:
equal to editing the stream, up to float rounding. The fast decoder
(`generation/llama_decode.py`) runs the layers itself, so torch hooks never fire there: it
asks `active_edits(model)` once per forward (one dict check when nothing is open) and calls
`apply` at each point. vLLM runs its own forward, where no Python hook can run: its backend
refuses to generate while any edit is open.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import torch

from molab.errors import MolabError

POINTS = ("resid_pre", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post")  # forward order
_NAME = re.compile(r"layers\.(\d+)\.(\w+)")
_LAYER_PARTS = ("self_attn", "mlp", "post_attention_layernorm")  # a pre-norm decoder layer


@dataclass(frozen=True)
class HookPoint:
    """One resolved point: `name` as given, `layer` its index, `point` one of POINTS."""

    layer: int
    point: str
    name: str

    @property
    def key(self) -> tuple[int, str]:
        return self.layer, self.point


# --- edits ------------------------------------------------------------------------------


class Edit:
    """A change to the activations at a point: x [..., d_model] -> a tensor of x's shape."""

    per_position = True  # acts on each position alone (what generation needs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def tensor(self) -> torch.Tensor | None:
        """The tensor whose last dimension must be d_model, checked when a context opens."""
        return None


def _as_float(t) -> torch.Tensor:
    t = torch.as_tensor(t)
    return t if t.is_floating_point() else t.float()


@dataclass(eq=False)
class Add(Edit):
    """x + scale * vector at every position; `vector` is [d_model] (steering)."""

    vector: torch.Tensor
    scale: float = 1.0

    def __post_init__(self):
        self.vector = _as_float(self.vector)

    def __call__(self, x):
        return x + self.scale * self.vector.to(x)

    def tensor(self):
        return self.vector


@dataclass(eq=False)
class Scale(Edit):
    """Multiply the component of x along `direction` (normalised here) by `factor`:
    x + (factor - 1) (x . u) u. Factor 0 removes it, 1 leaves x unchanged."""

    direction: torch.Tensor
    factor: float

    def __post_init__(self):
        d = _as_float(self.direction)
        norm = float(d.norm())
        if norm == 0.0:
            raise MolabError(f"{type(self).__name__}: the direction is the zero vector")
        self.direction = d / norm

    def __call__(self, x):
        u = self.direction.to(x)  # (d,) or (1, ..., d)
        return x + (self.factor - 1.0) * (x * u).sum(-1, keepdim=True) * u

    def tensor(self):
        return self.direction


@dataclass(eq=False)
class Ablate(Scale):
    """Remove the component along `direction` (Scale with factor 0)."""

    factor: float = field(default=0.0, init=False)


@dataclass(eq=False)
class Replace(Edit):
    """Replace x by `value`: a tensor broadcastable to x's [batch, seq, d_model], or a
    function x -> tensor of x's shape."""

    value: torch.Tensor | Callable[[torch.Tensor], torch.Tensor]

    def __post_init__(self):
        if not callable(self.value):
            self.value = _as_float(self.value)
            self.per_position = self.value.numel() == self.value.shape[-1] if self.value.dim() else True

    def __call__(self, x):
        if callable(self.value):
            return self.value(x)
        return self.value.to(x).expand_as(x).contiguous()

    def tensor(self):
        return None if callable(self.value) or not self.value.dim() else self.value


# --- resolving names ----------------------------------------------------------------------

_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its decoder layers


def _find_layers(model) -> torch.nn.ModuleList | None:
    """The decoder's layer list: the first ModuleList of pre-norm decoder layers under `model`
    (a causal LM, its inner model, a PEFT wrapper, or a multimodal model's language model)."""
    if model not in _LAYERS:
        found = None
        for _, module in model.named_modules():
            if isinstance(module, torch.nn.ModuleList) and len(module):
                if all(hasattr(module[0], part) for part in _LAYER_PARTS):
                    found = module
                    break
        _LAYERS[model] = found
    return _LAYERS[model]


def _layers(model) -> torch.nn.ModuleList:
    layers = _find_layers(model)
    if layers is None:
        raise MolabError(
            f"{_model_name(model)} has no Llama-family decoder layers (a list of layers with "
            f"{', '.join(_LAYER_PARTS)}): hook points need them"
        )
    return layers


def _model_name(model) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "name_or_path", None) or type(model).__name__


def hook_points(model) -> list[str]:
    """Every valid point name of `model`, layer by layer in forward order."""
    return [f"layers.{i}.{p}" for i in range(len(_layers(model))) for p in POINTS]


def resolve(model, name: str) -> HookPoint:
    """The point `name` names, or a MolabError naming the valid points and layers."""
    n = len(_layers(model))
    m = _NAME.fullmatch(name) if isinstance(name, str) else None
    if m is None or int(m[1]) >= n or m[2] not in POINTS:
        raise MolabError(
            f"no hook point {name!r} in {_model_name(model)}: points are layers.<i>.<point> with "
            f"i in 0..{n - 1} and point one of {', '.join(POINTS)}"
        )
    return HookPoint(int(m[1]), m[2], name)


# --- what is in force -------------------------------------------------------------------


class _Stop(Exception):
    """Raised at a `stop_after` capture's deepest point; its own context swallows it."""

    def __init__(self, owner):
        super().__init__("forward stopped after the deepest captured point")
        self.owner = owner


@dataclass(eq=False)
class _Scope:
    """One open context: its edits, or its captures (store[name] <- value at key)."""

    model_name: str
    edits: dict[tuple[int, str], list[Edit]] = field(default_factory=dict)
    reads: dict[tuple[int, str], list[str]] = field(default_factory=dict)
    store: dict[str, torch.Tensor] = field(default_factory=dict)
    stop: tuple[int, str] | None = None


@dataclass(eq=False)
class ActiveHooks:
    """The edits and captures in force on one decoder, merged over its open contexts."""

    model_names: list[str]
    edits: dict[tuple[int, str], list[Edit]] = field(default_factory=dict)
    reads: dict[tuple[int, str], list[tuple[dict, str]]] = field(default_factory=dict)
    stops: dict[tuple[int, str], _Scope] = field(default_factory=dict)
    handles: list = field(default_factory=list)  # torch hook handles, removed on the next change
    stash: dict[int, torch.Tensor] = field(default_factory=dict)  # resid_pre by layer (HF path)

    def keys(self) -> set[tuple[int, str]]:
        return set(self.edits) | set(self.reads) | set(self.stops)

    def require_per_position(self, where: str) -> None:
        """Raise unless every edit acts on each position alone (see the module docstring)."""
        for (layer, point), edits in self.edits.items():
            for e in edits:
                if not e.per_position:
                    raise MolabError(
                        f"{where} cannot apply Replace at layers.{layer}.{point} with a value of shape "
                        f"{tuple(e.tensor().shape)}: generation reorders prompts and splits their "
                        "forwards, so give one d_model vector (or a function of the activations)"
                    )


_SCOPES: dict[torch.nn.ModuleList, list[_Scope]] = {}  # open contexts per decoder, in entry order
_ACTIVE: dict[torch.nn.ModuleList, ActiveHooks] = {}  # their merge; empty when nothing is open


def active_edits(model) -> ActiveHooks | None:
    """What is in force on `model`'s decoder, or None: one dict check when no context is open
    anywhere, so a forward can ask every time."""
    if not _ACTIVE:
        return None
    layers = _find_layers(model)
    return None if layers is None else _ACTIVE.get(layers)


def edited_models() -> list[str]:
    """Names of the models with edits in force (for backends that cannot apply them)."""
    return sorted({name for a in _ACTIVE.values() if a.edits for name in a.model_names})


def apply(active: ActiveHooks, layer: int, point: str, x: torch.Tensor) -> torch.Tensor:
    """The value at `point` of `layer` after the edits in force, recording it for captures.
    x: [batch, seq, d_model]; returns x itself when nothing edits this point."""
    key = (layer, point)
    for edit in active.edits.get(key, ()):
        try:
            y = edit(x)
        except RuntimeError as e:
            raise MolabError(
                f"{type(edit).__name__} at layers.{layer}.{point} fails on activations of shape "
                f"{tuple(x.shape)}: {e}"
            ) from e
        if y.shape != x.shape:
            raise MolabError(
                f"{type(edit).__name__} at layers.{layer}.{point} returned shape {tuple(y.shape)} "
                f"for activations of shape {tuple(x.shape)}"
            )
        x = y
    for store, name in active.reads.get(key, ()):
        store[name] = x.detach()
    owner = active.stops.get(key)
    if owner is not None:
        raise _Stop(owner)
    return x


def _rebuild(layers: torch.nn.ModuleList) -> None:
    """Merge the open contexts of `layers` and reinstall the torch hooks that serve them."""
    old = _ACTIVE.pop(layers, None)
    for handle in old.handles if old else ():
        handle.remove()
    scopes = _SCOPES.get(layers)
    if not scopes:
        return
    active = ActiveHooks(model_names=sorted({s.model_name for s in scopes}))
    for s in scopes:
        for key, edits in s.edits.items():
            active.edits.setdefault(key, []).extend(edits)
        for key, names in s.reads.items():
            active.reads.setdefault(key, []).extend((s.store, n) for n in names)
        if s.stop is not None:
            active.stops.setdefault(s.stop, s)
    _install(layers, active)
    _ACTIVE[layers] = active


@contextmanager
def _opened(model, scope: _Scope) -> Iterator[None]:
    layers = _layers(model)
    _SCOPES.setdefault(layers, []).append(scope)
    try:
        _rebuild(layers)
        yield
    finally:
        scopes = _SCOPES[layers]
        scopes.remove(scope)
        if not scopes:
            del _SCOPES[layers]
        _rebuild(layers)


# --- the HF forward: torch hooks ---------------------------------------------------------


def _install(layers: torch.nn.ModuleList, active: ActiveHooks) -> None:
    """Torch hooks on the modules around each point in use; they call `apply`."""
    keys = active.keys()
    for i in sorted({layer for layer, _ in keys}):
        points = {p for layer, p in keys if layer == i}
        layer = layers[i]
        post_norms = hasattr(layer, "post_feedforward_layernorm")  # Gemma2/3, OLMo2
        attn = layer.post_attention_layernorm if post_norms else layer.self_attn
        mlp_out = layer.post_feedforward_layernorm if post_norms else layer.mlp
        add = active.handles.append
        if points & {"resid_pre", "resid_mid"}:
            add(layer.register_forward_pre_hook(_on_input(active, i, "resid_pre"), with_kwargs=True))
        if points & {"attn_out", "resid_mid"}:
            add(attn.register_forward_hook(_on_attention(active, i, "resid_mid" in points)))
        if "mlp_in" in points:
            add(layer.mlp.register_forward_pre_hook(_on_input(active, i, "mlp_in"), with_kwargs=True))
        if "mlp_out" in points:
            add(mlp_out.register_forward_hook(_on_output(partial(apply, active, i, "mlp_out"))))
        if "resid_post" in points:
            add(layer.register_forward_hook(_on_output(partial(apply, active, i, "resid_post"))))


def _on_input(active: ActiveHooks, i: int, point: str):
    """A forward pre-hook editing a module's first input (positional or `hidden_states`)."""

    def hook(module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        y = apply(active, i, point, x)
        if point == "resid_pre":
            active.stash[i] = y
        if y is x:
            return None
        return ((y, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": y})

    return hook


def _on_attention(active: ActiveHooks, i: int, mid: bool):
    """A forward hook on attention's contribution: attn_out, then resid_mid from it."""

    def edit(a: torch.Tensor) -> torch.Tensor:
        a = apply(active, i, "attn_out", a)
        if mid:
            pre = active.stash[i]
            m = pre + a  # the layer's own addition
            edited = apply(active, i, "resid_mid", m)
            if edited is not m:
                a = edited - pre  # the layer adds pre back: edited, up to rounding
        return a

    return _on_output(edit)


def _on_output(edit: Callable[[torch.Tensor], torch.Tensor]):
    """A forward hook applying `edit` to a module's output (a tensor, or a tuple led by one)."""

    def hook(module, args, output):
        if isinstance(output, tuple):
            y = edit(output[0])
            return None if y is output[0] else (y, *output[1:])
        y = edit(output)
        return None if y is output else y

    return hook


# --- the public contexts ------------------------------------------------------------------


@contextmanager
def capture(model, names: str | Sequence[str], *, stop_after: bool = False) -> Iterator[dict]:
    """Yield a dict that each forward in scope fills with name -> value at that point,
    [batch, seq, d_model], detached; a later forward overwrites an earlier one's values.

    `stop_after=True` ends the forward right after the deepest of `names` (later layers and
    the LM head are not computed) and ends the `with` body there too: for caching activations
    of early layers. Use it around one forward, not around generation."""
    names = [names] if isinstance(names, str) else list(names)
    points = [resolve(model, n) for n in names]
    scope = _Scope(model_name=_model_name(model))
    for p in points:
        scope.reads.setdefault(p.key, []).append(p.name)
    if stop_after and points:
        scope.stop = max((p.key for p in points), key=lambda k: (k[0], POINTS.index(k[1])))
    with _opened(model, scope):
        try:
            yield scope.store
        except _Stop as stop:
            if stop.owner is not scope:
                raise


def run_until(model, names: str | Sequence[str], **inputs) -> dict[str, torch.Tensor]:
    """One forward `model(**inputs)`, stopped after the deepest of `names`; their values."""
    with torch.no_grad(), capture(model, names, stop_after=True) as values:
        model(**inputs)
    return values


@contextmanager
def intervene(model, edits: Mapping[str, Edit | Sequence[Edit]]) -> Iterator[None]:
    """Apply `edits` (point name -> one edit or a list, applied in order) at every position of
    every forward of `model` in scope: `model(...)`, `model.generate`, and the hf backend.
    Contexts nest: an inner one's edits apply after the outer ones' at the same point."""
    scope = _Scope(model_name=_model_name(model))
    layers = _layers(model)
    norm = getattr(layers[0].post_attention_layernorm, "weight", None)
    width = None if norm is None else norm.shape[-1]
    for name, given in edits.items():
        point = resolve(model, name)
        given = [given] if isinstance(given, Edit) else list(given)
        for e in given:
            if not isinstance(e, Edit):
                raise MolabError(f"{name}: {e!r} is not an edit (Add, Scale, Ablate or Replace)")
            v = e.tensor()
            if width is not None and v is not None and v.shape[-1] != width:
                raise MolabError(
                    f"{type(e).__name__} at {name}: a tensor of shape {tuple(v.shape)}, but "
                    f"{_model_name(model)}'s d_model is {width}"
                )
            if isinstance(e, Add | Scale) and v.numel() != v.shape[-1]:
                raise MolabError(f"{type(e).__name__} at {name}: needs one vector of d_model values")
        scope.edits.setdefault(point.key, []).extend(given)
    with _opened(model, scope):
        yield
