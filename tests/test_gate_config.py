"""Config slips are errors, whatever the selection: an empty matrix, an empty shard, duplicate YAML keys,
a malformed speechlab.yaml under -m/-k (issue 12 items 3 and 6).  Fake backend, pytester sessions."""

from __future__ import annotations

from pathlib import Path

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
    res.stdout.fnmatch_lines(
        [f"{path}: datasets: no dataset configured, so the matrix is empty; add one under datasets:"]
    )


def test_no_task_matches_is_an_error(fake: FakeProject) -> None:
    fake.dataset("texts")
    (fake.path / "data" / "texts" / "manifest.jsonl").write_text('{"text": "hi"}\n', encoding="utf-8")
    path = fake.config(datasets={"texts": {"manifest": "data/texts/manifest.jsonl", "task": "tts"}})
    res = fake.run()
    assert res.ret == pytest.ExitCode.INTERRUPTED
    res.stdout.fnmatch_lines(
        [
            (
                f"{path}: the matrix is empty: no selected model's task matches a selected dataset's task (models: "
                f"ok (asr); "
                "datasets: texts (tts)); give a dataset the task of a model (task: asr|tts), or select others with "
                "--speechlab-model/--speechlab-dataset"
            )
        ]
    )


def test_empty_shard_is_an_error_unless_allowed(fake: FakeProject) -> None:
    fake.config()
    res = fake.run("--speechlab-shard", "2/3", "--speechlab-json", "run.json")
    assert res.ret == pytest.ExitCode.INTERRUPTED
    res.stdout.fnmatch_lines(
        [
            (
                "--speechlab-shard 2/3: this shard got no case (the matrix has 1 case(s) for 3 shards); use fewer "
                "shards, "
                "or pass --speechlab-allow-empty-shard to let an empty shard pass"
            )
        ]
    )
    res = fake.run("--speechlab-shard", "2/3", "--speechlab-allow-empty-shard", "--speechlab-json", "run.json")
    assert res.ret == pytest.ExitCode.OK, res.stdout.str()
    assert fake.record()["collected"] == 0


@pytest.mark.parametrize(
    "text, key, again, first",
    [
        ("models:\n  ok:\n    backend: fake\ndatasets: {}\nmodels:\n  other:\n    backend: fake\n", "models", 5, 1),
        ("models:\n  ok:\n    backend: fake\n  ok:\n    backend: fake\n    say: hi\ndatasets: {}\n", "ok", 4, 2),
    ],
    ids=["second-models-block", "model-twice"],
)
def test_duplicate_yaml_keys_name_both_lines(fake: FakeProject, text: str, key: str, again: int, first: int) -> None:
    path = _write(fake, text)
    res = fake.run()
    assert res.ret == pytest.ExitCode.INTERRUPTED
    res.stdout.fnmatch_lines(
        [
            (
                f"{path}: duplicate key {key!r} at line {again} (first at line {first}); YAML would "
                "silently keep only the last one: remove or merge one of them"
            )
        ]
    )


@pytest.mark.parametrize("select", [["-m", "smoke"], ["-k", "nothing_matches_this"]], ids=["-m", "-k"])
def test_config_error_is_reported_whatever_the_selection(fake: FakeProject, select: list[str]) -> None:
    path = _write(fake, "models:\n  ok: {backend: fake, bogus: 1}\ndatasets: {}\n")
    res = fake.run(*select)
    assert res.ret == pytest.ExitCode.INTERRUPTED
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines([f"{path}: models.ok.bogus: unknown key for backend 'fake'; known: *"])


# ---- item 7: names become paths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "section, name",
    [
        ("models", ".."),
        ("models", "a/b"),
        ("models", ".hidden"),
        ("datasets", ".."),
        ("datasets", "x y"),
        ("models", ""),
    ],
)
def test_names_that_are_not_safe_paths_are_refused(fake: FakeProject, section: str, name: str) -> None:
    if section == "models":
        path = fake.config(models={name: {}})
    else:
        path = fake.config(datasets={name: {"manifest": fake.dataset()}})
    res = fake.run()
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines(
        [
            (
                f"{path}: {section}.{name}: name {name!r} is not allowed: use letters, digits and "
                "- _ . + @ only, not starting with a dot (names become test ids and folders under golden_dir)"
            )
        ]
    )
    assert not (fake.path.parent / "clips").exists() and not (fake.path / "golden").exists()


def test_legal_names_with_plus_and_at(fake: FakeProject) -> None:
    fake.config(models={"fw-tiny-en-cpu-smoke+snr10": {}, "m@v2": {}})
    res = fake.run("--speechlab-update-golden")
    res.assert_outcomes(passed=2)
    assert (fake.path / "golden" / "m@v2" / "clips" / "cpu.json").exists()


def test_golden_write_outside_golden_dir_is_refused(tmp_path: Path) -> None:
    from pytest_speechlab.golden import GoldenError, write_golden

    with pytest.raises(GoldenError, match=r"refused to write a golden outside golden_dir"):
        write_golden(tmp_path / "golden", tmp_path / "golden" / ".." / "x.json", {"schema": 1})
    assert not (tmp_path / "x.json").exists()


# ---- item 9: end-of-session writes that fail ------------------------------------------------------------


def test_golden_folder_that_cannot_be_written(fake: FakeProject) -> None:
    fake.config()
    (fake.path / "golden").write_text("a file where the golden folder should be", encoding="utf-8")
    res = fake.run("--speechlab-update-golden", "--speechlab-json", "run.json")
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    res.stdout.fnmatch_lines(
        [
            (
                f"speechlab: error: golden not written: {fake.golden()}: *; make "
                f"{fake.path / 'golden'} writable (with free space), then accept again"
            )
        ]
    )
    assert "Traceback" not in res.stdout.str() and "INTERNALERROR" not in res.stdout.str()
    # The run record was written first, and holds the case (refused by check: it accepted, compared nothing).
    assert fake.record()["cases"][0]["verdict"] == "accepted"


def test_run_record_that_cannot_be_written(fake: FakeProject) -> None:
    fake.config()
    fake.run("--speechlab-update-golden")
    (fake.path / "afile").write_text("x", encoding="utf-8")
    res = fake.run("--speechlab-json", "afile/run.json")
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    res.stdout.fnmatch_lines(
        [
            (
                f"speechlab: error: run record not written: {fake.path / 'afile' / 'run.json'}: *; "
                "fix --speechlab-json (the path of a writable file)"
            )
        ]
    )
    assert "Traceback" not in res.stdout.str()


def test_run_record_path_that_is_a_folder(fake: FakeProject) -> None:
    fake.config()
    (fake.path / "out").mkdir()
    res = fake.run("--speechlab-json", "out")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(
        [f"*--speechlab-json out: is a folder; give the path of a file to write, e.g. {Path('out') / 'run.json'}"]
    )


# ---- item 5: ad hoc datasets are named from their path ---------------------------------------------------


def test_adhoc_dataset_with_a_configured_name_is_an_error(fake: FakeProject) -> None:
    path = fake.config()
    fake.dataset("other/clips")
    res = fake.run("--speechlab-dataset", "data/other/clips/manifest.jsonl")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(
        [
            (
                f"*--speechlab-dataset data/other/clips/manifest.jsonl: its name 'clips' (from the path) is the name "
                f"of a "
                f"configured dataset in {path}, whose manifest is {fake.path / 'data/clips/manifest.jsonl'}; pass "
                f"the name "
                "clips to run that one, or rename the folder or file of yours"
            )
        ]
    )


def test_adhoc_datasets_in_same_named_folders_stay_apart(fake: FakeProject) -> None:
    fake.config()
    fake.dataset("a/set")
    fake.dataset("b/set")
    res = fake.run(
        "--collect-only", "-q", "--speechlab-dataset", "data/a/set/manifest.jsonl", "--speechlab-dataset", "data/b/set"
    )
    res.stdout.fnmatch_lines(
        ["speechlab.yaml::test_speech[[]ok-cpu-a.set[]]", "speechlab.yaml::test_speech[[]ok-cpu-b.set[]]"]
    )


def test_adhoc_path_of_a_configured_manifest_is_that_dataset(fake: FakeProject) -> None:
    fake.config()
    res = fake.run("--collect-only", "-q", "--speechlab-dataset", "data/clips/manifest.jsonl")
    res.stdout.fnmatch_lines(["speechlab.yaml::test_speech[[]ok-cpu-clips[]]", "1 test collected*"])
