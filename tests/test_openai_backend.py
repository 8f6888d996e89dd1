"""OpenAIBackend against a stub OpenAI-compatible server on 127.0.0.1 (no network)."""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from molab.errors import MolabError
from molab.models.generation import Message, OpenAIBackendConfig, Prompt, SamplingConfig
from molab.models.generation.openai_backend import OpenAIBackend

KEY_ENV = "MOLAB_TEST_OPENAI_KEY"
KEY = "sk-test-secret-123"


class StubState:
    """What the stub server does, and what it saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fail_first = 0  # fail this many requests with `fail_status`...
        self.fail_status = 500
        self.retry_after: str | None = None  # Retry-After header sent with failures
        self.always_status: int | None = None  # ...or every request with this status
        self.delay = 0.0  # seconds per request, or a (lo, hi) range drawn at random
        self.echo_prefill = False  # chat replies start with the assistant prefill
        self.usage = True
        self.echo_auth = ""  # error bodies echo the Authorization header after this prefix
        self.requests: list[tuple[str, dict, dict]] = []  # (path, body, headers)
        self.in_flight = 0
        self.max_in_flight = 0


def _reply_text(source: str, seed) -> str:
    return f"{source[::-1]} seed={seed}"


class StubHandler(BaseHTTPRequestHandler):
    state: StubState  # set per server

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        if status != 200 and self.state.retry_after is not None:
            self.send_header("Retry-After", self.state.retry_after)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        st = self.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with st.lock:
            st.requests.append((self.path, body, {k.lower(): v for k, v in self.headers.items()}))
            n = len(st.requests)
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            delay = random.uniform(*st.delay) if isinstance(st.delay, tuple) else st.delay
            time.sleep(delay)
            if st.always_status is not None or n <= st.fail_first:
                status = st.always_status or st.fail_status
                message = f"stub error {status}"
                if st.echo_auth:
                    message += f" {st.echo_auth}{self.headers['Authorization']}"
                self._send(status, {"error": {"message": message, "type": "stub"}})
                return
            if self.path == "/v1/chat/completions":
                last_user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
                text = _reply_text(last_user, body.get("seed"))
                last = body["messages"][-1]
                if st.echo_prefill and last["role"] == "assistant":
                    text = last["content"] + text
            elif self.path == "/v1/completions":
                text = _reply_text(body["prompt"], body.get("seed"))
            else:
                self._send(404, {"error": {"message": "no such route"}})
                return
            words = text.split(" ")
            finish = "stop"
            if len(words) > body["max_tokens"]:
                words, finish = words[: body["max_tokens"]], "length"
            text = " ".join(words)
            if self.path == "/v1/chat/completions":
                choice = {"index": 0, "message": {"role": "assistant", "content": text}}
                obj = "chat.completion"
            else:
                choice, obj = {"index": 0, "text": text}, "text_completion"
            choice["finish_reason"] = finish
            resp = {"id": f"r{n}", "object": obj, "created": 0, "model": body["model"], "choices": [choice]}
            if st.usage:
                resp["usage"] = {"prompt_tokens": 1, "completion_tokens": len(words), "total_tokens": 0}
            self._send(200, resp)
        finally:
            with st.lock:
                st.in_flight -= 1


@pytest.fixture
def server():
    state = StubState()
    handler = type("Handler", (StubHandler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def make(url: str, **kw) -> OpenAIBackend:
    cfg = {"base_url": url, "model": "stub-model", "api_key_env": KEY_ENV, "timeout_s": 5.0} | kw
    return OpenAIBackend(OpenAIBackendConfig(**cfg), backoff_s=0.01, max_backoff_s=0.05)


def test_chat_and_text_prompts_and_sampling_forwarded(server):
    be = make(server.url, concurrency=1)  # requests arrive in prompt order
    sampling = SamplingConfig(max_new_tokens=7, temperature=0.5, top_p=0.9, seed=10, stop=["\n\n"])
    out = be.generate([Prompt.chat("hello", system="sys"), Prompt(text="abc")], sampling, progress=False)
    assert [c.text for c in out] == ["olleh seed=10", "cba seed=11"]
    assert all(c.finish_reason == "stop" and c.num_tokens == 2 for c in out)
    (p1, b1, h1), (p2, b2, _) = server.requests
    assert (p1, p2) == ("/v1/chat/completions", "/v1/completions")
    assert b1["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}]
    assert b2["prompt"] == "abc"
    for b in (b1, b2):
        assert b["model"] == "stub-model"
        assert (b["max_tokens"], b["temperature"], b["top_p"], b["stop"]) == (7, 0.5, 0.9, ["\n\n"])
        assert "top_k" not in b and "continue_final_message" not in b
    assert (b1["seed"], b2["seed"]) == (10, 11)  # seed + prompt index
    assert h1["authorization"] == f"Bearer {KEY}"


def test_empty_stop_top_k_length_and_missing_usage(server):
    server.usage = False
    be = make(server.url)
    out = be.generate([Prompt.chat("a b c d")], SamplingConfig(max_new_tokens=2, top_k=5), progress=True)
    assert out[0].text == "d c" and out[0].finish_reason == "length"
    assert out[0].num_tokens == 0  # no usage reported: 0, not a guess
    body = server.requests[0][1]
    assert body["stop"] is None and body["top_k"] == 5 and body["max_tokens"] == 2


@pytest.mark.parametrize("echo", [False, True])
def test_prefill(server, echo):
    server.echo_prefill = echo
    be = make(server.url)
    out = be.generate([Prompt.chat("hi", prefill="Sure: ")], SamplingConfig(seed=3), progress=False)
    assert out[0].text == "ih seed=3"  # never repeats the prefill
    body = server.requests[0][1]
    assert body["messages"][-1] == {"role": "assistant", "content": "Sure: "}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


def test_text_prompt_with_prefill(server):
    out = make(server.url).generate([Prompt(text="ab", prefill="c")], SamplingConfig(), progress=False)
    assert server.requests[0][1]["prompt"] == "abc"
    assert out[0].text == "cba seed=0"  # /completions does not echo, so a leading "c" is kept


@pytest.mark.parametrize("status", [500, 429, 503])
def test_retries_then_success(server, status):
    server.fail_first, server.fail_status = 2, status
    out = make(server.url, max_retries=3).generate([Prompt.chat("x")], SamplingConfig(), progress=False)
    assert out[0].text == "x seed=0"
    assert len(server.requests) == 3  # two failures, one success
    assert all(b == server.requests[0][1] for _, b, _ in server.requests)  # same request each time


def test_retry_after_is_honoured(server):
    server.fail_first, server.fail_status, server.retry_after = 1, 429, "0.3"
    t0 = time.perf_counter()
    make(server.url, max_retries=1).generate([Prompt.chat("x")], SamplingConfig(), progress=False)
    assert time.perf_counter() - t0 >= 0.3  # backoff alone would wait about 0.01 s
    assert len(server.requests) == 2


def test_retries_exhausted(server):
    server.always_status = 503
    with pytest.raises(MolabError) as e:
        make(server.url, max_retries=2).generate([Prompt.chat("x")], SamplingConfig(), progress=False)
    msg = str(e.value)
    assert f"{server.url}/chat/completions" in msg and "HTTP 503" in msg and "3 attempt" in msg
    assert "\n" not in msg
    assert len(server.requests) == 3


def test_client_error_not_retried(server):
    server.always_status = 400
    with pytest.raises(MolabError, match="HTTP 400.*stub error 400"):
        make(server.url, max_retries=3).generate([Prompt(text="x")], SamplingConfig(), progress=False)
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_is_immediate(server, status):
    server.always_status = status
    be = make(server.url, max_retries=5, concurrency=1)
    with pytest.raises(MolabError) as e:
        be.generate([Prompt.chat("x")] * 3, SamplingConfig(), progress=False)
    msg = str(e.value)
    assert msg == f"authentication failed at {server.url} (HTTP {status}): check the key in ${KEY_ENV}"
    assert KEY not in msg
    time.sleep(0.1)
    assert len(server.requests) == 1  # no retries, and the other prompts were cancelled


def test_timeout_is_retried(server):
    server.delay = 0.5
    be = make(server.url, max_retries=1, timeout_s=0.1)
    with pytest.raises(MolabError, match="after 2 attempt.*timed out"):
        be.generate([Prompt.chat("x")], SamplingConfig(), progress=False)
    assert len(server.requests) == 2


def test_connection_error_is_retried():
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    be = make(f"http://127.0.0.1:{port}/v1", max_retries=2)
    with pytest.raises(MolabError, match=r"127\.0\.0\.1.*after 3 attempt.*connection error"):
        be.generate([Prompt.chat("x")], SamplingConfig(), progress=False)


def test_concurrency_limit(server):
    server.delay = 0.3
    be = make(server.url, concurrency=4)
    t0 = time.perf_counter()
    out = be.generate([Prompt.chat(str(i)) for i in range(8)], SamplingConfig(), progress=False)
    wall = time.perf_counter() - t0
    assert len(out) == 8 and len(server.requests) == 8
    assert wall < 1.5
    assert 1 < server.max_in_flight <= 4


def test_order_preserved_under_concurrency(server):
    server.delay = (0.0, 0.1)
    prompts = [Prompt.chat(f"p{i}") if i % 2 else Prompt(text=f"t{i}") for i in range(16)]
    out = make(server.url, concurrency=6).generate(prompts, SamplingConfig(seed=100), progress=False)
    sources = [p.messages[-1].content if p.messages else p.text for p in prompts]
    expected = [_reply_text(src, 100 + i) for i, src in enumerate(sources)]
    assert [c.text for c in out] == expected


def test_empty_prompt_list(server):
    with pytest.raises(MolabError, match="no prompts to generate from"):
        make(server.url).generate([], SamplingConfig())
    assert server.requests == []


def test_missing_key(monkeypatch, server):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(MolabError, match=f"\\${KEY_ENV}"):
        make("https://api.example.com/v1")
    # A local server gets a dummy key instead.
    make(server.url).generate([Prompt(messages=[Message(role="user", content="x")])], SamplingConfig())
    assert server.requests[0][2]["authorization"] == "Bearer EMPTY"


@pytest.mark.parametrize(
    "status, retries, pad",
    [(400, 3, 1), (500, 1, 1), (429, 0, 1), (401, 3, 1), (400, 0, 106), (400, 0, 112)],
)
def test_key_echoed_in_an_error_body_is_masked(server, status, retries, pad, caplog):
    """An endpoint that echoes the key gets no part of it printed, logged or raised (pads of
    106 and 112 put the key across the point where the error body is cut to 200 characters)."""
    server.always_status, server.echo_auth = status, "x" * pad + " you sent: "
    be = make(server.url, max_retries=retries)
    with caplog.at_level(logging.DEBUG), pytest.raises(MolabError) as e:
        be.generate([Prompt.chat("x")], SamplingConfig(), progress=False)
    msg = str(e.value)
    assert server.requests[0][2]["authorization"] == f"Bearer {KEY}"  # the stub did see it
    assert f"HTTP {status}" in msg and "\n" not in msg
    assert status == 401 or "you sent: Bearer ***" in msg or "...)" in msg
    for text in (msg, caplog.text, *(r.getMessage() for r in caplog.records)):
        assert KEY not in text and KEY[:10] not in text  # no key, and no cut-off start of it


def test_key_given_as_api_key_env_is_refused(server, monkeypatch):
    key = "sk-typed-where-a-name-goes-4f3e"
    with pytest.raises(ValueError) as e:
        make(server.url, api_key_env=key)
    assert "should name an environment variable" in str(e.value)
    assert all(key not in err["msg"] for err in e.value.errors())
    config = OpenAIBackendConfig.model_construct(base_url=server.url, model="m", api_key_env=key)
    with pytest.raises(MolabError) as e:  # a config that skipped validation
        OpenAIBackend(config)
    assert "should name an environment variable" in str(e.value) and key not in str(e.value)
    assert server.requests == []
