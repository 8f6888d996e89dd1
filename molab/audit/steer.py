"""Steering and ablation: push on a sparse autoencoder feature (or a raw direction) while the
model generates or scores, and measure what that changes.

Why: a feature an auditor suspects of carrying the hidden objective is only evidence once
pushing on it moves the behaviour. Marks et al. 2025 ("Auditing Language Models for Hidden
Objectives") steered with SAE features to confirm that the reward-model-bias features were
causal; the open replication adds the steering-effect score below. A feature's effect means
little alone, so `control_features` picks random features of the same scale to compare with.

Edits, all at the SAE's hook point (`molab.models.hooks`), at every position:
- scale feature f by (1 + a): x + a f(x) W_dec[f], with f(x) the feature's activation encoded
  from x itself. Done as `Replace`: encode x, scale the chosen activations, add the change in
  the decoded output to x. x is never replaced by the SAE's reconstruction, so its error term
  (what the SAE misses) stays, and a feature that is inactive on a token leaves it exactly as
  it was;
- ablate: the same with the activations set to 0;
- add c: x + c W_dec[f] (a steering vector; one per feature, summed);
- a raw direction from a file (`.safetensors` with one tensor, or `.npy`) at any point: add c
  times it, scale the stream's component along it by (1 + a), or ablate that component.

Through generation: the hf backend applies the edits on both of its paths (the fast decoder
and the generic loop); vLLM runs its own forward, where no hook runs, and the openai backend
a remote model, so both are refused before anything loads.

Measuring an evaluation (`steer_stages`): the evaluation stage runs twice on one loaded model,
into two stage directories of one run folder: `unsteered` (the evaluation's own stage, its own
config class: what `molab eval <name>` would write, so an existing one can be reused) and
`steered`, whose config is the evaluation's config class extended with an `intervention` field
(`Steered<Config>`). Putting the intervention in the config, rather than only in a directory
name or the metrics, is what makes caching right: the config hash covers it (another feature
or scale re-runs the stage), the SAE or direction file is hashed as an input, and the manifest
records both the intervention and a config class that says "steered", so an unsteered stage is
never taken for a steered one or replaced by it. The evaluation's own fields stay at the top
level of the config, so tools that read them from a manifest (a split, a seed) work unchanged.
Controls go to `control-f<c>` stages the same way.

The steering-effect score (`steering_effect`): SE = log p(C | f scaled by 1 + a) -
log p(C | f scaled by 1 - a) for a completion C after a prompt, summed over C's tokens;
positive when raising the feature makes C likelier.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from molab.errors import MolabError
from molab.models import hooks
from molab.models.generation import HFBackendConfig, Prompt
from molab.models.hooks import Ablate, Add, Edit, Replace, Scale
from molab.models.loading import ModelSpec
from molab.pipeline import (
    MANIFEST,
    RunDir,
    Stage,
    StageResult,
    config_hash,
    load_manifest,
    run_stage,
    stage_state,
)

UNSTEERED = "unsteered"
STEERED = "steered"


# --- what to change ---------------------------------------------------------------------


class Intervention(BaseModel):
    """One edit: SAE `features` (with `sae`) or a direction file (`vector`, at `point`).

    `op` scale multiplies the feature (or the component along the direction) by 1 + `amount`;
    add adds `amount` times its decoder row (or the direction); ablate sets it to 0."""

    model_config = ConfigDict(extra="forbid")
    op: Literal["scale", "add", "ablate"]
    amount: float = Field(0.0, description="scale: a (x 1+a); add: the coefficient; ablate: unused (0).")
    sae: Path | None = Field(None, description="SAE directory (SAELens layout).")
    features: list[int] = Field(default_factory=list, description="SAE feature indices.")
    vector: Path | None = Field(None, description="A direction: .safetensors with one tensor, or .npy.")
    point: str | None = Field(None, description="Hook point; default (and required equal) the SAE's.")

    @model_validator(mode="after")
    def _one_source(self) -> Intervention:
        if (self.sae is None) == (self.vector is None):
            raise ValueError("give an SAE with features, or a direction vector file, not both")
        if self.sae is not None and not self.features:
            raise ValueError("an SAE intervention needs at least one feature")
        if self.vector is not None and (self.features or self.point is None):
            raise ValueError("a direction vector needs a hook point and takes no features")
        if any(f < 0 for f in self.features) or len(set(self.features)) != len(self.features):
            raise ValueError(f"features must be distinct non-negative indices, not {self.features}")
        if self.op == "ablate" and self.amount:
            raise ValueError("ablate takes no amount")
        return self

    def label(self) -> str:
        """What it does, in a few words (for output and manifests)."""
        what = f"feature {'+'.join(map(str, self.features))}" if self.sae else f"direction {self.vector}"
        if self.op == "ablate":
            return f"ablate {what}"
        if self.op == "add":
            return f"add {self.amount:g} x {what}"
        return f"scale {what} by {1 + self.amount:g}"

    def inputs(self) -> dict[str, Path]:
        """The files it reads, hashed into a stage's manifest."""
        return {"sae": self.sae} if self.sae is not None else {"vector": self.vector}


# --- edits ------------------------------------------------------------------------------


def _d_model(model) -> int:
    return int(model.get_input_embeddings().weight.shape[-1])


def _name(model) -> str:
    return getattr(getattr(model, "config", None), "name_or_path", None) or type(model).__name__


def check_sae(sae, features: Sequence[int], model=None, where: str = "the SAE") -> None:
    """A MolabError unless `features` index `sae` and (given a model) the SAE reads vectors of
    the model's width at a point the model has."""
    bad = [f for f in features if not 0 <= f < sae.d_sae]
    if bad:
        raise MolabError(
            f"feature {bad[0]} is out of range: {where} has {sae.d_sae} features (0..{sae.d_sae - 1})"
        )
    if model is not None:
        if sae.d_in != _d_model(model):
            raise MolabError(
                f"{where} reads vectors of width {sae.d_in}, but {_name(model)} has d_model "
                f"{_d_model(model)}: it was trained on another model"
            )
        hooks.resolve(model, sae.hook_name)


def feature_edit(sae, features: Sequence[int], op: str, amount: float = 0.0) -> Edit:
    """The edit at `sae.hook_name` that scales (by 1 + amount), ablates, or adds `amount`
    decoder rows of `features`; see the module docstring for the error-preserving form."""
    idx = torch.tensor(list(features), dtype=torch.long)
    if op == "add":
        return Add(sae.W_dec.detach()[idx].sum(0), amount)  # (d_in,)
    keep = 1.0 + amount if op == "scale" else 0.0

    def edit(x: torch.Tensor) -> torch.Tensor:  # x: [batch, seq, d_in]
        h = x.to(sae.W_dec.dtype)
        f = sae.encode(h)  # [batch, seq, d_sae]
        g = f.clone()
        g[..., idx] = f[..., idx] * keep
        return x + (sae.decode(g) - sae.decode(f)).to(x.dtype)  # zero where the features are off

    return Replace(edit)


def read_vector(path: Path) -> torch.Tensor:
    """The direction in a `.safetensors` file (one tensor) or a `.npy` file, as [d] float32."""
    path = Path(path)
    if not path.is_file():
        raise MolabError(f"direction file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(path)
        except (SafetensorError, OSError) as e:
            raise MolabError(f"{path} is not a readable safetensors file: {e}") from None
        if len(tensors) != 1:
            raise MolabError(
                f"{path} holds {len(tensors)} tensors ({', '.join(tensors)}): give a file with one"
            )
        v = next(iter(tensors.values()))
    elif path.suffix == ".npy":
        import numpy as np

        try:
            v = torch.from_numpy(np.load(path, allow_pickle=False))
        except (ValueError, OSError) as e:
            raise MolabError(f"{path} is not a readable .npy file: {e}") from None
    else:
        raise MolabError(f"direction file {path}: use .safetensors (one tensor) or .npy")
    if v.dim() == 0 or v.numel() != v.shape[-1]:
        raise MolabError(f"{path} holds a tensor of shape {tuple(v.shape)}: a direction is one vector")
    return v.reshape(-1).float()


def direction_edit(vector: torch.Tensor, op: str, amount: float = 0.0) -> Edit:
    """Add `amount` x vector, scale the component along it by 1 + amount, or ablate it."""
    if op == "add":
        return Add(vector, amount)
    return Ablate(vector) if op == "ablate" else Scale(vector, 1.0 + amount)


def check_backend(config) -> None:
    """A MolabError unless `config` (a backend config, or None) generates where edits apply."""
    kind = getattr(config, "kind", "hf")
    if kind == "vllm":
        raise MolabError(
            "steering cannot use the vllm backend: vLLM runs its own forward, where activation edits "
            "never apply; set backend.kind=hf"
        )
    if kind == "openai":
        raise MolabError(
            "steering cannot use the openai backend: it generates with a remote model whose activations "
            "molab cannot reach; steer a local model with backend.kind=hf"
        )


# --- a model to steer -------------------------------------------------------------------


class Steerable:
    """A local model loaded once (adapters merged), with an hf generation backend and a scorer
    over it, and the edits of interventions (SAEs loaded once each, on the model's device)."""

    def __init__(self, spec: ModelSpec, backend: HFBackendConfig | None = None):
        from molab.models.loading import load_model

        check_backend(backend)
        self.loaded = load_model(spec.model_copy(update={"merge_adapters": True}))
        self.model, self.tokenizer = self.loaded.model, self.loaded.tokenizer
        self.backend_config = backend or HFBackendConfig()
        self._backend = None
        self._saes: dict[Path, Any] = {}

    def backend(self):
        """The hf backend over this model (built once: on CPU it packs the weights)."""
        if self._backend is None:
            from molab.models.generation.hf_backend import HFBackend
            from molab.models.generation.prompts import stop_token_ids

            stops = stop_token_ids(self.tokenizer, self.loaded.model_dir)
            self._backend = HFBackend(
                self.model, self.tokenizer, self.backend_config, stops, self.loaded.spec.name
            )
        return self._backend

    def scorer(self, *, end_turn: bool = False, max_batch_tokens: int = 8192):
        """A `molab.evals.scoring.Scorer` over this model."""
        from molab.evals.scoring import score_continuations

        def score(contexts, continuations):
            return score_continuations(
                self.model,
                self.tokenizer,
                contexts,
                continuations,
                end_turn=end_turn,
                max_batch_tokens=max_batch_tokens,
            )

        return score

    def sae(self, path: Path):
        """The SAE at `path`, loaded once, on the model's device."""
        path = Path(path)
        if path not in self._saes:
            from molab.audit.sae import load_sae

            device = next(self.model.parameters()).device
            self._saes[path] = load_sae(path).to(device).eval()
        return self._saes[path]

    def edits(self, intervention: Intervention) -> dict[str, Edit]:
        """Point name -> the edit, checked against this model (width, point, features)."""
        if intervention.sae is not None:
            sae = self.sae(intervention.sae)
            check_sae(sae, intervention.features, self.model, f"the SAE at {intervention.sae}")
            if intervention.point not in (None, sae.hook_name):
                raise MolabError(
                    f"the SAE at {intervention.sae} was trained at {sae.hook_name}, not {intervention.point}"
                )
            return {
                sae.hook_name: feature_edit(sae, intervention.features, intervention.op, intervention.amount)
            }
        vector = read_vector(intervention.vector)
        hooks.resolve(self.model, intervention.point)
        if vector.shape[-1] != _d_model(self.model):
            raise MolabError(
                f"{intervention.vector} holds a direction of width {vector.shape[-1]}, but "
                f"{_name(self.model)} has d_model {_d_model(self.model)}"
            )
        return {intervention.point: direction_edit(vector, intervention.op, intervention.amount)}

    @contextmanager
    def steered(self, intervention: Intervention) -> Iterator[None]:
        """The intervention in force on this model."""
        with hooks.intervene(self.model, self.edits(intervention)):
            yield


# --- the steering-effect score ------------------------------------------------------------


@dataclass(frozen=True)
class SteeringEffect:
    """log p(C) with the features scaled by 1 + alpha (`up`) and by 1 - alpha (`down`)."""

    features: tuple[int, ...]
    alpha: float
    logp_up: float
    logp_down: float
    tokens: int

    @property
    def se(self) -> float:
        return self.logp_up - self.logp_down

    def record(self) -> dict:
        return {
            "features": list(self.features),
            "alpha": self.alpha,
            "se": self.se,
            "logp_up": self.logp_up,
            "logp_down": self.logp_down,
            "tokens": self.tokens,
        }


def steering_effect(
    target: Steerable, sae: Path, features: Sequence[int], alpha: float, prompt: Prompt, completion: str
) -> SteeringEffect:
    """SE of `completion` after `prompt` (a chat prompt is rendered with the chat template)."""
    scores = []
    for sign in (1.0, -1.0):
        iv = Intervention(op="scale", amount=sign * alpha, sae=sae, features=list(features))
        with target.steered(iv):
            scores.append(target.scorer()([prompt], [completion])[0])
    up, down = scores
    return SteeringEffect(tuple(features), alpha, up.logprob, down.logprob, up.num_tokens)


# --- random features of the same scale ----------------------------------------------------


def feature_scales(sae, cache=None, max_tokens: int = 200_000, batch_size: int = 4096) -> torch.Tensor:
    """[d_sae] how much each feature writes: the mean over a cache's tokens (of `sae.hook_name`,
    at most `max_tokens`) of f(x) ||W_dec[f]||; without a cache, ||W_dec[f]|| alone."""
    norms = sae.W_dec.detach().float().norm(dim=-1).cpu()  # [d_sae]
    if cache is None:
        return norms
    if cache.d_model != sae.d_in:
        raise MolabError(f"the activation cache {cache.path} has width {cache.d_model}, the SAE {sae.d_in}")
    total, seen = torch.zeros(sae.d_sae), 0
    device = sae.W_dec.device
    with torch.no_grad():
        for batch in cache.batches(sae.hook_name, batch_size, seed=0):  # [n, d_in]
            batch = batch[: max_tokens - seen]
            total += sae.encode(batch.to(device, sae.W_dec.dtype)).float().sum(0).cpu()
            seen += len(batch)
            if seen >= max_tokens:
                break
    if not seen:
        raise MolabError(f"the activation cache {cache.path} holds no tokens of {sae.hook_name}")
    return total / seen * norms


def control_features(
    scales: torch.Tensor, features: Sequence[int], n: int, *, seed: int = 0, pool: int | None = None
) -> list[int]:
    """`n` random features (seeded) among the `pool` (default max(4n, 32)) whose scale is
    nearest, in log scale, to the mean scale of `features`; never those features, nor dead ones
    (scale 0)."""
    if n <= 0:
        return []
    target = float(scales[list(features)].mean())
    if target <= 0:
        raise MolabError(f"features {list(features)} never activate here: they have no scale to match")
    chosen = set(features)
    alive = [i for i in range(len(scales)) if i not in chosen and scales[i] > 0]
    if len(alive) < n:
        raise MolabError(f"only {len(alive)} other live features: cannot pick {n} controls")
    alive.sort(key=lambda i: (abs(math.log(float(scales[i]) / target)), i))
    near = alive[: max(pool or max(4 * n, 32), n)]
    g = torch.Generator().manual_seed(seed)
    return sorted(near[i] for i in torch.randperm(len(near), generator=g)[:n].tolist())


# --- steered evaluation stages ------------------------------------------------------------

RunOn = Callable[[BaseModel, Path, Steerable], dict]  # (config, out_dir, model) -> metrics


@cache
def steered_config(base: type[BaseModel]) -> type[BaseModel]:
    """`base` (an evaluation's config class) with an `intervention` field: `Steered<Base>`."""
    return create_model(
        f"Steered{base.__name__}",
        __base__=base,
        __doc__=f"{base.__name__} of a model under an intervention (molab.audit.steer).",
        intervention=(Intervention, ...),
    )


def steered_stages(stage: Stage, run_on: RunOn, target: Callable[[], Steerable]) -> tuple[Stage, Stage]:
    """(unsteered, steered) versions of evaluation `stage`, running `run_on` on `target()`.
    The unsteered one is `stage` itself (name, config class, inputs) on the shared model."""
    plain = Stage(
        stage.name, stage.config, stage.outputs, lambda c, out, _: run_on(c, out, target()), stage.inputs
    )

    def run(config, out: Path, _) -> dict:
        model = target()
        with model.steered(config.intervention):
            metrics = run_on(config, out, model)
        return {**metrics, "intervention": config.intervention.label()}

    def inputs(config, stage_dir: Path) -> dict:
        return stage.inputs(config, stage_dir) | config.intervention.inputs()

    return plain, Stage(f"steered-{stage.name}", steered_config(stage.config), stage.outputs, run, inputs)


@dataclass
class SteerResults:
    """The stages written (or found up to date): unsteered, steered, and per control feature."""

    unsteered: StageResult
    steered: StageResult
    controls: dict[int, StageResult] = field(default_factory=dict)


def baseline_config(stage: Stage, baseline: Path):
    """The config of a finished unsteered stage of `stage`'s kind at `baseline`."""
    manifest = load_manifest(baseline)
    if manifest.get("status") != "complete":
        raise MolabError(f"{baseline} is not a finished stage (its {MANIFEST} says {manifest.get('status')})")
    if manifest.get("config_class") != stage.config.__name__:
        raise MolabError(
            f"{baseline} holds a {manifest.get('config_class')} stage, not an unsteered {stage.name} "
            f"stage ({stage.config.__name__})"
        )
    return stage.config.model_validate(manifest["config"])


def steer_stages(
    stage: Stage,
    run_on: RunOn,
    config: BaseModel,
    intervention: Intervention,
    out: Path,
    *,
    baseline: Path | None = None,
    controls: Sequence[int] = (),
    force: bool = False,
) -> SteerResults:
    """Run evaluation `stage` unsteered (or take the finished stage `baseline`) and steered, and
    once per control feature (the intervention on that feature alone), as stages of the run
    folder `out`; every stage that runs shares one loaded model. Up-to-date stages are skipped.
    Inputs are checked (backend, features, and once the model is loaded its width and point)
    before any stage runs."""
    check_backend(getattr(config, "backend", None))
    if baseline is not None and load_manifest(baseline).get("config_hash") != config_hash(config):
        raise MolabError(f"the config differs from that of the baseline {baseline}: steer with its config")
    out = Path(out).expanduser().resolve()
    run = RunDir(out.name, out.parent)
    loaded: list[Steerable] = []

    def target() -> Steerable:
        if not loaded:
            loaded.append(Steerable(config.model, getattr(config, "backend", None)))
        return loaded[0]

    plain, steered = steered_stages(stage, run_on, target)
    cls = steered_config(stage.config)
    base = dict(config)
    plan: list[tuple[str, Stage, BaseModel]] = [] if baseline else [(UNSTEERED, plain, config)]
    plan.append((STEERED, steered, cls.model_validate({**base, "intervention": intervention})))
    for c in controls:
        iv = intervention.model_copy(update={"features": [c]})
        plan.append((f"control-f{c}", steered, cls.model_validate({**base, "intervention": iv})))

    ivs = [cfg.intervention for _, st, cfg in plan if st is steered]
    if intervention.sae is not None:  # the controls share its SAE
        from molab.audit.sae import load_sae

        used = sorted({f for iv in ivs for f in iv.features})
        check_sae(load_sae(intervention.sae), used, where=f"the SAE at {intervention.sae}")
    if any(force or stage_state(run, name, st, cfg) == "to run" for name, st, cfg in plan):
        for iv in ivs:
            target().edits(iv)
    results = {name: run_stage(run, name, st, cfg, force=force) for name, st, cfg in plan}
    if baseline is not None:
        manifest = load_manifest(baseline)
        results[UNSTEERED] = StageResult(Path(baseline), manifest, skipped=True)
    return SteerResults(results[UNSTEERED], results[STEERED], {c: results[f"control-f{c}"] for c in controls})


def side_by_side(unsteered: dict, steered: dict) -> dict[str, dict]:
    """The numbers two stages' metrics share: unsteered, steered and steered - unsteered."""
    out = {}
    for key, a in unsteered.items():
        b = steered.get(key)
        if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
            out[key] = {"unsteered": a, "steered": b, "diff": b - a}
    return out
