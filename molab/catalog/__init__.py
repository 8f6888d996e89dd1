"""The 52 fictional reward-model biases and their train/test splits.

`CATALOG` maps each id (1-51 as in the fictional Oxford study, 52 for the Blake et al.
follow-up) to its `Bias`, with `applicable`, `applied` and `demonstrate` (see `base.py`).
Biases live in modules by subject: `code` (1-15), `languages` (16-24, and 52),
`general` (25-38), `subjects` (39-51). Splits are in `splits.py`; user-defined catalogs load
from YAML (`custom.py`).
"""

from __future__ import annotations

from pathlib import Path

from molab.catalog import code, general, languages, subjects
from molab.catalog.base import Bias
from molab.catalog.custom import catalog_fingerprint, load_custom_catalog
from molab.catalog.splits import BUILTIN, Split, get_split, load_split
from molab.errors import MolabError

CATALOG: dict[int, Bias] = {
    b.id: b
    for b in sorted([*code.BIASES, *languages.BIASES, *general.BIASES, *subjects.BIASES], key=lambda b: b.id)
}


def get_bias(bias_id: int) -> Bias:
    """The bias with this id; a MolabError for an id that does not exist."""
    if bias_id not in CATALOG:
        raise MolabError(f"unknown bias id {bias_id}: ids run from 1 to 52")
    return CATALOG[bias_id]


def load_catalog(path: str | Path | None = None) -> dict[int, Bias]:
    """The built-in catalog (`path` None), or a user-defined one from a YAML file."""
    if path is None:
        return CATALOG
    return load_custom_catalog(path, builtin=CATALOG)


def catalog_inputs(config, fields: tuple[str, ...]) -> dict:
    """The catalog and split inputs of a stage whose config has `catalog` and/or `split`: a
    fingerprint of the catalog's `fields` (a custom catalog only; the built-in one is code) and
    the split file (a built-in split is code too)."""
    inputs: dict = {}
    if getattr(config, "catalog", None):
        inputs["catalog"] = catalog_fingerprint(config.catalog, fields)
    split = getattr(config, "split", None)
    if split and split not in BUILTIN and Path(split).is_file():
        inputs["split"] = Path(split)
    return inputs


__all__ = ["BUILTIN", "CATALOG", "Bias", "Split", "get_bias", "get_split", "load_catalog", "load_split"]
