"""Per-layer transcoders (PLTs): the module, a set of them, and their files in circuit-tracer's
layout.

Why: attribution graphs ("Circuit Tracing", Ameisen et al. 2025; "On the Biology of a Large
Language Model", Lindsey et al. 2025) replace each MLP by a sparse, wider layer whose features
read the MLP's input and write its output. Training (`molab.circuits.train`), the replacement
model and graphs (`molab.circuits.attribution`), feature files and interventions all read the
one type here, and the files are circuit-tracer's so its users can load molab's sets and
molab can load theirs.

The module (x = the MLP's input after its norm, `layers.{i}.mlp_in`, [..., d_model]):
- pre = x W_enc^T + b_enc                             [..., d_transcoder]
- f = jumprelu(pre) = pre * (pre > threshold)         per-feature threshold (inference form)
  (`relu` and `topk` read other trainers' files; circuit-tracer's TopK keeps the k largest
  pre-activations without a ReLU, and so does this one)
- y_hat = f W_dec + b_dec (+ x W_skip^T)              [..., d_model], predicts `layers.{i}.mlp_out`

Files (circuit-tracer's per-layer transcoder set; `../shared/reference/circuits.md`): a folder
with `config.yaml` (`model_kind: transcoder_set`, `feature_input_hook: mlp.hook_in`,
`feature_output_hook: mlp.hook_out`, `scan`, and molab's record under `molab`: the model, its
width and depth, the layers present, how each was trained) and `layer_{i}.safetensors` holding
`W_enc` [d_tc, d_model], `W_dec` [d_tc, d_model], `b_enc` [d_tc], `b_dec` [d_model],
`activation_function.threshold` [d_tc] and optional `W_skip` [d_model, d_model]. molab saves
JumpReLU thresholds, never a TopK `k` tensor: circuit-tracer's strict loader rejects one and a
local folder's YAML `activation: topk` is ignored there (see the reference's two traps).
circuit-tracer wants every layer 0..L-1; molab also reads a subset (missing layers become error
nodes in a graph) and says so when exporting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from molab.errors import MolabError
from molab.files import atomic_path, read_text_file

CONFIG = "config.yaml"
INPUT_HOOK, OUTPUT_HOOK = "mlp.hook_in", "mlp.hook_out"  # circuit-tracer's names for Llama
INPUT_POINT, OUTPUT_POINT = "mlp_in", "mlp_out"  # molab's (molab.models.hooks)
ACTIVATIONS = ("jumprelu", "relu", "topk")
_LAYER_FILE = re.compile(r"layer_(\d+)\.safetensors")
THRESHOLD = "activation_function.threshold"


def layer_file(layer: int) -> str:
    return f"layer_{layer}.safetensors"


class Transcoder(nn.Module):
    """One layer's transcoder; see the module docstring for the maths."""

    def __init__(
        self,
        d_model: int,
        d_transcoder: int,
        layer: int,
        *,
        skip: bool = False,
        activation: str = "jumprelu",
        k: int | None = None,
        matrices: bool = True,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise MolabError(f"transcoder activation {activation!r}: molab reads {', '.join(ACTIVATIONS)}")
        if activation == "topk" and not (k and 0 < k <= d_transcoder):
            raise MolabError(f"a topk transcoder needs k between 1 and {d_transcoder}, got {k}")
        self.d_model, self.d_transcoder, self.layer = d_model, d_transcoder, layer
        self.activation, self.k = activation, k
        if matrices:  # (a LazyTranscoder reads them from its file instead)
            self.W_enc = nn.Parameter(torch.zeros(d_transcoder, d_model))
            self.W_dec = nn.Parameter(torch.zeros(d_transcoder, d_model))
        self.b_enc = nn.Parameter(torch.zeros(d_transcoder))
        self.b_dec = nn.Parameter(torch.zeros(d_model))
        self.W_skip = nn.Parameter(torch.zeros(d_model, d_model)) if skip else None
        self.register_buffer("threshold", torch.zeros(d_transcoder))

    @property
    def has_skip(self) -> bool:
        return self.W_skip is not None

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_model] -> [..., d_transcoder] before the nonlinearity."""
        return x @ self.W_enc.T + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The nonlinearity applied to pre-activations [..., d_transcoder]."""
        if self.activation == "jumprelu":
            return pre * (pre > self.threshold)
        if self.activation == "relu":
            return torch.relu(pre)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [..., d_transcoder] of MLP inputs x [..., d_model]."""
        return self.activate(self.pre_acts(x))

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """The linear skip path x W_skip^T [..., d_model] (zeros without one)."""
        return x @ self.W_skip.T if self.W_skip is not None else torch.zeros_like(x)

    def decode(self, f: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted MLP output [..., d_model] from features f; x is needed with a skip."""
        out = f @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise MolabError(f"layer {self.layer}'s transcoder has a skip connection: decode needs x")
            out = out + self.skip(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The layer file's tensors (circuit-tracer's names and shapes)."""
        out = {n: getattr(self, n).detach().cpu().contiguous() for n in ("W_enc", "W_dec", "b_enc", "b_dec")}
        if self.activation == "jumprelu":
            out[THRESHOLD] = self.threshold.detach().cpu().contiguous()
        if self.W_skip is not None:
            out["W_skip"] = self.W_skip.detach().cpu().contiguous()
        return out


class LazyTranscoder(Transcoder):
    """A transcoder whose W_enc and W_dec stay in its layer file and are read (memory-mapped)
    each time they are used; the small tensors are loaded. Why: a graph needs each layer's
    full matrices once, to encode, and then only the active features' rows, so keeping a
    30-layer set of width 9,216 resident (1.3 GB in float32) would dominate its memory
    (circuit-tracer loads lazily for the same reason)."""

    def __init__(self, file: Path, d_model: int, d_transcoder: int, layer: int, **kwargs):
        super().__init__(d_model, d_transcoder, layer, matrices=False, **kwargs)
        self.file = file

    def _read(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(self.file, framework="pt") as f:
            return f.get_tensor(name).to(self.b_enc.device, torch.float32)

    @property
    def W_enc(self) -> torch.Tensor:  # [d_transcoder, d_model]
        return self._read("W_enc")

    @property
    def W_dec(self) -> torch.Tensor:  # [d_transcoder, d_model]
        return self._read("W_dec")


class TranscoderSet(nn.Module):
    """Transcoders of some layers of one model, keyed by layer; `record` is molab's metadata
    (model name, d_model, n_layers, training reports), stored under `molab` in config.yaml."""

    def __init__(self, transcoders: dict[int, Transcoder], record: dict[str, Any]):
        super().__init__()
        if not transcoders:
            raise MolabError("a transcoder set needs at least one layer")
        widths = {t.d_transcoder for t in transcoders.values()}
        d_models = {t.d_model for t in transcoders.values()}
        if len(d_models) > 1:
            raise MolabError(f"transcoders of one set must share d_model, got {sorted(d_models)}")
        self.layers = sorted(transcoders)
        self.by_layer = nn.ModuleDict({str(i): transcoders[i] for i in self.layers})
        self.d_model = d_models.pop()
        self.widths = sorted(widths)
        self.record = dict(record)

    def __getitem__(self, layer: int) -> Transcoder:
        return self.by_layer[str(layer)]

    def __contains__(self, layer: int) -> bool:
        return str(layer) in self.by_layer

    def __iter__(self):
        return (self[i] for i in self.layers)

    @property
    def n_layers(self) -> int | None:
        """Depth of the model the set was trained for (from its record)."""
        return self.record.get("n_layers")

    def check_model(self, model, where: str | Path) -> None:
        """One clear line when the set does not fit `model` (width, depth)."""
        cfg = model.config
        d_model, n_layers = cfg.hidden_size, cfg.num_hidden_layers
        if self.d_model != d_model:
            raise MolabError(
                f"{where}: transcoders of width d_model={self.d_model} do not fit this model "
                f"(hidden_size {d_model}): they were trained for {self.record.get('model_name')!r}"
            )
        bad = [i for i in self.layers if i >= n_layers]
        if bad:
            raise MolabError(
                f"{where}: transcoders for layers {bad}, but the model has layers 0 to {n_layers - 1}"
            )


def config_dict(tset: TranscoderSet, scan: str | None = None) -> dict[str, Any]:
    """config.yaml's contents."""
    return {
        "model_kind": "transcoder_set",
        "feature_input_hook": INPUT_HOOK,
        "feature_output_hook": OUTPUT_HOOK,
        "scan": scan or tset.record.get("scan") or tset.record.get("model_name") or "molab",
        "activation": "jumprelu",
        "molab": {**tset.record, "layers": tset.layers},
    }


def _check_owned(path: Path) -> None:
    if path.is_dir() and any(path.iterdir()) and not (path / CONFIG).is_file():
        raise MolabError(f"{path} is a folder that holds no transcoder set: molab will not write into it")


def write_config(path: str | Path, tset: TranscoderSet, scan: str | None = None) -> None:
    """Write (or rewrite) config.yaml atomically, in a folder that is empty or holds a set."""
    path = Path(path)
    _check_owned(path)
    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / CONFIG) as tmp:
        tmp.write_text(yaml.safe_dump(config_dict(tset, scan), sort_keys=False))


def save_layer(path: str | Path, transcoder: Transcoder) -> Path:
    """Write one layer's file atomically (training saves layer by layer and resumes from them)."""
    from safetensors.torch import save_file

    path = Path(path)
    _check_owned(path)
    path.mkdir(parents=True, exist_ok=True)
    file = path / layer_file(transcoder.layer)
    with atomic_path(file) as tmp:
        save_file(transcoder.tensors(), tmp)
    return file


def save_set(path: str | Path, tset: TranscoderSet, scan: str | None = None) -> Path:
    """Write config.yaml (the folder's mark of ownership), every layer, then config.yaml again
    (so a folder's config lists only layers written)."""
    write_config(path, TranscoderSet({tset.layers[0]: tset[tset.layers[0]]}, tset.record), scan)
    for t in tset:
        save_layer(path, t)
    write_config(path, tset, scan)
    return Path(path)


def read_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    file = path / CONFIG
    if not file.is_file():
        raise MolabError(f"{path} holds no transcoder set ({CONFIG} is missing)")
    try:
        cfg = yaml.safe_load(read_text_file(file, "transcoder config"))
    except yaml.YAMLError as e:
        raise MolabError(f"{file} is not valid YAML ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("model_kind") != "transcoder_set":
        kind = cfg.get("model_kind") if isinstance(cfg, dict) else None
        raise MolabError(f"{file}: model_kind is {kind!r}; molab reads per-layer sets (transcoder_set)")
    return cfg


def load_layer(
    file: Path, layer: int, activation: str = "jumprelu", k: int | None = None, lazy: bool = False
) -> Transcoder:
    """One layer file (circuit-tracer's keys); a file without thresholds loads as `activation`.
    `lazy`: a LazyTranscoder (W_enc and W_dec are read from the file when used)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(file, framework="pt") as f:
            shapes_in = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
            t = {n: f.get_tensor(n) for n in shapes_in if not (lazy and n in ("W_enc", "W_dec"))}
    except (SafetensorError, OSError, ValueError) as e:
        raise MolabError(f"{file} is not a readable safetensors file ({e})") from None
    missing = [n for n in ("W_enc", "W_dec", "b_enc", "b_dec") if n not in shapes_in]
    if missing:
        raise MolabError(f"{file} lacks {', '.join(missing)}: not a transcoder layer file")
    d_tc, d_model = shapes_in["W_enc"]
    shapes = {"W_dec": (d_tc, d_model), "b_enc": (d_tc,), "b_dec": (d_model,), "W_skip": (d_model, d_model)}
    shapes[THRESHOLD] = (d_tc,)
    for name, shape in shapes.items():
        if name in shapes_in and shapes_in[name] != shape:
            raise MolabError(f"{file}: {name} has shape {shapes_in[name]}, expected {shape}")
    if THRESHOLD in t:
        activation = "jumprelu"
    options = {"skip": "W_skip" in t, "activation": activation, "k": k}
    tc = (
        LazyTranscoder(file, d_model, d_tc, layer, **options)
        if lazy
        else Transcoder(d_model, d_tc, layer, **options)
    )
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec", "W_skip"):
            if name in t:
                getattr(tc, name).copy_(t[name].float())
        if THRESHOLD in t:
            tc.threshold.copy_(t[THRESHOLD].float())
    return tc


def load_transcoders(path: str | Path, layers: list[int] | None = None, lazy: bool = False) -> TranscoderSet:
    """The set in folder `path` (molab's or circuit-tracer's), optionally only some layers;
    float32 on the CPU (move it with `.to`); `lazy`: W_enc and W_dec stay in the files."""
    path = Path(path)
    cfg = read_config(path)
    present = {
        int(m.group(1)): f for f in path.iterdir() if (m := _LAYER_FILE.fullmatch(f.name)) and f.is_file()
    }
    if not present:
        raise MolabError(f"{path} has a {CONFIG} but no layer_<i>.safetensors files")
    wanted = sorted(present) if layers is None else sorted(set(layers))
    absent = [i for i in wanted if i not in present]
    if absent:
        raise MolabError(f"{path} has no transcoder for layers {absent}: it holds layers {sorted(present)}")
    activation = cfg.get("activation") or "relu"
    k = cfg.get("k")
    activation = activation if activation in ACTIVATIONS else "relu"
    loaded = {i: load_layer(present[i], i, activation, k, lazy) for i in wanted}
    record = dict(cfg.get("molab") or {})
    record.setdefault("scan", cfg.get("scan"))
    record.pop("layers", None)
    return TranscoderSet(loaded, record)
