"""Values, not just names, are validated: decode options per backend (types and ranges, declared in each
backend's ``option_types``), tolerances, manifest fields, CLI numbers.  One line naming the key, the value
and what is allowed; never a traceback (issue 12 items 10 and 12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from _fake import FakeProject

from pytest_speechlab.backends import REGISTRY, get_backend
from pytest_speechlab.config import ConfigError, load_config


def _cfg(tmp_path: Path, model: dict[str, Any], **top: Any) -> Path:
    (tmp_path / "m.jsonl").write_text('{"audio_filepath": "a.wav", "text": "x"}\n', encoding="utf-8")
    doc = {"models": {"m": model}, "datasets": {"d": {"manifest": "m.jsonl"}}, **top}
    path = tmp_path / "speechlab.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize("backend, key, value, allowed", [
    ("faster-whisper", "beam_size", 0, "an integer >= 1 and <= 100"),
    ("faster-whisper", "beam_size", "five", "an integer >= 1 and <= 100"),
    ("faster-whisper", "cpu_threads", -4, "an integer >= 0 and <= 1024"),
    ("faster-whisper", "temperature", "hot", "a number or a list of numbers >= 0 and <= 2"),
    ("faster-whisper", "compute_type", "int4", ("one of default, auto, int8, int8_float16, int8_float32, "
                                              "int8_bfloat16, int16, float16, float32, bfloat16")),
    ("faster-whisper", "vad_filter", "yes", "true or false"),
    ("openai-whisper", "temperature", "hot", "a number or a list of numbers >= 0 and <= 2"),
    ("openai-whisper", "beam_size", 0, "an integer >= 1 and <= 100 (or null)"),
    ("http", "timeout", 0, "a number > 0 and <= 86400"),
    ("http", "retries", -1, "an integer >= 0 and <= 100"),
    ("piper", "length_scale", 0, "a number > 0 and <= 100 (or 'voice', null)"),
    ("liquid-audio", "dtype", "int4", "one of float32, bfloat16, float16"),
    ("liquid-audio", "max_new_tokens", 0.5, "an integer >= 1 and <= 100000"),
])
def test_bad_option_value_names_key_value_and_what_is_allowed(tmp_path: Path, backend: str, key: str, value: Any,
                                                              allowed: str) -> None:
    path = _cfg(tmp_path, {"backend": backend, "devices": ["remote" if backend == "http" else "cpu"], key: value})
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path}: models.m.{key}: {value!r} is not allowed; want {allowed}"


def test_every_backend_declares_value_checks() -> None:
    # The built-in backends (tests register throw-away ones in REGISTRY too).
    for name in [n for n, target in REGISTRY.items() if target.startswith("pytest_speechlab.")]:
        assert get_backend(name).option_types, f"{name} declares no option_types"


def test_bundled_config_passes_the_value_checks() -> None:
    load_config(Path(__file__).resolve().parent.parent / "speechlab.yaml")


def test_bad_value_through_pytest(fake: FakeProject) -> None:
    """Through a pytest session: a collection error (rc 2), one line, whatever -m says."""
    path = fake.config(models={"ok": {}}, thresholds={"confidence": 5})
    res = fake.run("-m", "smoke")
    assert res.ret == pytest.ExitCode.INTERRUPTED
    res.stdout.fnmatch_lines([f"{path}: thresholds.confidence: must be between 0 and 1 exclusive (e.g. 0.95), got 5"])


@pytest.mark.parametrize("row, message", [
    ({"duration": "3 s"}, ("'duration' must be a number of seconds >= 0, got '3 s'; fix it or leave it out "
                          "(the audio's length is measured)")),
    ({"text": 12}, "'text' must be a string (the reference transcript), got 12; quote it"),
    ({"id": []}, "'id' must be a non-empty string or an integer, got []"),
], ids=["duration", "text", "id"])
def test_bad_manifest_value_is_an_error_in_pytest_and_validate(
    fake: FakeProject, row: dict[str, Any], message: str
) -> None:
    manifest = fake.dataset(rows=[{"audio_filepath": "a.wav", "text": "hello there", "id": "b", **row}])
    fake.config()
    res = fake.run("--speechlab-json", "run.json")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines([f"{fake.path / manifest}:2: {message}"])
    (case,) = fake.record()["cases"]
    assert case["status"] == "error" and case["reason"] == f"{fake.path / manifest}:2: {message}"
    rc, out = fake.speechlab("validate", "--config", str(fake.path / "speechlab.yaml"))
    assert rc == 1 and f"{fake.path / manifest}:2: {message}" in out


def test_id_zero_is_kept(fake: FakeProject) -> None:
    fake.dataset(rows=[{"audio_filepath": "a.wav", "text": "hello there", "id": 0}])
    fake.config()
    fake.run("--speechlab-update-golden")
    assert [u["id"] for u in json.loads(fake.golden().read_text())["utterances"]] == ["a", "0"]


def test_config_option_naming_a_folder(fake: FakeProject) -> None:
    fake.config()
    (fake.path / "conf").mkdir()
    res = fake.run("--speechlab-config", "conf")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(
        [
            (
                f"*--speechlab-config conf: is a folder; name the config file, e.g. "
                f"--speechlab-config {Path('conf') / 'speechlab.yaml'}"
            )
        ]
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--port", "99999"], "--port wants an integer 0-65535, got 99999"),
        (["--max-upload-mb", "-1"], "--max-upload-mb wants a number of MB > 0, got -1"),
        (["--max-upload-mb", "nan"], "--max-upload-mb wants a number of MB > 0, got nan"),
    ],
)
def test_serve_refuses_bad_numbers(fake: FakeProject, args: list[str], message: str) -> None:
    rc, out = fake.speechlab("serve", "--model", "m", *args)
    assert rc == 2 and f"argument {args[0]}: {message}" in out


# ---- item 8: symlinks out of a folder dataset, FIFOs ---------------------------------------------------


def _folder_dataset(fake: FakeProject) -> Path:
    import shutil

    fake.dataset()
    folder = fake.path / "wavs"
    folder.mkdir()
    shutil.copy(fake.path / "data/clips/a.wav", folder / "a.wav")
    (folder / "a.txt").write_text("hello there", encoding="utf-8")
    fake.config(datasets={"wavs": {"manifest": "wavs", "normalizer": "basic"}})
    return folder


def test_folder_dataset_symlink_outside_is_refused(fake: FakeProject, tmp_path_factory: pytest.TempPathFactory) -> None:
    import shutil

    folder = _folder_dataset(fake)
    outside = tmp_path_factory.mktemp("outside") / "secret.wav"
    shutil.copy(folder / "a.wav", outside)
    (folder / "b.wav").symlink_to(outside)
    (folder / "b.txt").write_text("hello there", encoding="utf-8")
    res = fake.run("--speechlab-json", "run.json")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(
        [
            (
                f"{folder / 'b.wav'}: points outside the dataset folder {folder} (through a symlink to "
                f"{outside}); refused. Copy the file into the folder, or set 'allow_outside_paths: true' "
                "on the dataset"
            )
        ]
    )
    assert fake.record()["cases"][0]["status"] == "error"


@pytest.mark.parametrize("form", ["folder", "manifest"])
def test_fifo_audio_is_refused_not_a_hang(fake: FakeProject, form: str) -> None:
    import os

    if form == "folder":
        folder = _folder_dataset(fake)
        os.mkfifo(folder / "b.wav")
        (folder / "b.txt").write_text("hello there", encoding="utf-8")
        line = (
            f"{folder / 'b.wav'}: not a regular file (a folder, FIFO or device); refused. "
            "Put the audio file itself there"
        )
    else:
        manifest = fake.dataset(rows=[{"audio_filepath": "fifo.wav", "text": "hello there", "id": "b"}])
        os.mkfifo(fake.path / "data/clips/fifo.wav")
        fake.config()
        line = (
            f"{fake.path / manifest}:2: audio_filepath 'fifo.wav' is not a regular file (a folder, FIFO or device); "
            "refused. Point it at the audio file itself"
        )
    res = fake.run()
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines([line])
