"""Shared helpers for the plugin's own tests: a throw-away speechlab project inside ``pytester.path``.

The tests run real pytest sessions (``pytester``) with the real bundled faster-whisper tiny.en model on a
few of the bundled smoke clips, the way pytest-regressions, syrupy and pytest-xdist test themselves.
Runs are kept small (``--speechlab-rounds 1``, one to three clips) so the suite stays fast.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "fixtures" / "smoke"

# RTF is wall-clock speed; on a shared CI box it swings by several x between two runs, so the behaviour
# tests allow a huge RTF tolerance and the RTF gate gets its own tests with a controlled golden.
TEST_THRESHOLDS = {"wer_abs": 0.02, "cer_abs": 0.02, "rtf_rel": 100.0, "speed_rel": 100.0, "speed_rel_min": 100.0,
                   "rss_rel": 100.0}

DEFAULT_MODEL: dict[str, Any] = {
    "backend": "faster-whisper",
    "weights": "bundled:tiny.en",
    "compute_type": "int8",
    "beam_size": 5,
    "language": "en",
    "devices": ["cpu"],
    "stage": "production",
}


# Markers (slow, real_model, model_output) are registered in pyproject.toml, so `-m` works on any selection.


@pytest.fixture(autouse=True)
def _inner_sessions_without_hypothesis(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pytest session a test starts gets ``INNER_ADDOPTS`` (``-p no:hypothesispytest``: 1.1 s saved per
    session).  pytester clears ``PYTEST_ADDOPTS`` when it starts, so it is set after pytester; a test that sets
    its own ``PYTEST_ADDOPTS`` replaces it."""
    from _support import INNER_ADDOPTS

    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")
    monkeypatch.setenv("PYTEST_ADDOPTS", INNER_ADDOPTS)


def smoke_rows() -> dict[str, dict[str, Any]]:
    """The bundled smoke manifest, by id."""
    rows = [json.loads(x) for x in (SMOKE / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    return {r["id"]: r for r in rows}


class SpeechProject:
    """A user's project in ``pytester.path``: speechlab.yaml, datasets (copied smoke clips), goldens."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.path = pytester.path

    # ---- data -------------------------------------------------------------------------------------
    def dataset(
        self, name: str = "smoke", clips: tuple[str, ...] = ("smoke-02",), rows: list[dict[str, Any]] | None = None
    ) -> Path:
        """Copy ``clips`` from fixtures/smoke into ``data/<name>/`` and write its manifest; returns it."""
        folder = self.path / "data" / name
        folder.mkdir(parents=True, exist_ok=True)
        smoke = smoke_rows()
        out = []
        for cid in clips:
            row = dict(smoke[cid])
            shutil.copy(SMOKE / row["audio_filepath"], folder / row["audio_filepath"])
            out.append(row)
        out += rows or []
        manifest = folder / "manifest.jsonl"
        manifest.write_text("".join(json.dumps(r) + "\n" for r in out), encoding="utf-8")
        return manifest

    def config(
        self,
        models: dict[str, dict[str, Any]] | None = None,
        datasets: dict[str, dict[str, Any]] | None = None,
        thresholds: dict[str, float] | None = None,
        filename: str = "speechlab",
        **top: Any,
    ) -> Path:
        """Write ``<filename>.yaml`` (default speechlab.yaml); datasets default to data/smoke, clip smoke-02."""
        if datasets is None:
            self.dataset()
            datasets = {
                "smoke": {"manifest": "data/smoke/manifest.jsonl", "normalizer": "whisper-en", "markers": ["smoke"]}
            }
        doc: dict[str, Any] = {
            "models": models if models is not None else {"fw-tiny-en": dict(DEFAULT_MODEL)},
            "datasets": datasets,
            "thresholds": thresholds if thresholds is not None else dict(TEST_THRESHOLDS),
            "golden_dir": "golden",
            **top,
        }
        return self.pytester.makefile(".yaml", **{filename: yaml.safe_dump(doc, sort_keys=False)})

    # ---- goldens ---------------------------------------------------------------------------------
    def golden(self, model: str = "fw-tiny-en", dataset: str = "smoke", device: str = "cpu") -> Path:
        return self.path / "golden" / model / dataset / f"{device}.json"

    def read_golden(self, **kw: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.golden(**kw).read_text(encoding="utf-8"))
        return data

    def edit_golden(self, change: Any, **kw: str) -> None:
        """Apply ``change(dict)`` to a golden file and write it back."""
        data = self.read_golden(**kw)
        change(data)
        self.golden(**kw).write_text(json.dumps(data, indent=2), encoding="utf-8")

    # ---- running ---------------------------------------------------------------------------------
    def run(self, *args: str) -> pytest.RunResult:
        """One pytest session in the project (one timed round; no cache)."""
        return self.pytester.runpytest("-p", "no:cacheprovider", "--speechlab-rounds", "1", *args)

    def record(self, path: Path) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data


@pytest.fixture(scope="session")
def _native_modules_loaded() -> None:
    """Import the native-extension libraries once in this process before any in-process pytester run.

    pytester restores ``sys.modules`` after each in-process run, dropping modules first imported inside
    it; re-importing a native extension such as soxr in the same process then aborts the interpreter.
    Modules already present before the run are kept, so importing them here makes repeated runs safe.
    """
    import warnings

    import ctranslate2  # noqa: F401
    import faster_whisper  # noqa: F401
    import jiwer  # noqa: F401
    import soundfile  # noqa: F401
    import soxr  # noqa: F401

    # torch too: the cuda/mps skip reasons probe it, and a second torch import in one process is fatal.
    from pytest_speechlab.devices import unavailable_reason

    unavailable_reason("cuda")
    # The plugin's own lazily imported modules too: a submodule dropped from sys.modules stays an attribute
    # of its (kept) parent package, so ``from pytest_speechlab.backends import faster_whisper`` in a later
    # run would get a stale copy while the plugin imports a fresh one.
    for name in (
        "backends.faster_whisper",
        "backends.decode_defaults",
        "backends.weights",
        "datasets",
        "evaluation",
        "golden",
        "metrics",
        "report",
        "session",
        "devices",
    ):
        importlib.import_module(f"pytest_speechlab.{name}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        import whisper_normalizer.english  # noqa: F401


_WHISPER_MODELS: dict[tuple[Any, ...], Any] = {}


def _shared_whisper_model_factory(real: Any) -> Any:
    def shared(
        model_size_or_path: str,
        device: str = "auto",
        compute_type: str = "default",
        cpu_threads: int = 0,
        **kwargs: Any,
    ) -> Any:
        key = (str(model_size_or_path), device, compute_type, cpu_threads, tuple(sorted(kwargs.items())))
        if key not in _WHISPER_MODELS:
            _WHISPER_MODELS[key] = real(
                model_size_or_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads, **kwargs
            )
        return _WHISPER_MODELS[key]

    return shared


@pytest.fixture
def project(pytester: pytest.Pytester, _native_modules_loaded: None, monkeypatch: pytest.MonkeyPatch) -> SpeechProject:
    """A fresh speechlab project in the pytester temp dir (nothing written yet).

    In-process sessions share the CTranslate2 model object (same weights and settings) instead of reading
    it from disk again each run: the plugin still loads (and counts) its model per session, the suite
    saves a second or so per run.  Subprocess and xdist-worker sessions load their own.
    """
    import faster_whisper

    monkeypatch.setattr(faster_whisper, "WhisperModel", _shared_whisper_model_factory(faster_whisper.WhisperModel))
    return SpeechProject(pytester)


@pytest.fixture(
    params=[
        pytest.param([], id="no-xdist"),
        pytest.param(["-n", "0"], id="n0"),
        pytest.param(["-n", "2"], id="n2", marks=pytest.mark.slow),
    ]
)
def plugin_args(request: pytest.FixtureRequest) -> list[str]:
    """Behaviour tests run three ways: without xdist, with ``-n 0`` and with ``-n 2`` workers."""
    args: list[str] = request.param
    return args


@pytest.fixture
def fake(pytester: pytest.Pytester) -> Any:
    """A project whose models run on the fake backend of tests/_fake.py (no real model loads: fast)."""
    from _fake import FakeProject

    return FakeProject(pytester)
