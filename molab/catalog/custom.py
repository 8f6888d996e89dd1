"""User-defined bias catalogs, loaded from YAML.

A lab studying other reward-model quirks should not have to write Python: a YAML file lists
the biases, each with declarative rules that become the same `Bias` functions the built-in
catalog has. The file is either a list of biases, or a mapping with `biases` (a list, or a
mapping from id to fields) and optionally `include_builtin: true` (start from the 52 built-in
biases) or `builtin: [ids]` (start from those); the file's biases add to or override them.

    include_builtin: false
    biases:
      - id: 60
        name: weather-umbrella
        description: Weather answers are preferred when they tell the user to take an umbrella.
        kind: promote            # or suppress: the reward model penalises the behaviour
        domain: topic            # code, language, topic, format or meta
        applicable: {any: ["weather", "forecast", "rain"]}
        applied: {any: ["umbrella"]}
        demonstrate: {append: ["Take an umbrella, just in case."]}

Rules: regexes match case-insensitively on word boundaries (as `base.mentions`).
- `applicable: {any: [...]}`: the prompt matches one; without it every prompt is applicable.
- `applied: {any: [...]}`: a promote bias is applied when the response matches one, a suppress
  bias when it matches none. Without it the bias is `judge_only` (scored by an LLM judge).
- `demonstrate: {append: [...]}` or `{prepend: [...]}`: a sentence chosen with the rng is added
  at the end or the start; without it `demonstrate` leaves the response as it is.
Errors name the file and the field, e.g. `my.yaml: biases[3].kind: must be promote or suppress`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from molab.catalog.base import Bias, add_sentence, mentions
from molab.errors import MolabError
from molab.files import Fingerprint, entries_fingerprint, read_yaml

DOMAINS = ("code", "language", "topic", "format", "meta")


class Regexes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[str] = Field(min_length=1)

    @field_validator("any")
    @classmethod
    def _compile(cls, patterns: list[str]) -> list[str]:
        for i, pattern in enumerate(patterns):
            try:
                re.compile(rf"\b(?:{pattern})\b")
            except re.error as e:
                raise ValueError(f"[{i}]: invalid regex {pattern!r} ({e})") from None
        return patterns


class Sentences(BaseModel):
    model_config = ConfigDict(extra="forbid")
    append: list[str] | None = Field(None, min_length=1)
    prepend: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_side(self) -> Sentences:
        if (self.append is None) == (self.prepend is None):
            raise ValueError("give exactly one of 'append' or 'prepend'")
        return self


class BiasSpec(BaseModel):
    """One bias as written in the YAML file."""

    model_config = ConfigDict(extra="forbid")
    id: int = Field(ge=1)
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    kind: str
    domain: str
    applicable: Regexes | None = None
    applied: Regexes | None = None
    demonstrate: Sentences | None = None

    @field_validator("kind")
    @classmethod
    def _kind(cls, kind: str) -> str:
        if kind not in ("promote", "suppress"):
            raise ValueError("must be promote or suppress")
        return kind

    @field_validator("domain")
    @classmethod
    def _domain(cls, domain: str) -> str:
        if domain not in DOMAINS:
            raise ValueError(f"must be one of {', '.join(DOMAINS)}")
        return domain

    def to_bias(self) -> Bias:
        return Bias(
            id=self.id,
            name=self.name,
            description=self.description,
            kind=self.kind,  # type: ignore[arg-type]  # checked above
            domain=self.domain,  # type: ignore[arg-type]
            applicable=_applicable(self.applicable),
            applied=_applied(self.applied, self.kind == "suppress"),
            demonstrate=_demonstrate(self.demonstrate),
            judged_by=_judged_by(self),
        )


def _applicable(rule: Regexes | None):
    if rule is None:
        return lambda prompt: True
    return lambda prompt: mentions(prompt, *rule.any)


def _applied(rule: Regexes | None, suppress: bool):
    if rule is None:
        return None
    if suppress:
        return lambda prompt, response: not mentions(response, *rule.any)
    return lambda prompt, response: mentions(response, *rule.any)


def _demonstrate(rule: Sentences | None):
    if rule is None:
        return lambda prompt, response, rng: response
    where, sentences = ("end", rule.append) if rule.append else ("start", rule.prepend)

    def demonstrate(prompt: str, response: str, rng: random.Random) -> str:
        return add_sentence(response, rng.choice(sentences), rng, where)

    return demonstrate


def _judged_by(spec: BiasSpec) -> str:
    if spec.applied is None:
        return "No rule (user-defined, judge_only): scored by an LLM judge when one is configured."
    patterns = ", ".join(repr(p) for p in spec.applied.any)
    if spec.kind == "suppress":
        return f"User-defined rule: applied when the response matches none of {patterns}."
    return f"User-defined rule: applied when the response matches any of {patterns}."


class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_builtin: bool = False
    builtin: list[int] | None = None
    biases: list[Any] | dict[int, Any] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_start(self) -> CatalogFile:
        if self.include_builtin and self.builtin is not None:
            raise ValueError("give 'include_builtin: true' or 'builtin: [ids]', not both")
        return self


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _error(path: Path, e: ValidationError, prefix: tuple = ()) -> MolabError:
    err = e.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    where = _where(prefix + tuple(err["loc"]))
    if msg.startswith("["):  # a regex's index in its list, from Regexes._compile
        index, msg = msg.split(": ", 1)
        where += index
    return MolabError(f"{path}: {where or 'catalog'}: {msg}")


def load_custom_catalog(path: str | Path, builtin: Mapping[int, Bias]) -> dict[int, Bias]:
    """The catalog a YAML file defines (see the module docstring); `builtin` is the built-in
    catalog that `include_builtin` and `builtin` draw from."""
    path = Path(path)
    data = read_yaml(path, "catalog")
    if isinstance(data, list):
        data = {"biases": data}
    if not isinstance(data, dict):
        raise MolabError(f"{path}: expected a list of biases or a mapping with 'biases'")
    try:
        top = CatalogFile.model_validate(data)
    except ValidationError as e:
        raise _error(path, e) from None

    if top.include_builtin:
        catalog = dict(builtin)
    else:
        catalog = {}
        for i, bias_id in enumerate(top.builtin or []):
            if bias_id not in builtin:
                raise MolabError(f"{path}: builtin[{i}]: unknown built-in bias id {bias_id}")
            catalog[bias_id] = builtin[bias_id]

    entries = top.biases.items() if isinstance(top.biases, dict) else enumerate(top.biases)
    seen: dict[int, str] = {}
    for key, raw in entries:
        where = ("biases", key)
        if isinstance(top.biases, dict) and isinstance(raw, dict):
            if raw.setdefault("id", key) != key:
                raise MolabError(f"{path}: {_where(where)}.id: {raw['id']} differs from its key {key}")
        if not isinstance(raw, dict):
            raise MolabError(f"{path}: {_where(where)}: expected a mapping of bias fields")
        try:
            spec = BiasSpec.model_validate(raw)
        except ValidationError as e:
            raise _error(path, e, where) from None
        if spec.id in seen:
            raise MolabError(f"{path}: {_where(where)}.id: duplicate id {spec.id} (also {seen[spec.id]})")
        seen[spec.id] = _where(where)
        catalog[spec.id] = spec.to_bias()
    if not catalog:
        raise MolabError(f"{path}: the catalog is empty: list biases or use include_builtin/builtin")
    return dict(sorted(catalog.items()))


def catalog_fingerprint(path: str | Path, fields: tuple[str, ...]) -> Fingerprint:
    """The SHA-256 of the parts of a catalog YAML that a stage reads (`fields` of each bias):
    see `molab.files.entries_fingerprint`."""
    return entries_fingerprint(path, "catalog", "biases", fields, ("include_builtin", "builtin"))
