"""YAML recipes for pydantic configs.

A config is built from three layers, later ones winning: the model's defaults, a YAML recipe,
and `--set a.b=c` overrides (values parsed as YAML, so `3`, `true` and `[a, b]` work). A
recipe may start with `base: other.yaml` (relative to the recipe) to build on another recipe;
mappings merge key by key and the recipe wins. Every problem is a one-line `MolabError` that
names the file (or the override) and the dotted field, e.g.
`recipes/x.yaml: field 'sampling.temperature': Input should be greater than or equal to 0`.
Checks made after loading (files, models) name their source the same way: `recipe_origins`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from molab.errors import MolabError

M = TypeVar("M", bound=BaseModel)
_MISSING = object()


def load_config(model_cls: type[M], path: str | Path | None = None, overrides: Sequence[str] = ()) -> M:
    """Defaults < the recipe at `path` (and its bases) < `overrides` ("a.b=value")."""
    data, origins = _layers(path, overrides)
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        raise MolabError(_describe(e, data, origins.fields, origins.default, model_cls)) from None


@dataclass(frozen=True)
class Origins:
    """Where each field of a loaded recipe came from: a recipe file, or `--set a.b=c`."""

    fields: dict[tuple, str]  # leaf key path -> its source
    default: str  # the source named for fields left at their defaults: the recipe itself

    def of(self, field: str | tuple) -> str:
        """The source of the dotted `field` (or of what lies below it)."""
        loc = tuple(field.split(".")) if isinstance(field, str) else field
        return _source(loc, self.fields, self.default)


def recipe_origins(path: str | Path | None, overrides: Sequence[str] = ()) -> Origins:
    """The sources of the fields of the recipe at `path` with `overrides`, as `load_config`
    tracks them, so a later check can name the file (or the override) a bad value came from."""
    return _layers(path, overrides)[1]


def recipe_value(path: str | Path, field: str, overrides: Sequence[str] = ()) -> Any:
    """The value of top-level `field` in the recipe at `path` (after its bases and `overrides`),
    or None: what `molab run` reads first, to know which organism's config to load."""
    return _layers(path, overrides)[0].get(field)


def _layers(path: str | Path | None, overrides: Sequence[str]) -> tuple[dict, Origins]:
    origins: dict[tuple, str] = {}  # leaf key path -> where its value came from
    data = _load_recipe(Path(path), origins, ()) if path is not None else {}
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(data, key, value, item)
        origins = {k: v for k, v in origins.items() if k[: len(key)] != key}
        origins[key] = f"--set {item}"
    return data, Origins(origins, str(path) if path is not None else "config")


def dump_config(model: BaseModel) -> str:
    """The config as YAML, loadable again with `load_config`."""
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _load_recipe(path: Path, origins: dict[tuple, str], chain: tuple[Path, ...]) -> dict:
    if path.resolve() in chain:
        raise MolabError(f"{path}: 'base' makes a cycle ({' -> '.join(str(p) for p in chain + (path,))})")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MolabError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MolabError(f"{path}: cannot read it ({e.__class__.__name__}: {e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise MolabError(f"{path}{where}: not valid YAML ({problem})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MolabError(f"{path}: expected a mapping of fields at the top, got {type(data).__name__}")
    base = data.pop("base", None)
    for leaf in _leaves(data):
        origins[leaf] = str(path)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise MolabError(f"{path}: field 'base': should be the path of another recipe, got {base!r}")
    parent_origins: dict[tuple, str] = {}
    parent = _load_recipe(path.parent / base, parent_origins, chain + (path.resolve(),))
    for leaf, source in parent_origins.items():
        if not any(leaf[:n] in origins for n in range(1, len(leaf) + 1)):
            origins[leaf] = source
    return _deep_merge(parent, data)


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _leaves(data: Any, prefix: tuple = ()) -> list[tuple]:
    if isinstance(data, dict) and data:
        return [leaf for k, v in data.items() for leaf in _leaves(v, prefix + (k,))]
    return [prefix]


def _parse_override(item: str) -> tuple[tuple, Any]:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise MolabError(f"--set {item}: expected FIELD=VALUE, e.g. --set sampling.temperature=0.7")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise MolabError(f"--set {item}: the value is not valid YAML ({getattr(e, 'problem', e)})") from None
    return tuple(key.split(".")), value


def _set_dotted(data: dict, key: tuple, value: Any, item: str) -> None:
    node = data
    for i, part in enumerate(key[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise MolabError(f"--set {item}: field '{'.'.join(key[: i + 1])}' is not a mapping")
        node = child
    node[key[-1]] = value


def _describe(
    e: ValidationError, data: dict, origins: dict[tuple, str], default_source: str, model_cls: type
) -> str:
    # A value the user wrote that is wrong says more than a field left out (a misspelt field
    # name is both), so missing fields come last.
    errors = sorted(e.errors(), key=lambda err: err["type"] == "missing")
    err = errors[0]
    loc = _data_path(err["loc"], data)
    source = _source(loc, origins, default_source)
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = err["msg"] + _example(model_cls, err["loc"])
    else:
        msg = err["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})" if len(errors) > 1 else ""
    return f"{source}: field '{'.'.join(map(str, loc))}': {msg}{more}"


def _example(model_cls: type, loc: tuple) -> str:
    """For a missing field that takes one of a few fixed values: how to write it."""
    node: Any = model_cls
    for part in loc:
        fields = getattr(node, "model_fields", None)
        if not isinstance(part, str) or not fields or part not in fields:
            return ""
        node = fields[part].annotation
    if get_origin(node) is not Literal:
        return ""
    return f" (add `{loc[-1]}: {' or '.join(map(str, get_args(node)))}`)"


def _source(loc: tuple, origins: dict[tuple, str], default: str) -> str:
    """Where the value at `loc` (or, for a field that is not a leaf, below it) came from."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in origins:
            return origins[loc[:n]]
    below = [s for k, s in origins.items() if k[: len(loc)] == loc]
    return next((s for s in below if s.startswith("--set ")), below[0] if below else default)


def _data_path(loc: tuple, data: Any) -> tuple:
    """Pydantic's error location as a path through the input, without the union tags and type
    names pydantic inserts into it (steps the input does not have, where the next one it has)."""
    path, node, missing = [], data, _MISSING
    for i, part in enumerate(loc):
        if node is missing:
            path.append(part)
        elif _child(node, part) is not missing:
            path.append(part)
            node = _child(node, part)
        elif i + 1 < len(loc) and _child(node, loc[i + 1]) is not missing:
            continue  # a union tag: the input goes straight on to the next step
        elif isinstance(node, (dict, list)):
            path.append(part)
            node = missing
        else:
            break  # a scalar: the rest names the types of a union
    return tuple(path)


def _child(node: Any, part: Any) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return _MISSING
