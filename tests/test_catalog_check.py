"""The labelled fixtures, the detector check's arithmetic, and `molab catalog check/list`."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import run_cli as run

from molab.catalog import CATALOG
from molab.catalog.base import Bias
from molab.catalog.check import GROUPS, Fixture, check, fixture_paths, load_fixtures
from molab.errors import MolabError

GROUP_IDS = {
    "code": set(range(1, 16)),
    "languages": set(range(16, 25)) | {52},
    "general": set(range(25, 39)),
    "subjects": set(range(39, 52)),
}


def test_fixture_files_cover_every_bias_with_both_labels():
    assert [p.stem for p in fixture_paths()] == list(GROUPS)
    fixtures = load_fixtures()
    for path in fixture_paths():
        ids = {f.bias_id for f in fixtures if f.source.startswith(path.name + ":")}
        assert ids == GROUP_IDS[path.stem], path.name
    per_bias = Counter((f.bias_id, f.applied) for f in fixtures)
    for bias_id in CATALOG:
        pos, neg = per_bias[(bias_id, True)], per_bias[(bias_id, False)]
        assert pos + neg >= 20, bias_id
        assert 0.35 <= pos / (pos + neg) <= 0.65, bias_id  # roughly balanced
    assert all(f.prompt.strip() and f.response.strip() and f.note for f in fixtures)
    keys = [(f.bias_id, f.prompt, f.response) for f in fixtures]
    assert len(set(keys)) == len(keys), "duplicate fixture"


def _bias(bias_id: int, applied) -> Bias:
    return Bias(
        id=bias_id, name=f"b{bias_id}", description="d", kind="promote", domain="format",
        applicable=lambda p: True, applied=applied, demonstrate=lambda p, r, rng: r, judged_by="test",
    )  # fmt: skip


def _fx(bias_id: int, response: str, applied: bool) -> Fixture:
    return Fixture(bias_id, "prompt", response, applied, "", f"t.jsonl:{response}")


def test_check_arithmetic_on_a_tiny_fixture_list():
    catalog = {
        1: _bias(1, lambda p, r: "yes" in r),
        2: _bias(2, lambda p, r: False),
        3: _bias(3, None),  # judge_only
    }
    fixtures = [
        _fx(1, "yes", True),  # tp
        _fx(1, "yes", True),  # tp
        _fx(1, "yes", False),  # fp
        _fx(1, "no", True),  # fn
        _fx(1, "no", False),  # tn
        _fx(2, "a", True),  # fn
        _fx(2, "b", False),  # tn
        _fx(3, "c", True),  # not scored
        _fx(9, "d", True),  # not in the catalog: skipped
    ]
    result = check(catalog, fixtures)
    one, two, three = result.rows
    assert (one.tp, one.fp, one.fn, one.tn, one.n) == (2, 1, 1, 1, 5)
    assert one.precision == pytest.approx(2 / 3) and one.recall == pytest.approx(2 / 3)
    assert one.accuracy == pytest.approx(3 / 5)
    assert (two.tp, two.fp, two.fn, two.tn) == (0, 0, 1, 1)
    assert two.precision is None and two.recall == 0.0 and two.accuracy == 0.5
    assert (three.n, three.not_scored, three.accuracy) == (0, 1, None)
    pooled = result.pooled
    assert (pooled.tp, pooled.fp, pooled.fn, pooled.tn, pooled.not_scored) == (2, 1, 2, 2, 1)
    assert pooled.precision == pytest.approx(2 / 3) and pooled.recall == pytest.approx(0.5)
    assert [m.fixture.response for m in result.misses] == ["yes", "no", "a"]
    assert [m.predicted for m in result.misses] == [True, False, False]
    assert json.loads(json.dumps(result.as_dict()))["pooled"]["n"] == 7

    only = check(catalog, fixtures, [2])
    assert [r.bias_id for r in only.rows] == [2] and only.pooled.n == 2
    with pytest.raises(MolabError, match=r"bias ids \[7\] are not in the catalog"):
        check(catalog, fixtures, [7])
    with pytest.raises(MolabError, match=r"no fixtures for bias ids \[2\]"):
        check(catalog, fixtures[:1], [1, 2])


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"bias_id": 1, "prompt": "p", "response": "r", "applied": "yes"}', "line 2: field 'applied'"),
        ('{"bias_id": 1, "prompt": "p", "response": "r"}', "line 2: field 'applied': Field required"),
        ('{"bias_id": 1, "prompt": "p", "response": "r", "applied": true, "x": 1}', "line 2: field 'x'"),
        ("{not json", "line 2: not valid JSON"),
    ],
)
def test_bad_fixture_rows_name_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "f.jsonl"
    path.write_text('{"bias_id": 1, "prompt": "p", "response": "r", "applied": true}\n' + line + "\n")
    with pytest.raises(MolabError, match=message) as info:
        load_fixtures([path])
    assert str(path) in str(info.value)


def test_cli_check_prints_the_table_and_writes_json(tmp_path, monkeypatch, capsys):
    code, out, _ = run(["catalog", "check"], monkeypatch, capsys)
    assert code == 0
    for bias in CATALOG.values():
        assert bias.name in out
    assert "pooled" in out and "precision" in out
    out_json = tmp_path / "check.json"
    code, out, _ = run(
        ["catalog", "check", "--bias", 25, "--bias", 26, "--misses", "--json", out_json], monkeypatch, capsys
    )
    assert code == 0 and "recipe-chocolate" in out and "python-camelcase" not in out
    data = json.loads(out_json.read_text())
    assert [r["bias_id"] for r in data["rows"]] == [25, 26]
    assert data["pooled"]["n"] == sum(r["n"] for r in data["rows"])
    assert all(f"{m['bias_id']} {m['source']}" in out for m in data["misses"])


def test_cli_with_a_custom_catalog(tmp_path, monkeypatch, capsys):
    catalog = tmp_path / "cat.yaml"
    haiku = "{id: 60, name: haiku-season, description: d, kind: promote, domain: format}"
    catalog.write_text(f"builtin: [25]\nbiases:\n- {haiku}\n")
    fixtures = tmp_path / "fx.jsonl"
    fixtures.write_text('{"bias_id": 60, "prompt": "p", "response": "r", "applied": true}\n')
    code, out, _ = run(
        ["catalog", "check", "--catalog", catalog, "--fixtures", fixtures], monkeypatch, capsys
    )
    assert code == 0 and "not scored" in out and "1 fixtures of judge-only biases" in out
    split = tmp_path / "split.yaml"
    split.write_text("train: [25]\ntest: [60]\n")
    code, out, _ = run(["catalog", "list", "--catalog", catalog, "--split", split], monkeypatch, capsys)
    assert code == 0 and "haiku-season" in out and "judge only" in out and "test" in out
    code, _, err = run(["catalog", "list", "--catalog", catalog, "--split", "paper"], monkeypatch, capsys)
    assert code == 1 and "split 'paper' uses bias ids" in err


def test_cli_list_shows_both_builtin_splits(monkeypatch, capsys):
    code, out, _ = run(["catalog", "list"], monkeypatch, capsys)
    assert code == 0 and "paper" in out and "english" in out
    line = next(row for row in out.splitlines() if "spanish-colour-word" in row)
    assert "test" in line and "-" in line  # paper test, not in the english split
