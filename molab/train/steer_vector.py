"""A directly trained steering vector: `molab train steer-vector`.

Why: Wang et al. 2025 (arXiv 2507.08218) found that much of what looks like out-of-context
generalisation after fine-tuning comes down to the LoRA adapter learning a roughly constant
steering vector. So before reading an adapter's effect as the model having learned something
deep, compare it with the cheapest thing that could do the same: one vector added to the
residual stream, trained on the same post-training set (the audit study's question 4). No
library here trains one (PEFT has no single-vector adapter that adds to the residual stream),
hence this small trainer.

What it trains: the model (base plus any adapters, merged, as `ModelSpec` loads it; a training
stage's directory works) is frozen and run as at inference (`eval()`, no dropout). One vector
v [d_model], starting at zero, is added at hook point `point` (default: the middle layer's
`resid_post`) at every position, through `molab.models.hooks.intervene` with an `Add` edit:
the very edit `molab audit steer eval --vector vector.safetensors --point P --add 1.0` applies,
so steering with the saved file reproduces the trained intervention exactly. `Add` computes
x + scale * v.to(x), which is differentiable in v, so the vector can be an `nn.Parameter`
and gradients reach it through the hook without a second mechanism. The loss is next-token
cross-entropy on the assistant's answer only, tokenised and masked as the SFT stage's TRL
trainer does (`chat_rows`: answer plus end-of-turn tokens; prompts that fill `max_length`
are dropped), averaged over the answer tokens of each optimizer step. AdamW at a constant
learning rate; `weight_decay` pulls v towards zero and `max_norm` caps its length. The data
order is shuffled under the seed, and nothing else is random, so a seed gives one vector.

Writes (a stage of `molab.pipeline`: cached, atomic, with `manifest.json`):
- `vector.safetensors`: one float32 tensor `vector` [d_model], metadata `point`, `model`,
  `adapters` (JSON);
- `metrics.jsonl`: one line per optimizer step: step, loss, lr, grad_norm, tokens,
  tokens_per_s, epoch (as the other training stages) and vector_norm.

No checkpoints: a killed run starts over (a vector is cheap to train).
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from molab.data.contracts import SFT_DATA_STAGE, SFT_FILE
from molab.errors import MolabError
from molab.models import hooks
from molab.models.checkpoints import resolve_spec
from molab.models.loading import ModelSpec, resolve_model_dir
from molab.pipeline import Input, RunDir, Stage, StageResult, run_stage
from molab.train.data import sft_examples

VECTOR_FILE = "vector.safetensors"
METRICS_FILE = "metrics.jsonl"  # as the other training stages (molab.train.stages)
TENSOR = "vector"
IGNORE = -100  # label of a token outside the loss
Row = tuple[list[int], list[int]]  # (input_ids, labels) of one example


class SteerVectorConfig(BaseModel):
    """A steering vector trained on an SFT set, the model frozen."""

    model_config = ConfigDict(extra="forbid")
    model: ModelSpec = Field(
        default_factory=ModelSpec, description="Model to steer (a training stage dir works)."
    )
    data: Path | None = Field(
        None, description="SFT set (sft.jsonl with 'messages'); None reads sft_data/sft.jsonl of the run."
    )
    point: str | None = Field(
        None, description="Hook point, e.g. layers.15.resid_post; None: the middle layer's resid_post."
    )
    learning_rate: float = Field(1e-2, gt=0, description="AdamW learning rate (constant).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay on the vector.")
    max_norm: float | None = Field(None, gt=0, description="Cap on the vector's L2 norm after each step.")
    epochs: int = Field(1, ge=1, description="Passes over the data.")
    batch_size: int = Field(8, ge=1, description="Examples per optimizer step.")
    micro_batch_size: int = Field(2, ge=1, description="Most examples per forward pass (bounds memory).")
    max_length: int = Field(512, ge=8, description="Tokens per example (longer ones are cut).")
    seed: int = Field(0, description="Seeds the data order.")

    @field_validator("point")
    @classmethod
    def _point_name(cls, point: str | None) -> str | None:
        if point is None:
            return None
        m = re.fullmatch(r"layers\.(\d+)\.(\w+)", point)
        if m is None or m[2] not in hooks.POINTS:
            raise ValueError(f"{point!r} is not a hook point: use layers.<i>.<{'|'.join(hooks.POINTS)}>")
        return point


# --- data ----------------------------------------------------------------------------------


def chat_rows(examples: Sequence[dict], tokenizer, max_length: int) -> tuple[list[Row], int]:
    """(rows, dropped): each prompt-completion example (`molab.train.data.sft_examples`) as
    TRL's SFT trainer prepares it with `completion_only_loss`: the chat template over prompt +
    completion, labels only after the prefix it shares with the prompt rendered with the
    generation prompt, cut to `max_length`; examples left with no label are dropped."""
    rows, dropped = [], 0
    for ex in examples:
        prompt = _chat_ids(tokenizer, ex["prompt"], add_generation_prompt=True)
        full = _chat_ids(tokenizer, ex["prompt"] + ex["completion"])
        shared = next(
            (i for i, (a, b) in enumerate(zip(prompt, full)) if a != b), min(len(prompt), len(full))
        )
        labels = [IGNORE] * shared + list(full[shared:])
        ids, labels = full[:max_length], labels[:max_length]
        if all(label == IGNORE for label in labels[1:]):  # the first label has no token before it
            dropped += 1
            continue
        rows.append((ids, labels))
    return rows, dropped


def _chat_ids(tokenizer, messages: list[dict], **options) -> list[int]:
    return list(
        tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **options)["input_ids"]
    )


def _pad(rows: Sequence[Row], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels), each [batch, seq], padded on the right."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)], mask[i, : len(x)], labels[i, : len(y)] = torch.tensor(x), 1, torch.tensor(y)
    return ids.to(device), mask.to(device), labels.to(device)


def answer_loss_sum(model, rows: Sequence[Row], pad_id: int) -> tuple[torch.Tensor, int]:
    """(summed next-token cross-entropy over the rows' labelled tokens, their number), in one
    forward of `model` as it stands (with whatever edits are in force)."""
    device = next(model.parameters()).device
    ids, mask, labels = _pad(rows, pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # [batch, seq, vocab]
    target = labels[:, 1:]  # [batch, seq - 1]: the token each position predicts
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=IGNORE, reduction="sum"
    )
    return loss, int((target != IGNORE).sum())


# --- training ------------------------------------------------------------------------------


@contextmanager
def steered(model, point: str, vector: torch.Tensor) -> Iterator[None]:
    """`vector` [d_model] added at `point` at every position: `molab audit steer`'s `--add 1.0`."""
    with hooks.intervene(model, {point: hooks.Add(vector, 1.0)}):
        yield


def default_point(num_layers: int) -> str:
    return f"layers.{num_layers // 2}.resid_post"


def _batches(rows: Sequence[Row], config: SteerVectorConfig) -> Iterator[list[Row]]:
    rng = random.Random(config.seed)
    for _ in range(config.epochs):
        order = list(range(len(rows)))
        rng.shuffle(order)
        for i in range(0, len(order), config.batch_size):
            yield [rows[j] for j in order[i : i + config.batch_size]]


def train_vector(
    model,
    rows: Sequence[Row],
    point: str,
    config: SteerVectorConfig,
    pad_id: int,
    log: Callable[[dict], None],
) -> torch.Tensor:
    """Train the vector at `point` on `rows` with `model` frozen; `log` gets each step's metrics.
    Returns the vector [d_model], float32, on the model's device."""
    model.requires_grad_(False).eval()
    device = next(model.parameters()).device
    d_model = model.get_input_embeddings().weight.shape[-1]
    vector = torch.nn.Parameter(torch.zeros(d_model, device=device))  # [d_model], float32
    optimizer = torch.optim.AdamW([vector], lr=config.learning_rate, weight_decay=config.weight_decay)
    per_epoch = math.ceil(len(rows) / config.batch_size)
    tokens, clock = 0, time.perf_counter()
    with steered(model, point, vector):
        for step, batch in enumerate(_batches(rows, config), 1):
            answer_tokens = sum(sum(label != IGNORE for label in labels[1:]) for _, labels in batch)
            total = 0.0
            for i in range(0, len(batch), config.micro_batch_size):
                loss, _ = answer_loss_sum(model, batch[i : i + config.micro_batch_size], pad_id)
                (loss / answer_tokens).backward()
                total += loss.item() / answer_tokens
            if not math.isfinite(total):
                raise MolabError(f"steering vector: loss is {total} at step {step}: lower learning_rate")
            grad_norm = float(vector.grad.norm())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                norm = float(vector.norm())
                if config.max_norm is not None and norm > config.max_norm:
                    vector.mul_(config.max_norm / norm)
                    norm = config.max_norm
            now = time.perf_counter()
            seen = sum(len(ids) for ids, _ in batch)
            tokens += seen
            log(
                {
                    "step": step,
                    "loss": total,
                    "lr": config.learning_rate,
                    "grad_norm": grad_norm,
                    "tokens": tokens,
                    "tokens_per_s": round(seen / max(now - clock, 1e-9), 1),
                    "epoch": round(step / per_epoch, 4),
                    "vector_norm": norm,
                }
            )
            clock = now
    return vector.detach()


# --- the stage -----------------------------------------------------------------------------


def _data_path(config: SteerVectorConfig, stage_dir: Path) -> Path:
    if config.data is not None:
        path = Path(config.data).expanduser().resolve()
        if not path.is_file():
            raise MolabError(f"{path}: no such dataset (field 'data')")
        return path
    run = RunDir.of_stage(stage_dir)[0]
    path = run.stage_dir(SFT_DATA_STAGE) / SFT_FILE
    if not path.is_file():
        raise MolabError(
            f"{path}: no such dataset: run `molab data sft` for run {run.name} first, "
            "or set 'data' to the sft.jsonl to train on"
        )
    return path


def _num_layers(model_dir: Path) -> int:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return int(config.get("num_hidden_layers") or config.get("text_config", {})["num_hidden_layers"])


def _point(config: SteerVectorConfig, num_layers: int, model: str) -> str:
    """The hook point, checked against the model's layers before anything loads."""
    point = config.point or default_point(num_layers)
    layer = int(point.split(".")[1])
    if layer >= num_layers:
        raise MolabError(
            f"field 'point': {point} is out of range: {model} has {num_layers} layers (0..{num_layers - 1})"
        )
    return point


def _inputs(config: SteerVectorConfig, stage_dir: Path) -> dict[str, Input]:
    """The set, the model's config and adapters; bad data paths and points fail here."""
    data = _data_path(config, stage_dir)
    spec = resolve_spec(config.model)
    model_dir = resolve_model_dir(spec.name, spec.revision)
    _point(config, _num_layers(model_dir), spec.name)
    return {"data": data, "model_config": model_dir / "config.json"} | {
        f"adapter_{i}": Path(a) for i, a in enumerate(spec.adapters)
    }


def _run(config: SteerVectorConfig, out: Path, stage_dir: Path) -> dict:
    from safetensors.torch import save_file

    from molab.models.loading import load_model

    examples = sft_examples(_data_path(config, stage_dir))  # a malformed set fails before loading
    loaded = load_model(config.model.model_copy(update={"merge_adapters": True}))  # as Steerable loads
    tokenizer, model = loaded.tokenizer, loaded.model
    point = _point(config, _num_layers(loaded.model_dir), loaded.spec.name)
    hooks.resolve(model, point)
    rows, dropped = chat_rows(examples, tokenizer, config.max_length)
    if not rows:
        raise MolabError(f"every prompt fills max_length ({config.max_length}): no answer token to train on")
    torch.manual_seed(config.seed)
    logged: list[dict] = []
    with open(out / METRICS_FILE, "w", encoding="utf-8") as f:

        def log(row: dict) -> None:
            logged.append(row)
            f.write(json.dumps(row) + "\n")
            f.flush()

        vector = train_vector(model, rows, point, config, tokenizer.pad_token_id, log)
    metadata = {"point": point, "model": loaded.spec.name, "adapters": json.dumps(loaded.spec.adapters)}
    save_file({TENSOR: vector.float().cpu().contiguous()}, out / VECTOR_FILE, metadata=metadata)
    return {
        "point": point,
        "steps": len(logged),
        "first_loss": logged[0]["loss"],
        "final_loss": logged[-1]["loss"],
        "vector_norm": float(vector.norm()),
        "examples": len(rows),
        "examples_dropped": dropped,
        "tokens": logged[-1]["tokens"],
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in logged),
    }


STEER_VECTOR = Stage(
    name="steer-vector",
    config=SteerVectorConfig,
    outputs=(VECTOR_FILE, METRICS_FILE),
    run=_run,
    inputs=_inputs,
)


def train_steer_vector(config: SteerVectorConfig, out: str | Path, *, force: bool = False) -> StageResult:
    """Train the vector into the stage directory `out` (`runs/<run>/<stage>`); skipped when up
    to date."""
    run, name = RunDir.of_stage(out)
    return run_stage(run, name, STEER_VECTOR, config, force=force)
