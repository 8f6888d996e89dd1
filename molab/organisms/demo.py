"""The demo: what exists of the pipeline, end to end, on the offline default model.

Run: `make demo` (or `molab demo --recipe recipes/demo.yaml`). For now it loads the default
chat model, answers a handful of everyday prompts and writes them, with a manifest, to
`runs/<run>/generate/`. Later stages (documents, mid-training, SFT/DPO, evaluation, report)
join this recipe as they land.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from molab.files import write_jsonl
from molab.models.generation import BackendConfig, HFBackendConfig, Prompt, SamplingConfig, make_backend
from molab.models.loading import ModelSpec
from molab.pipeline import RunDir, StageResult, run_stage
from molab.resources import chat_prompts

COMPLETIONS = "completions.jsonl"


class GenerateStageConfig(BaseModel):
    """Answer the built-in chat prompts with one model."""

    model_config = ConfigDict(extra="forbid")
    model: ModelSpec = Field(default_factory=ModelSpec)
    backend: BackendConfig = Field(default_factory=HFBackendConfig)
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=96, temperature=0.7)
    )
    num_prompts: int = Field(8, ge=1, le=64, description="How many built-in prompts to answer.")


class DemoConfig(BaseModel):
    """The demo recipe."""

    model_config = ConfigDict(extra="forbid")
    run: str = Field("demo", description="Run name: outputs go to runs/<run>/.")
    generate: GenerateStageConfig = Field(default_factory=GenerateStageConfig)


def generate_stage(config: GenerateStageConfig, out_dir: Path) -> dict:
    """Write `completions.jsonl` (prompt, completion, tokens, finish reason); return metrics."""
    questions = chat_prompts()[: config.num_prompts]
    backend = make_backend(config.backend, config.model)
    start = time.perf_counter()
    done = backend.generate([Prompt.chat(q) for q in questions], config.sampling)
    seconds = time.perf_counter() - start
    write_jsonl(
        out_dir / COMPLETIONS,
        (
            {"prompt": q, "completion": c.text, "num_tokens": c.num_tokens, "finish_reason": c.finish_reason}
            for q, c in zip(questions, done)
        ),
    )
    tokens = sum(c.num_tokens for c in done)
    return {
        "prompts": len(done),
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "stopped_at_end_of_turn": sum(c.finish_reason == "stop" for c in done),
    }


def run_demo(config: DemoConfig, force: bool = False, root: str | Path | None = None) -> list[StageResult]:
    """Run every demo stage in order; stages whose inputs and config did not change are skipped."""
    run = RunDir(config.run, root)
    gen = run_stage(
        run,
        "generate",
        config.generate,
        lambda out: generate_stage(config.generate, out),
        seed=config.generate.sampling.seed,
        force=force,
    )
    return [gen]
