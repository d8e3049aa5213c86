"""Config slips are errors, whatever the selection: an empty matrix, an empty shard, duplicate YAML keys,
a malformed speechlab.yaml under -m/-k (issue 12 items 3 and 6).  Fake backend, pytester sessions."""

from __future__ import annotations

import pytest
from _fake import FakeProject


def _write(fake: FakeProject, text: str) -> str:
    (fake.path / "speechlab.yaml").write_text(text, encoding="utf-8")
    return str(fake.path / "speechlab.yaml")


@pytest.mark.parametrize("xdist", [[], ["-n", "0"], pytest.param(["-n", "2"], marks=pytest.mark.slow)],
                         ids=["no-xdist", "n0", "n2"])
def test_empty_datasets_is_an_error(fake: FakeProject, xdist: list[str]) -> None:
    path = fake.config(datasets={})
    res = fake.run(*xdist)
    # xdist ends a session whose workers failed to collect with rc 1, pytest alone with rc 2.
    assert res.ret == (pytest.ExitCode.TESTS_FAILED if xdist == ["-n", "2"] else pytest.ExitCode.INTERRUPTED)
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines([f"{path}: datasets: no dataset configured, so the matrix is empty; add one under datasets:"])


def test_no_task_matches_is_an_error(fake: FakeProject) -> None:
    fake.dataset("texts")
    (fake.path / "data" / "texts" / "manifest.jsonl").write_text('{"text": "hi"}\n', encoding="utf-8")
    path = fake.config(datasets={"texts": {"manifest": "data/texts/manifest.jsonl", "task": "tts"}})
    res = fake.run()
    assert res.ret == pytest.ExitCode.INTERRUPTED
    res.stdout.fnmatch_lines([
        (f"{path}: the matrix is empty: no selected model's task matches a selected dataset's task (models: ok (asr); "
        "datasets: texts (tts)); give a dataset the task of a model (task: asr|tts), or select others with "
        "--speechlab-model/--speechlab-dataset")])


def test_empty_shard_is_an_error_unless_allowed(fake: FakeProject) -> None:
    fake.config()
    res = fake.run("--speechlab-shard", "2/3", "--speechlab-json", "run.json")
    assert res.ret == pytest.ExitCode.INTERRUPTED
    res.stdout.fnmatch_lines([
        ("--speechlab-shard 2/3: this shard got no case (the matrix has 1 case(s) for 3 shards); use fewer shards, "
        "or pass --speechlab-allow-empty-shard to let an empty shard pass")])
    res = fake.run("--speechlab-shard", "2/3", "--speechlab-allow-empty-shard", "--speechlab-json", "run.json")
    assert res.ret == pytest.ExitCode.OK, res.stdout.str()
    assert fake.record()["collected"] == 0


@pytest.mark.parametrize("text, key, again, first", [
    ("models:\n  ok:\n    backend: fake\ndatasets: {}\nmodels:\n  other:\n    backend: fake\n", "models", 5, 1),
    ("models:\n  ok:\n    backend: fake\n  ok:\n    backend: fake\n    say: hi\ndatasets: {}\n", "ok", 4, 2),
], ids=["second-models-block", "model-twice"])
def test_duplicate_yaml_keys_name_both_lines(fake: FakeProject, text: str, key: str, again: int, first: int) -> None:
    path = _write(fake, text)
    res = fake.run()
    assert res.ret == pytest.ExitCode.INTERRUPTED
    res.stdout.fnmatch_lines([(f"{path}: duplicate key {key!r} at line {again} (first at line {first}); YAML would "
                              "silently keep only the last one: remove or merge one of them")])


@pytest.mark.parametrize("select", [["-m", "smoke"], ["-k", "nothing_matches_this"]], ids=["-m", "-k"])
def test_config_error_is_reported_whatever_the_selection(fake: FakeProject, select: list[str]) -> None:
    path = _write(fake, "models:\n  ok: {backend: fake, bogus: 1}\ndatasets: {}\n")
    res = fake.run(*select)
    assert res.ret == pytest.ExitCode.INTERRUPTED
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines([f"{path}: models.ok.bogus: unknown key for backend 'fake'; known: *"])
