"""Sparse autoencoders (SAEs): the module every audit tool uses, its files, and checkpoints
made by other trainers.

Why: Marks et al. 2025 ("Auditing Language Models for Hidden Objectives") found the hidden
RM-sycophancy objective fastest through an SAE on the middle layer's residual stream: features
whose top activations were the synthetic documents, and features that fire on nearly every
assistant token. Steering (`molab.audit.steer`), feature views (`molab.audit.features`) and
the report read one SAE type, loaded by `load_sae`, whatever trained it.

The module (x [..., d_in] -> f [..., d_sae] -> x_hat [..., d_in]):
- pre-activations: pre = (x - b_dec) W_enc + b_enc (b_dec is subtracted when
  `apply_b_dec_to_input`, SAELens' default and what molab trains);
- `encode`: `standard` relu(pre); `jumprelu` pre where pre > threshold, else 0 (the inference
  form of molab's TopK and BatchTopK SAEs, Rajamanoharan et al. 2024; Bussmann et al. 2024);
  `topk` the k largest of relu(pre) per token (Gao et al. 2024; sparsify checkpoints);
- `decode`: f W_dec + b_dec.

Files, SAELens' layout (so SAELens, Neuronpedia tooling and molab read each other's SAEs):
`cfg.json` and `sae_weights.safetensors` with W_enc [d_in, d_sae], b_enc [d_sae], W_dec
[d_sae, d_in], b_dec [d_in], and threshold [d_sae] for jumprelu. The cfg has SAELens 6's fields
(`architecture`, `d_in`, `d_sae`, `dtype`, `device`, `apply_b_dec_to_input`,
`normalize_activations`, `reshape_activations`, `k` for topk, and `metadata` with `model_name`
and `hook_name`); `model_name` and `hook_name` are also written at the top level, where SAELens
5 and simpler readers look. molab's own record (how it was trained, the source mix of its
tokens, its evaluation) is `metadata.molab`. Hook names are molab's (`layers.15.resid_post`);
TransformerLens names in imported files (`blocks.15.hook_resid_post`) are translated.

Imports (`import_sae`): a SAELens folder, or an EleutherAI sparsify folder (`cfg.json` with
`d_in`, `k`, `num_latents` or `expansion_factor`; `sae.safetensors` with encoder.weight
[d_sae, d_in], encoder.bias, W_dec [d_sae, d_in], b_dec; its folder name is the hook point,
`layers.15` for a layer's output). sparsify encodes as relu, then top-k, after subtracting
b_dec: the `topk` architecture here. Transcoders (sparsify `transcode`, skip connections) are
not SAEs and are refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from molab.errors import MolabError
from molab.files import atomic_path, read_text_file, write_json

ARCHITECTURES = ("standard", "jumprelu", "topk")
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
CFG = "cfg.json"
# TransformerLens hook names (SAELens) -> molab points.
_TL_POINTS = {
    "hook_resid_pre": "resid_pre",
    "hook_resid_mid": "resid_mid",
    "hook_resid_post": "resid_post",
    "hook_attn_out": "attn_out",
    "hook_mlp_out": "mlp_out",
    "ln2.hook_normalized": "mlp_in",
}
# sparsify hook points (module names of a HF Llama) -> molab points.
_SPARSIFY_POINTS = {"": "resid_post", ".mlp": "mlp_out", ".self_attn": "attn_out"}


class SAE(nn.Module):
    """A sparse autoencoder at one hook point; see the module docstring for the maths."""

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        architecture: str = "jumprelu",
        hook_name: str,
        k: int | None = None,
        apply_b_dec_to_input: bool = True,
        model_name: str | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise MolabError(f"SAE architecture {architecture!r}: molab reads {', '.join(ARCHITECTURES)}")
        if architecture == "topk" and not (k and 0 < k <= d_sae):
            raise MolabError(f"a topk SAE needs k between 1 and d_sae={d_sae}, got {k}")
        self.d_in, self.d_sae = d_in, d_sae
        self.architecture, self.k, self.hook_name = architecture, k, hook_name
        self.apply_b_dec_to_input = apply_b_dec_to_input
        self.model_name = model_name
        self.metadata = dict(metadata or {})
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("threshold", torch.zeros(d_sae))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_in] -> [..., d_sae] before the nonlinearity."""
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [..., d_sae] of x [..., d_in]."""
        pre = self.pre_acts(x)
        if self.architecture == "jumprelu":
            return pre * (pre > self.threshold)
        acts = torch.relu(pre)
        if self.architecture == "topk":
            top = acts.topk(self.k, dim=-1)
            return torch.zeros_like(acts).scatter(-1, top.indices, top.values)
        return acts

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction [..., d_in] of activations f [..., d_sae]."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def cfg(self) -> dict[str, Any]:
        """The cfg.json contents (SAELens 6 fields, with top-level copies for older readers)."""
        cfg: dict[str, Any] = {
            "architecture": self.architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "dtype": str(self.W_enc.dtype).removeprefix("torch."),
            "device": "cpu",
            "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "normalize_activations": "none",
            "reshape_activations": "none",
            "model_name": self.model_name,
            "hook_name": self.hook_name,
            "metadata": {
                "model_name": self.model_name,
                "hook_name": self.hook_name,
                "hook_head_index": None,
                "prepend_bos": True,
                "sae_lens_training_version": None,
                "molab": self.metadata,
            },
        }
        if self.architecture == "topk":
            cfg["k"] = self.k
        return cfg

    def save(self, path: str | Path) -> Path:
        """Write the SAE to the folder `path` in SAELens' layout, atomically; an existing folder
        is replaced only when it is empty or holds an SAE."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.is_dir() and any(path.iterdir()) and not (path / CFG).is_file():
            raise MolabError(
                f"{path} is a folder that holds no SAE: molab will not replace it; choose another"
            )

        tensors = {
            n: getattr(self, n).detach().cpu().contiguous() for n in ("W_enc", "b_enc", "W_dec", "b_dec")
        }
        if self.architecture == "jumprelu":
            tensors["threshold"] = self.threshold.detach().cpu().contiguous()
        with atomic_path(path, replace_dir=True) as tmp:
            tmp.mkdir(parents=True)
            save_file(tensors, tmp / SAELENS_WEIGHTS)
            write_json(tmp / CFG, self.cfg())
        return Path(path)


def check_width(sae: SAE, d_model: int, what: str) -> None:
    """A one-line MolabError when `sae` reads vectors of another width than `what` has."""
    if sae.d_in != d_model:
        raise MolabError(
            f"the SAE reads vectors of width {sae.d_in} ({sae.model_name or 'another model'}), but "
            f"{what} has width {d_model}: it was trained on another model"
        )


def molab_point(name: str) -> str:
    """A TransformerLens (`blocks.3.hook_resid_post`) or sparsify (`layers.3`, `layers.3.mlp`)
    hook name as a molab point; molab names pass through."""
    if m := re.fullmatch(r"blocks\.(\d+)\.(.+)", name):
        if m[2] in _TL_POINTS:
            return f"layers.{m[1]}.{_TL_POINTS[m[2]]}"
    if m := re.fullmatch(r"(?:model\.)?layers\.(\d+)(|\.mlp|\.self_attn)", name):
        return f"layers.{m[1]}.{_SPARSIFY_POINTS[m[2]]}"
    return name


def _read_cfg(path: Path) -> dict:
    try:
        cfg = json.loads(read_text_file(path / CFG, "SAE config"))
    except json.JSONDecodeError as e:
        raise MolabError(f"{path / CFG} is corrupt ({e.msg})") from None
    if not isinstance(cfg, dict):
        raise MolabError(f"{path / CFG} should hold a JSON object")
    return cfg


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(file)
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise MolabError(f"{file}: cannot read it as safetensors ({e})") from None


def _fill(sae: SAE, tensors: dict[str, torch.Tensor], where: Path) -> SAE:
    """Copy tensors into `sae`, checking that each is there with its shape."""
    needed = ["W_enc", "b_enc", "W_dec", "b_dec"] + (["threshold"] if sae.architecture == "jumprelu" else [])
    with torch.no_grad():
        for name in needed:
            if name not in tensors:
                raise MolabError(f"{where} has no tensor {name!r} (it holds {', '.join(sorted(tensors))})")
            target = getattr(sae, name)
            value = tensors[name].float()
            if value.shape != target.shape:
                raise MolabError(
                    f"{where}: {name} has shape {tuple(value.shape)}, expected {tuple(target.shape)} "
                    f"for d_in={sae.d_in}, d_sae={sae.d_sae}"
                )
            target.copy_(value)
    return sae


def _load_saelens(path: Path, hook_name: str | None) -> SAE:
    cfg = _read_cfg(path)
    meta = cfg.get("metadata") or {}
    missing = [k for k in ("d_in", "d_sae") if k not in cfg]
    hook = hook_name or cfg.get("hook_name") or meta.get("hook_name")
    if missing:
        raise MolabError(f"{path / CFG} lacks {', '.join(missing)}: not an SAELens SAE config")
    if not hook:
        raise MolabError(
            f"{path / CFG} names no hook point (an SAE trained without a model): give it (--point)"
        )
    if cfg.get("normalize_activations") not in (None, "none"):
        raise MolabError(
            f"{path}: normalize_activations={cfg['normalize_activations']!r} is not supported "
            "(molab reads SAEs of raw activations)"
        )
    if cfg.get("hook_head_index", meta.get("hook_head_index")) is not None:
        raise MolabError(f"{path}: an SAE of one attention head is not supported")
    arch = cfg.get("architecture", "standard")
    sae = SAE(
        int(cfg["d_in"]),
        int(cfg["d_sae"]),
        architecture=arch,
        hook_name=molab_point(hook),
        k=cfg.get("k"),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        model_name=cfg.get("model_name") or meta.get("model_name"),
        metadata=meta.get("molab") or {},
    )
    return _fill(sae, _read_tensors(path / SAELENS_WEIGHTS), path / SAELENS_WEIGHTS)


def _load_sparsify(path: Path, hook_name: str | None) -> SAE:
    cfg = _read_cfg(path)
    if cfg.get("transcode") or cfg.get("skip_connection"):
        raise MolabError(f"{path} is a sparsify transcoder or skip SAE, not an SAE: molab imports plain SAEs")
    if "d_in" not in cfg or not cfg.get("k"):
        raise MolabError(f"{path / CFG} lacks d_in or k: not a sparsify SAE config")
    d_in = int(cfg["d_in"])
    d_sae = int(cfg.get("num_latents") or d_in * int(cfg.get("expansion_factor", 32)))
    tensors = _read_tensors(path / SPARSIFY_WEIGHTS)
    if "encoder.weight" not in tensors or "encoder.bias" not in tensors:
        raise MolabError(f"{path / SPARSIFY_WEIGHTS} has no encoder.weight/encoder.bias: not a sparsify SAE")
    sae = SAE(
        d_in,
        d_sae,
        architecture="topk",
        hook_name=hook_name or molab_point(path.name),
        k=int(cfg["k"]),
        metadata={"imported_from": "sparsify", "source_path": str(path)},
    )
    renamed = {"W_enc": tensors["encoder.weight"].T, "b_enc": tensors["encoder.bias"]}
    renamed |= {k: tensors[k] for k in ("W_dec", "b_dec") if k in tensors}
    return _fill(sae, renamed, path / SPARSIFY_WEIGHTS)


def load_sae(path: str | Path, hook_name: str | None = None) -> SAE:
    """The SAE in the folder `path` (SAELens layout, or a sparsify checkpoint), in float32 on
    the CPU, in eval mode. `hook_name` overrides the point a sparsify folder's name gives."""
    path = Path(path)
    if (path / SAELENS_WEIGHTS).is_file():
        sae = _load_saelens(path, hook_name)
    elif (path / SPARSIFY_WEIGHTS).is_file():
        sae = _load_sparsify(path, hook_name)
    elif path.is_dir() and any((p / SPARSIFY_WEIGHTS).is_file() for p in path.iterdir()):
        names = sorted(p.name for p in path.iterdir() if (p / SPARSIFY_WEIGHTS).is_file())
        raise MolabError(
            f"{path} holds SAEs for several hook points ({', '.join(names[:5])}): name one folder"
        )
    else:
        raise MolabError(
            f"{path}: no SAE there (an SAE folder holds {CFG} with {SAELENS_WEIGHTS}, or sparsify's "
            f"{SPARSIFY_WEIGHTS})"
        )
    return sae.eval()


def import_sae(path: str | Path, out: str | Path, hook_name: str | None = None) -> SAE:
    """Convert the SAE at `path` (SAELens or sparsify) into molab's folder `out`."""
    sae = load_sae(path, hook_name)
    sae.metadata.setdefault("imported_from", "saelens")
    sae.metadata.setdefault("source_path", str(path))
    sae.save(out)
    return sae
