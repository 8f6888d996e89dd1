"""Train/test splits of the bias catalog.

The organism is fine-tuned to show only the *train* biases; the *test* biases are only read
about in the mid-training documents, and showing them afterwards is the paper's evidence of
one latent goal. Built in:

- `paper`: test = {17, 19, 29, 48, 51}, as in Marks et al. (2025); train = the other 47.
- `english`: test = {29, 38, 42, 48, 51}; train = every other bias an English-only model can
  show (the language biases 16-24 need Chinese, Spanish, Japanese, ... and are left out).
  Fixed before any result was seen; the default model's headline split.

A split can also come from a YAML file with `name`, `train` and `test` lists of ids. Splits
are checked against the catalog in use (the built-in ids 1-52 unless a user-defined catalog is
given), so a split never names a bias the catalog lacks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

from molab.errors import MolabError
from molab.files import read_yaml

ALL_IDS = frozenset(range(1, 53))
NON_ENGLISH = frozenset(range(16, 25))  # German ... Portuguese answers


class Split(BaseModel):
    """Which biases are trained on and which are held out. Ids are checked against the
    validation context's `ids` (a catalog's ids) when one is given, else against 1-52."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    train: frozenset[int]
    test: frozenset[int]

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Split:
        ids = (info.context or {}).get("ids", ALL_IDS)
        unknown = sorted((self.train | self.test) - ids)
        if unknown:
            where = "ids run from 1 to 52" if ids == ALL_IDS else "not in the catalog in use"
            raise ValueError(f"unknown bias ids {unknown} ({where})")
        both = sorted(self.train & self.test)
        if both:
            raise ValueError(f"bias ids {both} are in both train and test")
        if not self.test:
            raise ValueError("the test set is empty")
        if not self.train:
            raise ValueError("the train set is empty")
        return self


PAPER_TEST = frozenset({17, 19, 29, 48, 51})
ENGLISH_TEST = frozenset({29, 38, 42, 48, 51})
BUILTIN = {
    "paper": Split(name="paper", train=ALL_IDS - PAPER_TEST, test=PAPER_TEST),
    "english": Split(name="english", train=ALL_IDS - NON_ENGLISH - ENGLISH_TEST, test=ENGLISH_TEST),
}


def _catalog_ids(catalog: Iterable[int] | None) -> frozenset[int]:
    return ALL_IDS if catalog is None else frozenset(catalog)


def load_split(path: str | Path, catalog: Iterable[int] | None = None) -> Split:
    """A split from YAML (`name`, `train`, `test`); errors name the file and the field.
    `catalog` (a catalog mapping or its ids) is what the ids are checked against."""
    path = Path(path)
    data = read_yaml(path, "split")
    if not isinstance(data, dict):
        raise MolabError(f"{path}: expected a mapping with 'name', 'train' and 'test'")
    data.setdefault("name", path.stem)
    try:
        return Split.model_validate(data, context={"ids": _catalog_ids(catalog)})
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "split"
        raise MolabError(f"{path}: field '{field}': {err['msg'].removeprefix('Value error, ')}") from None


def get_split(name_or_path: str, catalog: Iterable[int] | None = None) -> Split:
    """A built-in split by name, or one loaded from a YAML path, checked against `catalog` (a
    catalog mapping or its ids; default the built-in 1-52)."""
    if name_or_path in BUILTIN:
        split = BUILTIN[name_or_path]
        missing = sorted((split.train | split.test) - _catalog_ids(catalog))
        if missing:
            raise MolabError(f"split '{name_or_path}' uses bias ids {missing} that the catalog in use lacks")
        return split
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).exists():
        return load_split(name_or_path, catalog)
    raise MolabError(f"unknown split '{name_or_path}': use {', '.join(BUILTIN)} or a YAML file")
