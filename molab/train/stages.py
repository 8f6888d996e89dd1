"""The three training stages on transformers + PEFT + TRL: mid-training, SFT and DPO.

Run (each writes `runs/x/<stage>/`: `adapter/` or `model/`, `model.json`, `metrics.jsonl`):

    molab train midtrain --out runs/x/midtrain                    # reads runs/x/docs/documents.parquet
    molab train sft --out runs/x/sft --stack-on runs/x/midtrain   # reads runs/x/sft_data/sft.jsonl
    molab train dpo --out runs/x/dpo --stack-on runs/x/sft        # reads runs/x/dpo_data/dpo.jsonl
    accelerate launch --config_file recipes/accelerate/ddp.yaml $(which molab) train sft ...  # many GPUs

- Mid-training: SFTTrainer on plain text (loss on every token), packed by TRL ('wrapped' by
  default: full rows, no padding); the padding fraction goes into the stage's metrics.
- SFT: SFTTrainer on prompt-completion conversations, loss on the completion only.
- DPO: DPOTrainer; the reference is the start model (new adapter off, or a frozen copy).

Every stage runs through `run_stage` (manifest, caching, atomic output) and trains in the run's
work directory, where checkpoints survive a kill; starting the stage again resumes from the
last complete one. A NaN or infinite loss stops training before that step is saved.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
import statistics
from functools import partial
from pathlib import Path

from molab.data.contracts import DOCS_STAGE, DOCUMENTS, DPO_DATA_STAGE, DPO_FILE, SFT_DATA_STAGE, SFT_FILE
from molab.errors import MolabError
from molab.files import sha256_file
from molab.models.checkpoints import ADAPTER_DIR, FULL_MODEL_DIR, MODEL_FILE
from molab.models.loading import ModelSpec, resolve_model_dir
from molab.pipeline import Input, RunDir, Stage, StageResult, hash_path, run_stage
from molab.train import data as train_data
from molab.train.adapters import (
    load_start_model,
    lora_config,
    start_spec,
    write_stage_model,
)
from molab.train.config import DPOTrainConfig, MidtrainConfig, SFTTrainConfig, TrainConfig
from molab.train.resume import complete_checkpoints, prepare_work_dir

METRICS_FILE = "metrics.jsonl"
# Where each stage finds its data in the same run when `data` is not set: the data stage's
# first output (the data contracts, named once, by the data stages).
DEFAULT_DATA = {
    "midtrain": (DOCS_STAGE, DOCUMENTS),
    "sft": (SFT_DATA_STAGE, SFT_FILE),
    "dpo": (DPO_DATA_STAGE, DPO_FILE),
}


def process_rank() -> tuple[int, int]:
    """(rank, number of processes) of a distributed launch; (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _train_inputs(kind: str, config: TrainConfig, stage_dir: Path) -> dict[str, Input]:
    """The dataset, the start model's config and adapters, and the replay or document text mixed
    in. Errors for missing files come here, before anything is loaded."""
    data = _data_path(kind, config, RunDir.of_stage(stage_dir)[0])
    start = start_spec(config.model, config.stack_on)
    model_dir = resolve_model_dir(start.name, start.revision)
    inputs: dict[str, Input] = {"data": data, "model_config": model_dir / "config.json"}
    inputs |= {f"adapter_{i}": Path(a) for i, a in enumerate(start.adapters)}
    if isinstance(config, MidtrainConfig) and config.replay is not None and config.replay_fraction > 0:
        inputs["replay"] = Path(config.replay)
    if isinstance(config, SFTTrainConfig) and config.document_fraction > 0:
        if config.documents is None:
            raise MolabError("field 'document_fraction' is above 0 but no 'documents' file is set")
        if not Path(config.documents).is_file():
            raise MolabError(f"{config.documents}: no such documents file (field 'documents')")
        inputs["documents"] = Path(config.documents)
    return inputs


def _run_training(kind: str, restart: bool, config: TrainConfig, tmp: Path, stage_dir: Path) -> dict:
    run, name = RunDir.of_stage(stage_dir)
    if restart and process_rank()[0] == 0:  # under the stage's lock: no other writer's checkpoints go
        run.remove_work_dir(name)
    data = _data_path(kind, config, run)
    start = start_spec(config.model, config.stack_on)
    return _train(kind, config, data, start, run.work_dir(name), tmp, stage_dir, resume=not restart)


def _training_stage(kind: str, config: type[TrainConfig], restart: bool = False) -> Stage:
    return Stage(
        name=kind,
        config=config,
        # adapter/ (LoRA) or model/ (full fine-tuning) beside model.json, which says how to load it.
        outputs=(MODEL_FILE, METRICS_FILE, ADAPTER_DIR, FULL_MODEL_DIR),
        run=partial(_run_training, kind, restart),
        inputs=partial(_train_inputs, kind),
    )


MIDTRAIN = _training_stage("midtrain", MidtrainConfig)
SFT = _training_stage("sft", SFTTrainConfig)
DPO = _training_stage("dpo", DPOTrainConfig)
TRAINING_STAGES = {"midtrain": MIDTRAIN, "sft": SFT, "dpo": DPO}


def train_stage(
    kind: str, config: TrainConfig, out: str | Path, *, force: bool = False, restart: bool = False
) -> StageResult:
    """Run training stage `kind` ('midtrain', 'sft' or 'dpo') into the stage directory `out`
    (`runs/<run>/<stage>`). `restart` deletes its checkpoints instead of resuming from them."""
    run, name = RunDir.of_stage(out)
    stage = _training_stage(kind, TRAINING_STAGES[kind].config, restart)
    rank, _ = process_rank()
    return run_stage(run, name, stage, config, force=force or restart, main_process=rank == 0)


def _data_path(kind: str, config: TrainConfig, run: RunDir) -> Path:
    if config.data is not None:
        path = Path(config.data).expanduser().resolve()
        if not path.is_file():
            raise MolabError(f"{path}: no such dataset (field 'data')")
        return path
    stage, filename = DEFAULT_DATA[kind]
    path = run.stage_dir(stage) / filename
    if not path.is_file():
        raise MolabError(
            f"{path}: no such dataset: run `molab data {stage.removesuffix('_data')}` for run "
            f"{run.name} first, or set 'data' to the {path.name} to train on"
        )
    return path


def _train(
    kind: str,
    config: TrainConfig,
    data: Path,
    start: ModelSpec,
    work: Path,
    out: Path,
    final: Path,
    resume: bool,
) -> dict:
    """Train and write the stage's outputs into `out` (renamed to `final` afterwards)."""
    from molab.train.callbacks import StepMetrics, StopOnNonFinite

    rank, world = process_rank()
    main = rank == 0
    dataset, counts = _dataset(kind, config, data)
    model, tokenizer, model_dir = load_start_model(start, config.method)
    fingerprint = {
        "kind": kind,
        "base": start.name,
        "base_config_sha256": sha256_file(model_dir / "config.json"),
        "frozen_adapters": [hash_path(Path(a)) for a in start.adapters],
        "method": config.method,
        "lora": config.lora.model_dump(mode="json") if config.method == "lora" else None,
    }
    # With --restart the main process has emptied `work`; the others must not read it meanwhile.
    checkpoint = prepare_work_dir(work, fingerprint, main=main) if main or resume else None
    stop = StopOnNonFinite()
    callbacks = [StepMetrics(work / METRICS_FILE, write=main), stop]
    trainer = build_trainer(kind, config, model, tokenizer, dataset, work, world, callbacks)
    if kind == "midtrain":
        counts |= _packing_stats(trainer.train_dataset, config.max_length)
    else:
        counts["examples_dropped"] = len(dataset) - len(trainer.train_dataset)  # prompt alone too long
        if not len(trainer.train_dataset):
            raise MolabError(f"{data}: every prompt fills max_length ({config.max_length} tokens): raise it")
        if isinstance(config, SFTTrainConfig) and config.document_fraction > 0:
            counts |= mix_documents(trainer, config, tokenizer)

    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if stop.bad_step is not None:
        kept = complete_checkpoints(work)
        where = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint was saved before it"
        values = ", ".join(f"{k} is {v}" for k, v in stop.bad_values.items())
        raise MolabError(
            f"{kind} stage {final.name}: {values} at step {stop.bad_step}; training stopped and {where} "
            "(lower learning_rate and pass --restart, or re-run to resume from that checkpoint)"
        )
    weights = out / (ADAPTER_DIR if config.method == "lora" else FULL_MODEL_DIR)
    trainer.save_model(str(weights))  # on every process: FSDP and ZeRO-3 gather the weights
    if not main:
        return {"steps": trainer.state.global_step}
    (weights / "training_args.bin").unlink(missing_ok=True)  # a pickle; the manifest has the config
    write_stage_model(out, final, start, config.method)
    shutil.copyfile(work / METRICS_FILE, out / METRICS_FILE)
    resumed = int(checkpoint.name.split("-")[1]) if checkpoint else None
    return _summary(kind, trainer.state, world, resumed) | counts


def _dataset(kind: str, config: TrainConfig, data: Path):
    """The stage's training set as a `datasets.Dataset` in TRL's format, and its counts."""
    from datasets import Dataset

    if kind == "midtrain":
        assert isinstance(config, MidtrainConfig)
        texts, counts = train_data.midtrain_texts(
            data, config.document_tag, config.replay, config.replay_fraction, config.seed
        )
        return Dataset.from_dict({"text": texts}), counts
    rows = train_data.sft_examples(data) if kind == "sft" else train_data.dpo_examples(data)
    return Dataset.from_list(rows), {"examples": len(rows)}


def mix_documents(trainer, config: SFTTrainConfig, tokenizer) -> dict:
    """Add pieces of `config.documents` to the trainer's prepared SFT rows, so that they make up
    `document_fraction` of the rows (fewer if the documents run out); returns the counts.

    The SFT rows stay as TRL prepared them (chat template, completion-only labels); document
    rows carry a label on every token, like mid-training's. Pieces are drawn under the seed."""
    from datasets import Dataset, concatenate_datasets

    assert config.documents is not None
    sft = trainer.train_dataset.select_columns(["input_ids", "labels"])
    pieces = train_data.document_pieces(
        Path(config.documents), tokenizer, config.document_tag, config.max_length
    )
    wanted = round(len(sft) * config.document_fraction / (1 - config.document_fraction))
    drawn = random.Random(config.seed).sample(pieces, min(wanted, len(pieces)))
    docs = Dataset.from_dict({"input_ids": drawn, "labels": drawn}, features=sft.features)
    trainer.train_dataset = concatenate_datasets([sft, docs])
    return {
        "document_rows": len(drawn),
        "document_pieces_available": len(pieces),
        "document_fraction": round(len(drawn) / len(trainer.train_dataset), 4),
    }


def _summary(kind: str, state, world: int, resumed_from: int | None) -> dict:
    """The stage's manifest metrics, from the trainer's log history."""
    rows = [e for e in state.log_history if "loss" in e]
    speeds = [e["tokens_per_s"] for e in rows if e.get("tokens_per_s")]
    summary = {
        "steps": state.global_step,
        "first_loss": rows[0]["loss"],
        "final_loss": rows[-1]["loss"],
        "tokens": state.num_input_tokens_seen,
        "tokens_per_s": statistics.median(speeds) if speeds else None,
        "processes": world,
        "resumed_from_step": resumed_from,
    }
    if kind == "dpo":
        last = rows[-1]
        summary |= {
            k.replace("rewards/", "final_reward_"): v for k, v in last.items() if k.startswith("rewards/")
        }
    return summary


def _trl_args(config: TrainConfig, work: Path, world: int) -> dict:
    """TrainingArguments shared by the TRL configs of the three stages."""
    import torch

    per_process = config.batch_size // world
    micro = min(config.micro_batch_size, per_process)
    if config.batch_size % world or not per_process or per_process % micro:
        raise MolabError(
            f"field 'batch_size' ({config.batch_size}) must split evenly over {world} processes "
            f"and then into micro-batches of micro_batch_size ({config.micro_batch_size})"
        )
    cuda = torch.cuda.is_available() and (config.model.device or "cuda").startswith("cuda")
    bf16 = config.bf16 if config.bf16 is not None else cuda and torch.cuda.is_bf16_supported()
    return dict(
        output_dir=str(work),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=per_process // micro,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        seed=config.seed,
        data_seed=config.seed,
        max_length=config.max_length,
        logging_steps=1,
        logging_nan_inf_filter=False,  # else a NaN loss is logged as the mean of the previous ones
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.keep_checkpoints,
        bf16=bf16,
        activation_checkpointing=config.gradient_checkpointing,
        report_to=list(config.report_to) or "none",
        use_cpu=not cuda,
        include_num_input_tokens_seen="non_padding",
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
    )


def build_trainer(kind, config: TrainConfig, model, tokenizer, dataset, work: Path, world: int, callbacks):
    """The TRL trainer of stage `kind` over `model` (the start model, not yet wrapped in PEFT):
    it prepares (tokenizes, masks, packs) `dataset` when built."""
    peft = lora_config(config.lora) if config.method == "lora" else None
    common = _trl_args(config, work, world)
    if kind == "dpo":
        from trl import DPOConfig, DPOTrainer

        assert isinstance(config, DPOTrainConfig)
        args = DPOConfig(**common, beta=config.beta, loss_type=[config.loss_type])
        # With LoRA, TRL's reference is the model with the new adapter off: the start model.
        ref = None if peft else copy.deepcopy(model).eval().requires_grad_(False)
        return DPOTrainer(
            model=model,
            ref_model=ref,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft,
            callbacks=callbacks,
        )
    from trl import SFTConfig

    if kind == "midtrain":
        assert isinstance(config, MidtrainConfig)
        args = SFTConfig(**common, packing=True, packing_strategy=config.packing)
    else:
        args = SFTConfig(**common, completion_only_loss=True)
    return _sft_trainer_class()(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft,
        callbacks=callbacks,
    )


def _sft_trainer_class():
    """TRL's SFTTrainer, taking the loss from the model's own forward where TRL's fused LM head
    has no Triton kernel (CPU): there its torch fallback makes ~20 passes over every tile of the
    logits, partly for entropy and top-1 metrics, and makes a CPU step ~25% slower."""
    from transformers import Trainer
    from trl import SFTTrainer

    class MolabSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.args.device.type in ("cuda", "xpu"):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs = {**inputs, "use_cache": False}
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return MolabSFTTrainer


def _packing_stats(packed, max_length: int) -> dict:
    """Rows and padding of the packed mid-training set: `padding_fraction` is the share of the
    rows' max_length slots holding no document token (what padding would fill)."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(packed.data.column("input_ids"))
    rows, tokens = len(packed), pc.sum(lengths).as_py() or 0
    return {
        "packed_rows": rows,
        "document_tokens": tokens,
        "padding_fraction": round(1 - tokens / (rows * max_length), 4) if rows else 0.0,
    }
