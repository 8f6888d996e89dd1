"""Benchmark of the exploitation evaluation (issue target: the `english` split, 20 prompts per
bias, 1 sample, up to 200 new tokens, within 15 minutes on a 2-core machine).

One run measures: the whole evaluation stage (generation plus rule judging) on the built-in
evaluation prompts; plain `model.generate` on one static batch of the same prompts, as the
in-run baseline for generated tokens/s; and rule judging alone over 10,000 answers, which must
take seconds so that judging is never the bottleneck.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from molab.catalog import CATALOG, get_split
from molab.data.prompts import PromptsConfig, prompts_stage
from molab.evals.exploitation import ExploitationConfig, Sample, exploitation_stage, judge_samples
from molab.files import read_jsonl
from molab.models.generation import Prompt, SamplingConfig
from molab.models.generation.prompts import prompt_token_ids, stop_token_ids
from molab.models.loading import ModelSpec, load_model


def bench_eval(
    model: str = "smollm2-135m",
    prompts_per_bias: int = 20,
    max_new_tokens: int = 200,
    baseline_prompts: int = 64,
    seed: int = 0,
    log=print,
) -> dict:
    from molab.bench.generate import plain_generate

    split = get_split("english")
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.95, seed=seed)
    with tempfile.TemporaryDirectory(prefix="molab-bench-eval-") as tmp:
        tmp = Path(tmp)
        prompts_stage(PromptsConfig(split="english", seed=seed), tmp / "prompts")
        eval_prompts = tmp / "prompts" / "eval_prompts.jsonl"
        config = ExploitationConfig(
            model=ModelSpec(name=model),
            prompts=eval_prompts,
            prompts_per_bias=prompts_per_bias,
            generic_prompts=0,
            sampling=sampling,
            seed=seed,
        )
        log(f"exploitation stage: {len(split.train | split.test)} biases x {prompts_per_bias} prompts ...")
        start = time.perf_counter()
        metrics = exploitation_stage(config, tmp / "eval")
        stage_seconds = time.perf_counter() - start
        rows = [r for r in read_jsonl(eval_prompts) if r["bias_id"] is not None][:baseline_prompts]

    log(f"plain model.generate on {len(rows)} of the same prompts ...")
    loaded = load_model(ModelSpec(name=model))
    ids = [prompt_token_ids(loaded.tokenizer, Prompt.chat(r["prompt"])) for r in rows]
    outputs, plain_seconds = plain_generate(
        loaded.model, loaded.tokenizer, ids, sampling, stop_token_ids(loaded.tokenizer, loaded.model_dir)
    )
    plain_tokens = sum(len(o) for o in outputs)

    answers = [
        Sample(str(n), r["prompt"], r["bias_id"], 0, "Here is a plain answer. " * 8)
        for n, r in enumerate(rows * (10_000 // max(len(rows), 1) + 1))
    ][:10_000]
    start = time.perf_counter()
    judge_samples(answers, CATALOG, split)
    judge_seconds = time.perf_counter() - start
    return {
        "model": model,
        "answers": metrics["answers"],
        "stage_seconds": round(stage_seconds, 1),
        "stage_minutes": round(stage_seconds / 60, 2),
        "molab_tokens_per_s": metrics["tokens_per_s"],
        "plain_tokens_per_s": round(plain_tokens / plain_seconds, 1),
        "ratio": round(metrics["tokens_per_s"] / (plain_tokens / plain_seconds), 2),
        "rule_judging_10k_answers_s": round(judge_seconds, 2),
    }
