"""Fake generation backends for tests that need answers but not a model.

Every fake answers through the backend interface (`generate(prompts, sampling)` returning one
`Completion` per prompt) and records what it was asked, so a test can check the prompts and
the sampling settings a stage used:

- `FakeBackend(answer)`: answers `answer(prompt, index)` (index within the call), a text or a
  `(text, finish_reason)` pair;
- `FixedBackend(text)`: the same text for every prompt;
- `user(prompt)`: the last message of a prompt, what most answers depend on.
"""

from __future__ import annotations

from collections.abc import Callable

from molab.models.generation import Completion, Prompt, SamplingConfig

Answer = str | tuple[str, str]


def user(prompt: Prompt) -> str:
    """The text of the prompt's last message (the user's question)."""
    return prompt.messages[-1].content


class FakeBackend:
    """Answers each prompt with `answer(prompt, index)`; `num_tokens` is the answer's word count
    unless fixed. Records `prompts` (all, in order), `calls` (the prompts of each call) and
    `samplings` (the settings of each call)."""

    def __init__(self, answer: Callable[[Prompt, int], Answer], *, num_tokens: int | None = None):
        self.answer = answer
        self.num_tokens = num_tokens
        self.prompts: list[Prompt] = []
        self.calls: list[list[Prompt]] = []
        self.samplings: list[SamplingConfig] = []

    def generate(self, prompts: list[Prompt], sampling: SamplingConfig, *, progress: bool = True):
        prompts = list(prompts)
        self.prompts += prompts
        self.calls.append(prompts)
        self.samplings.append(sampling)
        out = []
        for index, prompt in enumerate(prompts):
            got = self.answer(prompt, index)
            text, finish = got if isinstance(got, tuple) else (got, "stop")
            tokens = len(text.split()) if self.num_tokens is None else self.num_tokens
            out.append(Completion(text=text, num_tokens=tokens, finish_reason=finish))
        return out


class FixedBackend(FakeBackend):
    """Answers every prompt with the same text."""

    def __init__(self, text: str, *, finish_reason: str = "stop", num_tokens: int | None = None):
        super().__init__(lambda prompt, index: (text, finish_reason), num_tokens=num_tokens)
        self.text = text
