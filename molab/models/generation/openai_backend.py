"""Generation against any OpenAI-compatible HTTP endpoint (OpenAI, vLLM's server, ...).

Why a backend of its own: judges and document generators often run on a model we do not host
in-process, so molab talks to it over HTTP through the `openai` SDK with the same
`generate(prompts, sampling)` contract as the local backends.

How it behaves:
- At most `config.concurrency` requests are in flight (a thread pool over one SDK client);
  completions come back in input order.
- Rate limits (429), timeouts (408), server errors (5xx), connection errors and timeouts are
  retried up to `config.max_retries` times with exponential backoff and jitter (honouring a
  numeric Retry-After). The SDK's own retries are switched off so the policy lives here.
- HTTP 401/403 stops at once with a one-line MolabError naming the URL and the key's
  environment variable; other failures name the URL, the status and the attempts made.
- The key is read from `config.api_key_env` when the backend is built and handed only to
  the SDK client, and registered with `molab.secrets`: every error message here is redacted
  (before it is shortened), so an endpoint that echoes the key in an error body does not get
  it printed or written. A local server (127.0.0.1, localhost) gets the dummy key "EMPTY"
  when the variable is unset.
- `messages` prompts go to /chat/completions; a prefill is sent as a final assistant message
  with vLLM's `continue_final_message` convention, and stripped from the reply if the
  server echoes it. `text` prompts go to /completions with the prefill appended (that
  endpoint does not echo the prompt, so nothing is stripped).
- Each prompt is sent with seed `sampling.seed + index`, so its completion does not depend
  on batching (as far as the server honours seeds).
- `num_tokens` is `usage.completion_tokens`, or 0 when the server reports no usage (we do
  not guess a token count from the text).
- `first_token_logprobs` asks for a one-token reply with `logprobs` and returns the top
  candidates for that token (for judges that read a score from probabilities), through the
  same pool, retries and redacted errors.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from urllib.parse import urlparse

import openai
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from molab import secrets
from molab.errors import MolabError
from molab.models.generation import (
    Completion,
    GenerationBackend,
    OpenAIBackendConfig,
    Prompt,
    SamplingConfig,
)

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_MAX_RETRY_AFTER_S = 60.0


def _one_line(text: str, limit: int = 200) -> str:
    # Redacted before it is cut, so a cut cannot leave part of a secret behind.
    text = " ".join(secrets.redact_text(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(message: str) -> MolabError:
    return MolabError(secrets.redact_text(message))


class OpenAIBackend(GenerationBackend):
    """Completions from an OpenAI-compatible endpoint; see the module docstring.

    `backoff_s` is the first retry delay (doubled on each retry, capped at `max_backoff_s`,
    with jitter); tests make it small.
    """

    def __init__(
        self, config: OpenAIBackendConfig, *, backoff_s: float = 1.0, max_backoff_s: float = 30.0
    ) -> None:
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        if secrets.looks_like_key(config.api_key_env):  # a config built without validation
            secrets.register(config.api_key_env)
            raise MolabError("api_key_env should name an environment variable, not hold the key itself")
        key = secrets.register_env(config.api_key_env)
        if not key:
            if urlparse(self.base_url).hostname not in _LOCAL_HOSTS:
                raise _error(
                    f"no API key for {self.base_url}: set the environment variable "
                    f"${config.api_key_env} (named by the backend's 'api_key_env')"
                )
            key = "EMPTY"  # local servers (e.g. vLLM) accept any key
        self._client = openai.OpenAI(
            api_key=key, base_url=self.base_url, timeout=config.timeout_s, max_retries=0
        )

    def generate(
        self, prompts: Sequence[Prompt], sampling: SamplingConfig, *, progress: bool = True
    ) -> list[Completion]:
        return self._run(prompts, sampling, self._request, f"generating with {self.config.model}", progress)

    def first_token_logprobs(
        self,
        prompts: Sequence[Prompt],
        sampling: SamplingConfig,
        *,
        top_logprobs: int = 20,
        progress: bool = True,
    ) -> list[list[tuple[str, float]]]:
        """For each prompt, the `top_logprobs` likeliest first tokens of the reply with their
        natural-log probabilities, as the server reports them (a one-token request with
        `logprobs`; /completions for text prompts), in input order. Same concurrency, retries
        and redacted errors as `generate`; a reply without logprobs is a MolabError."""
        one = sampling.model_copy(update={"max_new_tokens": 1})

        def request(prompt: Prompt, sampling: SamplingConfig, index: int) -> list[tuple[str, float]]:
            return self._request_top_logprobs(prompt, sampling, index, top_logprobs)

        return self._run(prompts, one, request, f"scoring with {self.config.model}", progress)

    def _run(
        self, prompts: Sequence[Prompt], sampling: SamplingConfig, request, label: str, progress: bool
    ) -> list:
        """`request(prompt, sampling, index)` for every prompt, concurrently, with retries."""
        if not prompts:
            raise MolabError("no prompts to generate from")
        results: list = [None] * len(prompts)
        abort = threading.Event()
        pool = ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="molab-openai")
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=not progress,
        )
        try:
            with bar:
                task = bar.add_task(label, total=len(prompts))
                futures = {
                    pool.submit(self._generate_one, p, sampling, i, abort, request): i
                    for i, p in enumerate(prompts)
                }
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.advance(task)
        except BaseException:
            abort.set()  # workers stop before their next attempt
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        return results

    def _request(self, prompt: Prompt, sampling: SamplingConfig, index: int) -> Completion:
        """Send one request (no retries)."""
        resp, choice, text = self._send(prompt, sampling, index, {})
        return Completion(
            text=text,
            num_tokens=resp.usage.completion_tokens if resp.usage else 0,
            finish_reason="stop" if choice.finish_reason == "stop" else "length",
        )

    def _request_top_logprobs(
        self, prompt: Prompt, sampling: SamplingConfig, index: int, top: int
    ) -> list[tuple[str, float]]:
        """Send one logprobs request (no retries): the first reply token's top candidates."""
        chat = prompt.messages is not None
        params = {"logprobs": True, "top_logprobs": top} if chat else {"logprobs": top}
        _, choice, _ = self._send(prompt, sampling, index, params)
        logprobs = getattr(choice, "logprobs", None)
        if chat:
            content = getattr(logprobs, "content", None)
            first = content[0].top_logprobs if content else None
            pairs = [(t.token, t.logprob) for t in first] if first else []
        else:
            tops = getattr(logprobs, "top_logprobs", None)
            pairs = list(tops[0].items()) if tops and tops[0] else []
        if not pairs:
            path = "/chat/completions" if chat else "/completions"
            raise _error(
                f"{self.base_url}{path} returned no logprobs for the reply's first token: "
                f"the server or model '{self.config.model}' may not support them"
            )
        return [(str(token), float(logprob)) for token, logprob in pairs]

    def _send(self, prompt: Prompt, sampling: SamplingConfig, index: int, params: dict):
        """One request with extra `params` (no retries): the response, its first choice and
        the reply's text."""
        extra: dict = {"top_k": sampling.top_k} if sampling.top_k > 0 else {}
        common = {
            "model": self.config.model,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
            "stop": sampling.stop or None,
            "seed": sampling.seed + index,
            **params,
        }
        if prompt.messages is not None:
            messages = [m.model_dump() for m in prompt.messages]
            if prompt.prefill:
                messages.append({"role": "assistant", "content": prompt.prefill})
                extra |= {"continue_final_message": True, "add_generation_prompt": False}
            resp = self._client.chat.completions.create(messages=messages, extra_body=extra or None, **common)
            choice = resp.choices[0]
            text = choice.message.content or ""
            if prompt.prefill and text.startswith(prompt.prefill):
                text = text[len(prompt.prefill) :]  # some servers echo the prefill
        else:  # /completions does not echo the prompt (no echo=True), so nothing to strip
            resp = self._client.completions.create(
                prompt=prompt.text + prompt.prefill, extra_body=extra or None, **common
            )
            choice = resp.choices[0]
            text = choice.text or ""
        return resp, choice, text

    def _generate_one(
        self, prompt: Prompt, sampling: SamplingConfig, index: int, abort: threading.Event, request=None
    ):
        try:
            return self._with_retries(prompt, sampling, index, abort, request or self._request)
        except BaseException:
            abort.set()  # set before this future completes, so no queued prompt starts after it
            raise

    def _with_retries(
        self, prompt: Prompt, sampling: SamplingConfig, index: int, abort: threading.Event, request=None
    ):
        url = self.base_url + ("/chat/completions" if prompt.messages is not None else "/completions")
        attempts = 0
        while True:
            if abort.is_set():
                raise MolabError("generation aborted")
            attempts += 1
            retry_after = None
            try:
                return (request or self._request)(prompt, sampling, index)
            except openai.APIStatusError as e:
                status = e.status_code
                if status in (401, 403):
                    raise _error(
                        f"authentication failed at {self.base_url} (HTTP {status}): "
                        f"check the key in ${self.config.api_key_env}"
                    ) from None
                why = f"HTTP {status}: {_one_line(e.message)}"
                if not (status in (408, 429) or status >= 500):
                    raise _error(f"request to {url} failed after {attempts} attempt(s) ({why})") from None
                try:
                    retry_after = float(e.response.headers.get("retry-after", ""))
                except ValueError:
                    pass
            except openai.APIConnectionError as e:  # includes APITimeoutError
                cause = _one_line(e.__cause__ or e.message, 120)
                why = "timed out" if isinstance(e, openai.APITimeoutError) else f"connection error: {cause}"
            except (openai.APIError, AttributeError, IndexError) as e:  # malformed reply
                raise _error(f"unexpected response from {url}: {_one_line(e)}") from None
            if attempts > self.config.max_retries:
                raise _error(f"request to {url} failed after {attempts} attempt(s) ({why})")
            delay = min(self.backoff_s * 2 ** (attempts - 1), self.max_backoff_s)
            delay *= random.uniform(0.5, 1.0)
            if retry_after is not None and 0 < retry_after <= _MAX_RETRY_AFTER_S:
                delay = max(delay, retry_after)
            abort.wait(delay)
