"""Keeping secret values (API keys, tokens) out of everything molab prints, logs or writes.

Why by value: a key leaks wherever its text goes, whatever the field is called, e.g. an
endpoint that echoes the Authorization header in an error body, or a key typed where the
*name* of its environment variable belongs. So molab keeps a process-wide set of secret
values and replaces each occurrence of one with "***":

- `register(value)` adds a value; the openai backend registers the key it reads, and a
  backend config registers the value of the variable its `api_key_env` names (and a refused
  `api_key_env` that holds a key itself).
- The values of environment variables named like secrets (`OPENAI_API_KEY`,
  `ANTHROPIC_API_KEY`, `HF_TOKEN`, `WANDB_API_KEY`, anything ending in `_API_KEY`, `_TOKEN`,
  `_SECRET`, `_PASSWORD`, `_ACCESS_KEY`) are secret too, read at each redaction.
- Only values of at least `MIN_LENGTH` characters count, so that short ones ("EMPTY", "1")
  cannot clobber ordinary text. Two shapes are masked even when unregistered: a Bearer
  credential with a digit in it, and an `sk-` key of 20+ characters mixing cases and digits.

Use `redact_text(text)` for a message and `redact_json(obj)` for JSON data (a manifest or a
failure record: every string in it, keys included). `install()` (called by the CLI's entry
point) masks every log record of every logger and the tracebacks Python prints; it is
idempotent. `RedactingFilter` is the same redaction as a `logging.Filter`, for a handler.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
from typing import Any

MASK = "***"
MIN_LENGTH = 8

_SECRET_ENV = re.compile(
    r"(?:^|_)(?:API_?KEY|ACCESS_KEY|SECRET(?:_KEY)?|TOKEN|PASSWORD|PASSWD)$", re.IGNORECASE
)
# Credentials recognisable by their shape alone (masked even when nobody registered them).
_TOKEN = r"[A-Za-z0-9._~+/=-]"
_SHAPES = (
    (re.compile(rf"(\bBearer\s+)(?={_TOKEN}*\d){_TOKEN}{{8,}}"), rf"\g<1>{MASK}"),
    # sk- keys (OpenAI, Anthropic, ...): long, with upper and lower case and digits.
    (re.compile(r"(?<![\w-])sk-(?=[\w-]*[A-Z])(?=[\w-]*[a-z])(?=[\w-]*\d)[\w-]{20,}"), MASK),
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_PREFIXES = ("sk-", "sk_", "hf_", "ghp_", "gho_", "ghs_", "github_pat_", "gsk_", "xai-", "AIza", "r8_")

_lock = threading.Lock()
_registered: set[str] = set()
_cache: tuple[frozenset[str], re.Pattern | None] = (frozenset(), None)


def register(value: str | None) -> None:
    """Treat `value` as secret from now on (ignored when None or shorter than MIN_LENGTH)."""
    if not isinstance(value, str):
        return
    with _lock:
        for v in {value, value.strip()}:
            if len(v) >= MIN_LENGTH:
                _registered.add(v)


def register_env(name: str) -> str | None:
    """The value of the environment variable `name` (None if unset), registered as secret."""
    value = os.environ.get(name)
    register(value)
    return value


def secret_values() -> frozenset[str]:
    """Every value redacted now: the registered ones and those of secret-named variables."""
    with _lock:
        values = set(_registered)
    values.update(v for k, v in os.environ.items() if len(v) >= MIN_LENGTH and _SECRET_ENV.search(k))
    return frozenset(values)


def _matcher() -> re.Pattern | None:
    global _cache
    values = secret_values()
    cached_values, pattern = _cache
    if values != cached_values:
        # Longest first, so a secret that contains another is masked whole.
        alts = sorted(values, key=len, reverse=True)
        pattern = re.compile("|".join(map(re.escape, alts))) if alts else None
        _cache = (values, pattern)
    return pattern


def _redact(text: str, pattern: re.Pattern | None) -> str:
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for shape, repl in _SHAPES:
        text = shape.sub(repl, text)
    return text


def redact_text(text: Any) -> str:
    """`text` (anything, as str) with every secret value in it replaced by "***"."""
    return _redact(str(text), _matcher())


def redact_json(obj: Any) -> Any:
    """A copy of JSON data `obj` with every secret value in its strings (and keys) masked;
    tuples become lists, other values are kept as they are."""
    pattern = _matcher()

    def walk(o: Any) -> Any:
        if isinstance(o, str):
            return _redact(o, pattern)
        if isinstance(o, dict):
            return {(_redact(k, pattern) if isinstance(k, str) else k): walk(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [walk(v) for v in o]
        return o

    return walk(obj)


def looks_like_key(value: str) -> bool:
    """Whether `value`, given where an environment variable's name belongs, is rather a key:
    not a valid variable name, or one with a known key prefix or the mixed case and digits of
    a random string (at 20 characters or more)."""
    if not _ENV_NAME.fullmatch(value):
        return True
    if len(value) < 20:
        return False
    digits = sum(c.isdigit() for c in value)
    mixed_case = any(c.islower() for c in value) and any(c.isupper() for c in value)
    return value.startswith(_KEY_PREFIXES) or (digits >= 2 and (mixed_case or "_" not in value))


class RedactingFilter(logging.Filter):
    """Masks secrets in a log record's message, traceback and stack (it never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    pattern = _matcher()
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it for the handler to report
        return record
    record.msg, record.args = _redact(message, pattern), None
    if record.exc_info and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        record.exc_text = _redact(record.exc_text, pattern)
    if record.stack_info:
        record.stack_info = _redact(record.stack_info, pattern)
    return record


def _excepthook(exc_type, exc, tb) -> None:
    """Python's traceback of an uncaught exception, with secrets masked."""
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write(redact_text(text))
    sys.stderr.flush()


_installed = False


def install() -> None:
    """Mask secrets in every log record (of every logger, whatever its handlers) and in the
    tracebacks of uncaught exceptions. Safe to call more than once; call it again after code
    that swaps in its own `sys.excepthook` (typer does, on each `app()`)."""
    global _installed
    sys.excepthook = _excepthook
    with _lock:
        if _installed:
            return
        _installed = True
    make_record = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _redact_record(make_record(*args, **kwargs))

    logging.setLogRecordFactory(factory)
