"""Golden files and run records are validated against the JSON Schemas shipped in the package
(pytest_speechlab/schemas/) on every read: a bad value is one error naming the file, the key and the value,
never a traceback and never a comparison that compares nothing.  Plus a property test: random JSON into
both loaders gives a clear error or a valid document."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from _fake import FakeProject
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_speechlab.golden import GoldenError, compare, read_golden
from pytest_speechlab.records import (
    RunRecordError,
    case_problem,
    load_run,
    record_problems,
)
from pytest_speechlab.schema import schema_path

FIX = (
    "the golden breaks its schema (golden-1.schema.json); restore it from git or re-create it with "
    "--speechlab-update-golden"
)


def _set(path: str, value: Any) -> Any:
    def change(d: dict[str, Any]) -> None:
        keys = path.split(".")
        for k in keys[:-1]:
            d = d[k]
        if value is _DELETE:
            d.pop(keys[-1])
        else:
            d[keys[-1]] = value

    return change


_DELETE = object()

BAD_GOLDENS = [
    ("nan", _set("metrics.wer", math.nan), "metrics.wer: NaN is not a finite number"),
    ("inf", _set("metrics.wer", math.inf), "metrics.wer: Infinity is not a finite number"),
    ("string", _set("metrics.wer", "0.5"), "metrics.wer: '0.5' is not a finite number"),
    ("null-wer", _set("metrics.wer", None), "metrics.wer: null is not a finite number"),
    ("negative", _set("metrics.cer", -0.1), "metrics.cer: -0.1 is less than the minimum of 0"),
    ("empty-metrics", _set("metrics", {}), "metrics: 'cer' is a required property (and 2 more problem(s))"),
    ("null-rtf", _set("metrics.rtf", None), "metrics.rtf: null is not a finite number"),
    ("no-wer", _set("metrics.wer", _DELETE), "metrics: 'wer' is a required property"),
    ("bool", _set("metrics.wer", True), "metrics.wer: true is not a finite number"),
    ("utt-id", lambda d: d["utterances"][0].update(id=7), "utterances[0].id: 7 is not a string"),
]


@pytest.mark.parametrize("change, message", [pytest.param(c, m, id=i) for i, c, m in BAD_GOLDENS])
def test_bad_golden_is_an_error_naming_file_and_key(fake: FakeProject, change: Any, message: str) -> None:
    fake.config()
    assert fake.run("--speechlab-update-golden").ret == 0
    assert fake.run("--speechlab-json", "good.json").ret == 0
    golden = fake.golden()
    data = json.loads(golden.read_text())
    change(data)
    golden.write_text(json.dumps(data), encoding="utf-8")  # json writes NaN/Infinity as Python reads them
    res = fake.run("--speechlab-json", "run.json")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines([f"{golden}: {message}; {FIX}"])
    (row,) = fake.record()["cases"]
    assert (row["status"], row["verdict"]) == ("ran", "error")
    rc, out = fake.speechlab("check", str(fake.path / "run.json"))
    assert rc == 1 and f"ok-cpu-clips: error: {golden}: {message}; {FIX}" in out
    # A record made before the golden broke is re-judged against it: the same message.
    rc, out = fake.speechlab("check", str(fake.path / "good.json"))
    assert rc == 1 and f"ok-cpu-clips: {golden}: {message}; {FIX}" in out


def test_future_golden_schema(fake: FakeProject) -> None:
    fake.config()
    fake.run("--speechlab-update-golden")
    golden = fake.golden()
    golden.write_text(golden.read_text().replace('"schema": 1', '"schema": 7'), encoding="utf-8")
    res = fake.run()
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(
        [(f"{golden}: schema: golden schema 7 is newer than this pytest-speechlab reads (1); upgrade pytest-speechlab")]
    )


RECORD_FIX = (
    "the run record breaks its schema (run-record-2.schema.json); re-create it with pytest --speechlab-json PATH"
)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda r: r["cases"][0]["metrics"].update(wer=math.nan),
            "cases[0].metrics.wer: NaN is not a finite number or null",
        ),
        (
            lambda r: r["cases"][0]["metrics"].update(wer="0.1"),
            "cases[0].metrics.wer: '0.1' is not a finite number or null",
        ),
        (lambda r: r["cases"][0]["metrics"].update(rtf=-1), "cases[0].metrics.rtf: -1 is less than the minimum of 0"),
        (lambda r: r["cases"][0].pop("metrics"), "cases[0]: 'metrics' is a required property"),
        (
            lambda r: r["cases"][0].update(status="passed"),
            "cases[0].status: 'passed' is not one of ['ran', 'skipped', 'error']",
        ),
        (lambda r: r.pop("collected"), "(top level): 'collected' is a required property"),
        (lambda r: r.update(collected="1"), "collected: '1' is not a finite integer"),
    ],
    ids=["nan", "string", "negative", "no-metrics", "status", "no-collected", "collected-string"],
)
def test_bad_record_is_refused_by_check_and_merge(fake: FakeProject, change: Any, message: str) -> None:
    fake.config()
    fake.run("--speechlab-update-golden")
    assert fake.run("--speechlab-json", "run.json").ret == 0
    record = fake.record()
    change(record)
    bad = fake.path / "bad.json"
    bad.write_text(json.dumps(record), encoding="utf-8")
    rc, out = fake.speechlab("check", str(bad))
    assert rc == 2 and out.strip() == f"speechlab check: {bad}: {message}; {RECORD_FIX}", out
    rc, out = fake.speechlab("merge", str(bad), "-o", str(fake.path / "m.json"), "--gate")
    assert rc == 2 and out.strip() == f"speechlab merge: {bad}: {message}; {RECORD_FIX}", out


def test_future_and_old_record_schema(tmp_path: Path) -> None:
    future = tmp_path / "future.json"
    future.write_text(json.dumps({"schema": 3, "collected": 0, "cases": []}), encoding="utf-8")
    with pytest.raises(
        RunRecordError,
        match=r"future.json: schema: run record schema 3 is newer than this "
        r"pytest-speechlab reads \(2\); upgrade pytest-speechlab$",
    ):
        load_run(future)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"schema": 1, "cases": []}), encoding="utf-8")
    assert load_run(old)["cases"] == []  # history (scorecards) still reads it
    with pytest.raises(
        RunRecordError,
        match=r"old.json: schema: run record schema 1 \(older pytest-speechlab\) has no "
        r"'collected' count",
    ):
        load_run(old, gate=True)


def test_schemas_ship_in_the_package() -> None:
    for kind in ("golden", "run record"):
        doc = json.loads(Path(schema_path(kind)).read_text(encoding="utf-8"))
        assert doc["$schema"].startswith("https://json-schema.org/")


def test_bundled_goldens_are_valid() -> None:
    goldens = sorted((Path(__file__).resolve().parent.parent / "golden").rglob("*.json"))
    assert goldens
    for path in goldens:
        assert read_golden(path) is not None


# ---- property test: random JSON in, a clear error or a valid document out ------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "schema",
                    "metrics",
                    "wer",
                    "cer",
                    "rtf",
                    "cases",
                    "case",
                    "status",
                    "collected",
                    "id",
                    "utterances",
                    "model",
                    "dataset",
                    "device",
                    "verdict",
                    "entity_acc",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)

GOOD_GOLDEN: dict[str, Any] = {
    "schema": 1,
    "normalizer": {"name": "basic", "version": "1"},
    "decode": {},
    "metrics": {"wer": 0.1, "cer": 0.05, "rtf": 0.2},
    "utterances": [{"id": "a", "word_errors": 1, "ref_words": 10}],
}
GOOD_CASE: dict[str, Any] = {
    "case": "m-cpu-d",
    "model": "m",
    "dataset": "d",
    "device": "cpu",
    "status": "ran",
    "verdict": "pass",
    "origin": "matrix",
    "normalizer": {"name": "basic", "version": "1"},
    "decode": {},
    "metrics": {"wer": 0.1, "cer": 0.05, "rtf": 0.2},
    "utterances": [],
}


def _mutate(base: dict[str, Any], draw: Any) -> Any:
    doc = json.loads(json.dumps(base))
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append((node, k))
                walk(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append((node, i))
                walk(v)

    walk(doc)
    for _ in range(draw(st.integers(1, 3))):
        parent, key = draw(st.sampled_from(paths))
        parent[key] = draw(_json)
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_golden_is_a_clear_error_or_valid(tmp_path: Path, data: Any) -> None:
    doc = data.draw(_json) if data.draw(st.booleans()) else _mutate(GOOD_GOLDEN, data.draw)
    path = tmp_path / "g.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    try:
        golden = read_golden(path)
    except GoldenError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
        return
    assert golden is not None
    compare(golden, GOOD_CASE, {"wer_abs": 0.01, "cer_abs": 0.01, "rtf_rel": 0.5})  # never a traceback
    compare(golden, GOOD_CASE, {"wer_abs": 0.01, "cer_abs": 0.01, "rtf_rel": 0.5}, gate="statistical", bootstrap=100)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_record_is_a_clear_error_or_valid(tmp_path: Path, data: Any) -> None:
    base = {"schema": 2, "collected": 1, "cases": [GOOD_CASE]}
    doc = data.draw(_json) if data.draw(st.booleans()) else _mutate(base, data.draw)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    try:
        record = load_run(path, gate=data.draw(st.booleans()))
    except RunRecordError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
        return
    record_problems(record, str(path))
    for case in record["cases"]:
        case_problem(case)
        golden = json.loads(json.dumps(GOOD_GOLDEN))
        if case.get("status") == "ran":
            compare(golden, case, {"wer_abs": 0.01, "cer_abs": 0.01, "rtf_rel": 0.5})
