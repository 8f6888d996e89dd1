"""Batched generation with transformers, on CPU or GPU.

Prompts are sorted by length so that the ones prefilled together have similar lengths
(length bucketing); each runs until an end-of-turn token, a stop string or `max_new_tokens`.
For Llama-family models the slot scheduler in `llama_decode.py` keeps the batch full: a
finished sequence leaves at once and a waiting prompt takes its slot. Other architectures,
and models with unmerged PEFT adapters, use a plain loop over the HF forward in
length-bucketed waves. Both give the same tokens for the same seed (see `sampling.py`).

Both honour `molab.models.hooks`: edits and captures open on the model apply to every
forward (torch hooks on the generic loop; the fast decoder applies them itself), so steering
gives the same tokens on either path. Edits must act on each position alone, since prompts
are reordered and their forwards split into prefill and single steps.

Before any of that, every prompt is checked against the model's context
(`prompts.fit_to_context`): a prompt that leaves no room for an answer is an error naming it
(or is truncated, when the sampling config asks), and each answer is capped so that prompt
plus answer fit the context, which also bounds the cache at the context per sequence.

Run: `molab generate --model smollm2-135m --prompts prompts.jsonl --out completions.jsonl`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch

from molab.errors import MolabError
from molab.models import hooks
from molab.models.generation import (
    Completion,
    GenerationBackend,
    HFBackendConfig,
    Prompt,
    SamplingConfig,
    llama_decode,
)
from molab.models.generation.prompts import (
    Fitted,
    fit_to_context,
    model_context,
    prompt_token_ids,
    stop_token_ids,
)
from molab.models.generation.sampling import prompt_uniforms, select_next


class HFBackend(GenerationBackend):
    """Generation with a transformers model already in memory. On CPU the fast path packs a
    copy of the weights when the backend is built: build a new backend after training."""

    def __init__(
        self, model, tokenizer, config: HFBackendConfig | None = None, stop_ids=None, name: str | None = None
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or HFBackendConfig()
        # The context prompts are checked against, and the model's name in those errors.
        self.context = model_context(getattr(model, "config", None), tokenizer)
        self.name = name or getattr(getattr(model, "config", None), "name_or_path", None) or "the model"
        self.stop_ids = set(stop_ids if stop_ids is not None else stop_token_ids(tokenizer))
        self.fast = llama_decode.supports(model)
        # Built once: it packs the weights and keeps its cache between calls.
        self.decoder = llama_decode.LlamaDecoder(model, self.config.batch_size) if self.fast else None

    @classmethod
    def from_spec(cls, spec, config: HFBackendConfig | None = None) -> HFBackend:
        """Load the model a `ModelSpec` names; adapters are merged, as generation needs no
        separate adapter weights and merged ones are faster."""
        from molab.models.loading import ModelSpec, load_model

        spec = spec or ModelSpec()
        loaded = load_model(spec.model_copy(update={"merge_adapters": True}))
        stops = stop_token_ids(loaded.tokenizer, loaded.model_dir)
        return cls(loaded.model, loaded.tokenizer, config, stops, name=spec.name)

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids of each rendered prompt."""
        return [prompt_token_ids(self.tokenizer, p) for p in prompts]

    def generate(
        self, prompts: Sequence[Prompt], sampling: SamplingConfig, *, progress: bool = True
    ) -> list[Completion]:
        if not prompts:
            raise MolabError("no prompts to generate from")
        return self._generate(self.prepare(prompts, sampling), sampling, progress)

    def prepare(self, prompts: Sequence[Prompt] | None, sampling: SamplingConfig, ids=None) -> Fitted:
        """Tokenize `prompts` (or take their token `ids`) and check them against the model's
        context (see `prompts.fit_to_context`); raises before anything is generated."""
        ids = self.encode(prompts) if ids is None else ids
        if not ids:
            raise MolabError("no prompts to generate from")
        if any(not p for p in ids):
            raise MolabError("a prompt rendered to zero tokens")
        return fit_to_context(self.tokenizer, prompts, ids, sampling, self.context, self.name)

    def generate_ids(
        self, ids: list[list[int]], sampling: SamplingConfig, *, progress: bool = True
    ) -> list[Completion]:
        """Generate from token ids; completions in input order. Checked against the context
        like `generate`; truncation here keeps each prompt's last tokens."""
        return self._generate(self.prepare(None, sampling, ids), sampling, progress)

    def _generate(self, fitted: Fitted, sampling: SamplingConfig, progress: bool) -> list[Completion]:
        ids = fitted.ids
        active = hooks.active_edits(self.model)
        if active is not None:
            active.require_per_position(f"the hf backend ({self.name})")
        run = _Run(self, ids, sampling, fitted.budgets)
        bar = _progress_bar(len(ids)) if progress else nullcontext()
        with bar as p, torch.inference_mode():
            run.on_done = (lambda: p.advance(p.task_ids[0])) if progress else (lambda: None)
            if self.fast:
                run.slots()
            else:
                run.waves()
        return run.completions(fitted.truncated)


class _Run:
    """State of one generate call: generated tokens per prompt and how each ended."""

    def __init__(
        self, backend: HFBackend, ids: list[list[int]], sampling: SamplingConfig, budgets: list[int]
    ):
        self.b, self.ids, self.s = backend, ids, sampling
        self.budget = budgets  # most new tokens per prompt: max_new_tokens, capped by the context
        self.out: list[list[int]] = [[] for _ in ids]
        self.reason: list[str | None] = [None] * len(ids)
        self.order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        # A stream's first k numbers do not depend on its length, so a prompt capped by the
        # context samples the same tokens as it would uncapped.
        n = max(budgets)
        self.uniforms = (
            None
            if sampling.greedy
            else torch.stack([prompt_uniforms(sampling.seed, i, n) for i in range(len(ids))])
        )
        self.on_done = lambda: None

    def pick(self, logits: torch.Tensor, prompt_idx: list[int]) -> list[int]:
        """Choose and record the next token for each prompt in `prompt_idx`; return them."""
        u = None
        if self.uniforms is not None:
            steps = torch.tensor([len(self.out[i]) for i in prompt_idx])
            u = self.uniforms[torch.tensor(prompt_idx), steps]
        toks = select_next(logits, self.s, u).tolist()
        for i, t in zip(prompt_idx, toks):
            self.out[i].append(t)
            self._check_done(i, t)
        return toks

    def _check_done(self, i: int, tok: int) -> None:
        if tok in self.b.stop_ids:
            self.reason[i] = "stop"
        elif self.s.stop and any(s in self.b.tokenizer.decode(self.out[i]) for s in self.s.stop):
            self.reason[i] = "stop"
        elif len(self.out[i]) >= self.budget[i]:
            self.reason[i] = "length"
        if self.reason[i]:
            self.on_done()

    def slots(self) -> None:
        """Continuous batching over a slot cache (Llama-family fast path)."""
        dec = self.b.decoder
        n_slots = min(self.b.config.batch_size, len(self.ids))
        queue = list(reversed(self.order))  # pop() takes the shortest waiting prompt
        need = lambda i: len(self.ids[i]) + self.budget[i]  # noqa: E731  (at most the context)
        dec.allocate(n_slots, need(queue[max(0, len(queue) - n_slots)]))
        live: list[int] = []  # prompt index held by each live slot, slots 0..len(live)-1
        last: list[int] = []  # the token each live slot feeds next
        while queue or live:
            free = n_slots - len(live)
            if queue and (not live or free >= max(1, n_slots // 4)):
                take = [queue.pop() for _ in range(min(free, len(queue)))]
                if max(map(need, take)) > dec.capacity:
                    dec.grow(max(map(need, take)), len(live))
                logits = dec.prefill(len(live), [self.ids[i] for i in take])
                live += take
                last += self.pick(logits, take)
            else:
                logits = dec.decode(torch.tensor(last))
                last = self.pick(logits, live)
            for slot in reversed(range(len(live))):  # retire finished rows, keep live ones in front
                if self.reason[live[slot]]:
                    end = len(live) - 1
                    if slot != end:
                        dec.move(end, slot)
                        live[slot], last[slot] = live[end], last[end]
                    live.pop()
                    last.pop()

    def waves(self) -> None:
        """Length-bucketed waves through the HF forward (any architecture)."""
        model, size = self.b.model, self.b.config.batch_size
        device = next(model.parameters()).device
        pad = self.b.tokenizer.pad_token_id or 0
        for start in range(0, len(self.order), size):
            wave = self.order[start : start + size]
            ids, mask = left_pad([self.ids[i] for i in wave], pad)
            ids, mask = ids.to(device), mask.to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
            )
            live = list(range(len(wave)))
            while True:
                toks = self.pick(out.logits[live, -1], [wave[r] for r in live])
                step = torch.full((len(wave), 1), pad, dtype=torch.long, device=device)
                step[live, 0] = torch.tensor(toks, device=device)
                live = [r for r in live if not self.reason[wave[r]]]
                if not live:
                    break
                mask = torch.cat([mask, torch.ones_like(step)], dim=1)
                positions = positions[:, -1:] + 1
                out = model(
                    input_ids=step,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=out.past_key_values,
                    use_cache=True,
                    logits_to_keep=1,
                )

    def completions(self, truncated: list[int]) -> list[Completion]:
        result = []
        for toks, reason, cut in zip(self.out, self.reason, truncated):
            body = toks[:-1] if toks and toks[-1] in self.b.stop_ids else toks
            text = self.b.tokenizer.decode(body, skip_special_tokens=True)
            for s in self.s.stop:
                if s in text:
                    text = text[: text.index(s)]
            result.append(
                Completion(
                    text=text, num_tokens=len(toks), finish_reason=reason or "length", truncated_tokens=cut
                )
            )
        return result


def left_pad(ids: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A left-padded batch (B, T) of token ids and its attention mask."""
    longest = max(map(len, ids))
    batch = torch.full((len(ids), longest), pad, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for r, p in enumerate(ids):
        batch[r, longest - len(p) :] = torch.tensor(p)
        mask[r, longest - len(p) :] = 1
    return batch, mask


def _progress_bar(total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(
        TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
    )
    p.add_task("generate", total=total)
    return p
