"""A fake ASR backend for the gate's behaviour tests: fast, deterministic, and able to crash on demand.

``FakeProject`` writes a throw-away project into ``pytester.path``: ``speechlab_fake.py`` (the backend),
a ``conftest.py`` that registers it as ``fake``, a one-clip dataset (a synthetic tone) and speechlab.yaml.
Model options: ``say`` (the transcript it returns), ``crash`` (``load``: ValueError while loading,
``transcribe``: ValueError while transcribing, ``exit``: ``os._exit`` in the worker, as a native crash
would), ``beam_size`` (passed through a bare ``int()`` at load, as a careless backend would).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

BACKEND_SRC = '''
import os

from pytest_speechlab.backends.base import BaseBackend


class FakeASR:
    sample_rate = 16000

    def __init__(self, opts):
        self.opts = opts
        self.decode_settings = {"say": opts.get("say", "hello there")}

    def transcribe(self, audio):
        crash = self.opts.get("crash")
        if crash == "transcribe":
            raise ValueError("fake backend exploded while transcribing")
        if crash == "exit":
            os._exit(3)
        return self.opts.get("say", "hello there")


class FakeBackend(BaseBackend):
    name = "fake"
    extra = ""
    tasks = ("asr",)
    devices = ("cpu",)
    # No paired speed reference: these tests judge other things, and reference runs inside the timed pass
    # would blur the pytest-benchmark comparisons some of them make (tests/test_speed.py covers speed).
    speed_reference = None
    options = ("say", "crash", "beam_size")

    def load(self, spec, device):
        if spec.options.get("crash") == "load":
            raise ValueError("fake backend exploded while loading")
        int(spec.options.get("beam_size", 1))
        return FakeASR(spec.options)
'''

CONFTEST_SRC = '''
from pytest_speechlab.backends import register

register("fake", "speechlab_fake:FakeBackend")
'''


def install_fake_backend(root: Path, conftest_extra: str = "") -> None:
    """Write the fake backend (``speechlab_fake.py``) and a ``conftest.py`` registering it as ``fake`` into
    ``root``: for a project that a test runs in a pytest subprocess (``conftest_extra`` is appended)."""
    (root / "speechlab_fake.py").write_text(BACKEND_SRC, encoding="utf-8")
    (root / "conftest.py").write_text(CONFTEST_SRC + conftest_extra, encoding="utf-8")


class FakeProject:
    """A speechlab project in ``pytester.path`` whose models run on the fake backend."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.path = pytester.path
        install_fake_backend(self.path)
        pytester.syspathinsert()

    def dataset(self, name: str = "clips", rows: list[dict[str, Any]] | None = None) -> str:
        """``data/<name>/manifest.jsonl`` with one tone clip saying 'hello there' (plus ``rows``)."""
        import soundfile as sf

        folder = self.path / "data" / name
        folder.mkdir(parents=True, exist_ok=True)
        t = np.arange(8000, dtype=np.float32) / 16000
        sf.write(str(folder / "a.wav"), 0.1 * np.sin(2 * np.pi * 440 * t), 16000, subtype="PCM_16")
        lines = [{"audio_filepath": "a.wav", "text": "hello there", "id": "a"}, *(rows or [])]
        (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
        return f"data/{name}/manifest.jsonl"

    def config(self, models: dict[str, dict[str, Any]] | None = None, datasets: dict[str, Any] | None = None,
               **top: Any) -> Path:
        if datasets is None:  # data/clips, written unless a test wrote its own already
            manifest = "data/clips/manifest.jsonl"
            if not (self.path / manifest).exists():
                self.dataset()
            datasets = {"clips": {"manifest": manifest, "normalizer": "basic"}}
        if models is None:
            models = {"ok": {"backend": "fake"}}
        models = {k: {"backend": "fake", **v} for k, v in models.items()}
        # speed and memory are not what these tests judge (tests/test_speed.py does): huge tolerances
        doc = {"models": models, "datasets": datasets, "golden_dir": "golden", **top,
               "thresholds": {"rtf_rel": 1000.0, "speed_rel": 1000.0, "speed_rel_min": 1000.0, "rss_rel": 1000.0,
                              **(top.get("thresholds") or {})}}
        path = self.path / "speechlab.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return path

    def run(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest("-p", "no:cacheprovider", "--speechlab-rounds", "1", *args)

    def run_subprocess(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess("-p", "no:cacheprovider", "--speechlab-rounds", "1", *args)

    def golden(self, model: str = "ok", dataset: str = "clips", device: str = "cpu") -> Path:
        return self.path / "golden" / model / dataset / f"{device}.json"

    def edit_golden(self, change: Any, model: str = "ok", dataset: str = "clips", device: str = "cpu") -> None:
        """Apply ``change(dict)`` to a golden file and write it back (as conftest's SpeechProject.edit_golden)."""
        path = self.golden(model, dataset, device)
        data = json.loads(path.read_text(encoding="utf-8"))
        change(data)
        path.write_text(json.dumps(data), encoding="utf-8")

    def record(self, name: str = "run.json") -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.path / name).read_text(encoding="utf-8"))
        return data

    def speechlab(self, *args: str) -> tuple[int, str]:
        """Run the ``speechlab`` command in-process; returns (exit status, stdout + stderr)."""
        import contextlib
        import io

        from pytest_speechlab.commands.cli import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                rc = main(list(args))
            except SystemExit as exc:
                rc = int(exc.code or 0)
        return rc, out.getvalue()

