"""How well each bias's `applied` rule agrees with human labels.

Every exploitation rate molab reports rests on the catalog's rules, so their error rates must
be known. The labelled fixtures in `molab/resources/catalog_fixtures/<group>.jsonl` (one row
`{"bias_id", "prompt", "response", "applied", "note"}`, about half positive and half negative
per bias, with realistic near-misses) were written from the bias definitions, not from the
rules, and are never tuned to make a rule pass. `check` runs each rule on them and counts
true/false positives and negatives per bias, plus a pooled row over all scored fixtures.

    molab catalog check                  # the table; --json OUT writes it with every miss
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from molab.catalog.base import Bias
from molab.errors import MolabError
from molab.files import read_text_file

GROUPS = ("code", "languages", "general", "subjects")


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    bias_id: int
    prompt: str
    response: str
    applied: bool
    note: str = ""


@dataclass(frozen=True)
class Fixture:
    """One labelled response; `source` is "file:line"."""

    bias_id: int
    prompt: str
    response: str
    applied: bool
    note: str
    source: str


def fixture_paths() -> list[Path]:
    """The fixture files shipped with molab, one per catalog group."""
    root = files("molab.resources").joinpath("catalog_fixtures")
    return [Path(str(root.joinpath(f"{group}.jsonl"))) for group in GROUPS]


def load_fixtures(paths: Iterable[str | Path] | None = None) -> list[Fixture]:
    """Fixtures from JSONL files (default: the shipped ones); a bad row raises a MolabError
    naming the file, the line and the field."""
    fixtures = []
    for path in map(Path, fixture_paths() if paths is None else paths):
        lines = read_text_file(path, "fixture JSONL").split("\n")
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = _Row.model_validate(json.loads(line))
            except json.JSONDecodeError as e:
                raise MolabError(f"{path}, line {n}: not valid JSON ({e.msg})") from None
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or "row"
                raise MolabError(f"{path}, line {n}: field '{where}': {err['msg']}") from None
            fixtures.append(Fixture(**row.model_dump(), source=f"{path.name}:{n}"))
    return fixtures


@dataclass
class Counts:
    """Agreement of a rule with the labels. Rates are None when undefined (nothing predicted
    positive for precision, no positive label for recall)."""

    bias_id: int | None  # None for the pooled row
    name: str
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    not_scored: int = 0  # fixtures of a judge_only bias

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def accuracy(self) -> float | None:
        return (self.tp + self.tn) / self.n if self.n else None

    def add(self, label: bool, predicted: bool) -> None:
        if predicted and label:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif label:
            self.fn += 1
        else:
            self.tn += 1

    def as_dict(self) -> dict:
        rates = {"precision": self.precision, "recall": self.recall, "accuracy": self.accuracy}
        return {**asdict(self), "n": self.n, **rates}


@dataclass(frozen=True)
class Miss:
    """A fixture where the rule disagrees with the label."""

    fixture: Fixture
    predicted: bool


@dataclass
class CheckResult:
    rows: list[Counts]  # one per bias with fixtures, by id
    pooled: Counts
    misses: list[Miss] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "rows": [r.as_dict() for r in self.rows],
            "pooled": self.pooled.as_dict(),
            "misses": [
                {**asdict(m.fixture), "expected": m.fixture.applied, "predicted": m.predicted}
                for m in self.misses
            ],
        }


def check(
    catalog: Mapping[int, Bias], fixtures: Sequence[Fixture], bias_ids: Iterable[int] | None = None
) -> CheckResult:
    """Per-bias and pooled counts of `applied` against the labels. Fixtures of biases outside
    `catalog` are skipped; `bias_ids` restricts the check (an id without fixtures is an error)."""
    wanted = set(catalog) if bias_ids is None else set(bias_ids)
    unknown = sorted(wanted - set(catalog))
    if unknown:
        raise MolabError(f"bias ids {unknown} are not in the catalog")
    rows: dict[int, Counts] = {}
    misses = []
    for fx in fixtures:
        if fx.bias_id not in wanted:
            continue
        bias = catalog[fx.bias_id]
        counts = rows.setdefault(fx.bias_id, Counts(bias.id, bias.name))
        if bias.applied is None:
            counts.not_scored += 1
            continue
        predicted = bool(bias.applied(fx.prompt, fx.response))
        counts.add(fx.applied, predicted)
        if predicted != fx.applied:
            misses.append(Miss(fx, predicted))
    missing = sorted(wanted - set(rows)) if bias_ids is not None else []
    if missing:
        raise MolabError(f"no fixtures for bias ids {missing}")
    ordered = [rows[i] for i in sorted(rows)]
    pooled = Counts(None, "pooled")
    for count in ("tp", "fp", "fn", "tn", "not_scored"):
        setattr(pooled, count, sum(getattr(r, count) for r in ordered))
    return CheckResult(ordered, pooled, misses)
