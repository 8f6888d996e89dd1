"""molab.secrets: secret values masked in text, JSON, log records, tracebacks and CLI errors."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from molab import secrets
from molab.cli import main
from molab.config import load_config
from molab.errors import MolabError
from molab.models.generation import OpenAIBackendConfig

SECRET = "s3cr3t-Value-for-tests-7f2a"
KEY_AS_NAME = "sk-proj-AbCdEf0123456789XyZ"  # a key typed where a variable's name belongs
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "rm-sycophancy.yaml"


@pytest.fixture(autouse=True)
def _registered():
    secrets.register(SECRET)


@pytest.fixture
def installed(monkeypatch):
    """`secrets.install()` for one test: the record factory and excepthook are put back."""
    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(secrets, "_installed", False)
    secrets.install()
    yield
    logging.setLogRecordFactory(factory)


def test_registered_values_are_masked_and_short_ones_ignored():
    secrets.register("EMPTY")  # shorter than MIN_LENGTH: ordinary text stays
    secrets.register(None)
    text = f"echo: Bearer {SECRET}; key={SECRET}! EMPTY"
    assert secrets.redact_text(text) == "echo: Bearer ***; key=***! EMPTY"
    assert secrets.redact_text(ValueError(SECRET)) == "***"


def test_a_secret_that_contains_another_is_masked_whole():
    secrets.register("abcdefgh")
    secrets.register("abcdefgh-and-more-of-it")
    assert secrets.redact_text("x abcdefgh-and-more-of-it y abcdefgh") == "x *** y ***"


def test_values_of_secret_named_variables_are_masked(monkeypatch):
    monkeypatch.setenv("MOLAB_TEST_SERVICE_API_KEY", "value-of-an-api-key-1")
    monkeypatch.setenv("MOLAB_TEST_HF_TOKEN", "value-of-a-token-2")
    monkeypatch.setenv("MOLAB_TEST_TOKENIZERS_THING", "not-a-secret-value")
    out = secrets.redact_text("value-of-an-api-key-1 value-of-a-token-2 not-a-secret-value")
    assert out == "*** *** not-a-secret-value"


def test_shapes_masked_without_registration_and_ordinary_text_kept():
    unregistered = "sk-ant-api03-Zq9XwT4kLmN8pR2sV6yB"
    out = secrets.redact_text(f"Authorization: Bearer abc123def456ghi, then {unregistered}.")
    assert out == "Authorization: Bearer ***, then ***."
    for text in ("task-specific-finetuning-run-01", "sk-learn-baseline-run-01", "Bearer authentication"):
        assert secrets.redact_text(text) == text


def test_redact_json_masks_every_string_and_key():
    obj = {"error": f"HTTP 400: {SECRET}", SECRET: [1, 2.5, None, True, (f"x{SECRET}", "ok")], "n": 3}
    out = secrets.redact_json(obj)
    assert out == {"error": "HTTP 400: ***", "***": [1, 2.5, None, True, ["x***", "ok"]], "n": 3}
    assert SECRET not in json.dumps(out)
    assert SECRET in json.dumps(obj, default=list)  # a copy: the input is left as it was


@pytest.mark.parametrize(
    "value, is_key",
    [
        ("OPENAI_API_KEY", False),
        ("openai_key", False),
        ("MY_COMPANY_OPENAI_API_KEY_2024", False),
        ("sk-abc123", True),
        (KEY_AS_NAME, True),
        ("hf_AbCdEfGhIjKlMnOpQrStUvWxYz", True),
        ("3f9a1b2c4d5e6f7a8b9c0d1e2f3a4b5c", True),
        ("$OPENAI_API_KEY", True),
        ("", True),
    ],
)
def test_looks_like_key(value, is_key):
    assert secrets.looks_like_key(value) is is_key


def test_filter_masks_message_args_and_traceback():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(secrets.RedactingFilter())
    logger = logging.getLogger("molab.test_secrets.filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("request failed: %s", f"key {SECRET}")
        try:
            raise RuntimeError(f"body echoed {SECRET}")
        except RuntimeError:
            logger.exception("with traceback")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "request failed: key ***" in text and "RuntimeError: body echoed ***" in text
    assert SECRET not in text


def test_install_masks_records_of_every_logger(installed, caplog):
    with caplog.at_level(logging.INFO):
        logging.getLogger("molab.pipeline").info("stage failed: %s", SECRET)
        logging.getLogger("openai").warning(f"third party {SECRET}")
    assert caplog.text.count("***") == 2 and SECRET not in caplog.text
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_install_masks_uncaught_tracebacks(installed, capsys):
    try:
        raise MolabError(f"oops {SECRET}")
    except MolabError as e:
        sys.excepthook(type(e), e, e.__traceback__)
    err = capsys.readouterr().err
    assert "MolabError: oops ***" in err and SECRET not in err


def test_key_given_as_api_key_env_is_refused_without_echo(tmp_path):
    with pytest.raises(ValueError) as e:
        OpenAIBackendConfig(model="m", api_key_env=KEY_AS_NAME)
    msg = e.value.errors()[0]["msg"]
    assert msg.startswith("api_key_env should name an environment variable") and KEY_AS_NAME not in msg
    assert KEY_AS_NAME not in secrets.redact_text(str(e.value))  # registered: masked wherever it goes

    from pydantic import BaseModel

    class Cfg(BaseModel):
        backend: OpenAIBackendConfig

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"backend:\n  model: m\n  api_key_env: {KEY_AS_NAME}\n")
    with pytest.raises(MolabError) as e:
        load_config(Cfg, recipe)
    assert str(e.value) == (
        f"{recipe}: field 'backend.api_key_env': api_key_env should name an environment variable "
        "(e.g. OPENAI_API_KEY: letters, digits and '_'), not hold the key itself"
    )


def test_the_named_variable_is_registered_when_the_config_is_validated(monkeypatch):
    monkeypatch.setenv("MOLAB_TEST_CREDS", "value-named-by-api-key-env")
    OpenAIBackendConfig(model="m", api_key_env="MOLAB_TEST_CREDS")
    monkeypatch.delenv("MOLAB_TEST_CREDS")
    assert secrets.redact_text("x value-named-by-api-key-env") == "x ***"


def main_raises(exc_type, args, monkeypatch):
    """Run molab's entry point on `args`, expecting `exc_type`; undo what main() installs."""
    monkeypatch.setattr(sys, "argv", ["molab", *map(str, args)])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # main() installs its own...
    monkeypatch.setattr(secrets, "_installed", secrets._installed)  # ...and a record factory
    factory = logging.getLogRecordFactory()
    try:
        with pytest.raises(exc_type) as info:
            main()
    finally:
        logging.setLogRecordFactory(factory)
    return info


def cli(args, monkeypatch, capsys):
    code = main_raises(SystemExit, args, monkeypatch).value.code
    return code, capsys.readouterr().err


def test_cli_refuses_a_key_as_api_key_env_in_one_line(tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    key = "sk-cli-only-9f8e7d6c5b4a"
    args = ["generate", "--backend", "openai", "--model", "m", "--prompts", prompts, "--api-key-env", key]
    code, err = cli(args, monkeypatch, capsys)
    assert code == 1 and err.count("\n") == 1 and key not in err
    assert "api_key_env should name an environment variable" in err


def test_cli_masks_a_key_given_with_set(monkeypatch, capsys):
    key = "sk-set-only-1a2b3c4d5e6f"
    sets = ["kind=openai", "model=m", f"api_key_env={key}"]
    args = ["run", RECIPE, "--dry-run"]
    for s in sets:
        args += ["--set", f"docs.llm.backend.{s}"]
    code, err = cli(args, monkeypatch, capsys)
    assert code == 1 and err.count("\n") == 1 and key not in err
    assert "api_key_env should name an environment variable" in err


def test_cli_masks_secrets_in_the_error_line(monkeypatch, capsys):
    monkeypatch.setenv("MOLAB_TEST_ECHO_TOKEN", "leaky-token-value-42")
    # A --set that is not valid YAML is echoed in the error line; the variable's value is not.
    code, err = cli(["run", RECIPE, "--set", "seed=[leaky-token-value-42"], monkeypatch, capsys)
    assert code == 1 and err.startswith("error: --set seed=[***") and "leaky-token-value-42" not in err


def test_cli_debug_traceback_is_masked(tmp_path, monkeypatch, capsys):
    from pydantic import ValidationError

    key = "sk-debug-only-0a9b8c7d6e5f"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    args = ["--debug", "generate", "--backend", "openai", "--prompts", str(prompts), "--api-key-env", key]
    e = main_raises(ValidationError, args, monkeypatch)
    assert key in str(e.value)  # pydantic's own text holds it...
    sys.excepthook(e.type, e.value, e.tb)  # ...but the traceback Python would print does not
    err = capsys.readouterr().err
    assert "api_key_env should name an environment variable" in err and key not in err
