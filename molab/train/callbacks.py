"""Trainer callbacks: per-step metrics into the run directory, and a stop on NaN or infinite loss.

Both read only what the trainer logs (`logging_steps=1`, so every optimizer step), which works
the same for SFT and DPO, on one process or many (the logged loss is already averaged over
processes).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from transformers import TrainerCallback

_CORE = {"loss", "learning_rate", "grad_norm", "epoch", "num_input_tokens_seen"}
# Running totals the trainer adds to every log (TRL's token count is the same as `tokens`).
_SKIP = {"num_tokens", "train_runtime", "train_tokens_per_second"}


class StepMetrics(TrainerCallback):
    """Append one JSON line per optimizer step to `path`: step, loss, lr, grad_norm, tokens seen
    (non-padding, all processes), tokens/s, epoch, plus what the TRL trainer adds (token
    accuracy for SFT; reward margins and accuracies for DPO).

    The file is live (flushed each step). On resume it is rewritten from the checkpoint's log
    history, so it always ends at the step training continues from, with no gap or duplicate.
    """

    def __init__(self, path: Path, write: bool = True):
        self.path = path
        self.write = write  # False on processes other than the main one
        self._clock = 0.0
        self._tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._clock, self._tokens = time.perf_counter(), state.num_input_tokens_seen
        if self.write:
            rows = [_row(entry) for entry in state.log_history if "loss" in entry]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def on_save(self, args, state, control, **kwargs):
        self._clock = time.perf_counter()  # checkpoint writing is not training time

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return  # the end-of-training summary
        now = time.perf_counter()
        tokens = state.num_input_tokens_seen - self._tokens
        speed = round(tokens / max(now - self._clock, 1e-9), 1)
        self._clock, self._tokens = now, state.num_input_tokens_seen
        state.log_history[-1]["tokens_per_s"] = speed  # kept in checkpoints for a resumed run
        if self.write:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(_row(state.log_history[-1])) + "\n")


def _row(entry: dict) -> dict:
    row = {
        "step": entry["step"],
        "loss": entry["loss"],
        "lr": entry.get("learning_rate"),
        "grad_norm": entry.get("grad_norm"),
        "tokens": entry.get("num_input_tokens_seen"),
        "tokens_per_s": entry.get("tokens_per_s"),
        "epoch": entry.get("epoch"),
    }
    extra = {
        k: v for k, v in entry.items() if k not in _CORE | _SKIP | set(row) and isinstance(v, int | float)
    }
    return row | extra


class StopOnNonFinite(TrainerCallback):
    """Stop at the first step whose loss or gradient norm is NaN or infinite, before that step's
    checkpoint is written, so the last checkpoint on disk is the last good one."""

    def __init__(self):
        self.bad_step: int | None = None
        self.bad_values: dict = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        bad = {
            k: logs[k]
            for k in ("loss", "grad_norm")
            if isinstance(logs.get(k), int | float) and not math.isfinite(logs[k])
        }
        if bad and self.bad_step is None:
            self.bad_step, self.bad_values = state.global_step, bad
            control.should_training_stop = True
            control.should_save = False
