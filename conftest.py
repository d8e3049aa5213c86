"""Root conftest of the project's own test suite.

The plugin itself is loaded through its pytest11 entry point (pyproject.toml) and imports nothing heavy.
The project's tests, however, run many in-process ``pytester`` sessions, and pytester restores
``sys.modules`` after each one: a native extension (soxr, onnxruntime, ctranslate2) imported inside such a
session would then be imported a second time in the same process, which aborts Python.  Importing them
once here, before any pytester session, keeps them in the snapshot pytester restores.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings

import pytest

for _name in ("soundfile", "soxr", "ctranslate2", "faster_whisper", "onnxruntime", "piper"):
    if importlib.util.find_spec(_name) is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module(_name)


def _keep_installed_modules() -> None:
    """Make in-process pytester sessions keep modules imported from site-packages.

    pytester restores ``sys.modules`` after each in-process run, dropping what the run imported. Pure-Python
    modules survive a second import, but C extensions (numpy.fft, soxr, torch...) refuse it ("cannot load
    module more than once per process") or abort.  Installed packages are not what a pytester session
    isolates (its own test modules and conftests are), so they are kept.
    """
    import sys

    import _pytest.pytester as pytester_mod

    def keep(name: str) -> bool:
        mod = sys.modules.get(name)
        return name.startswith(("zope", "readline")) or "site-packages" in (getattr(mod, "__file__", None) or "")

    def snapshot(self: object) -> object:
        return pytester_mod.SysModulesSnapshot(preserve=keep)

    pytester_mod.Pytester._Pytester__take_sys_modules_snapshot = snapshot  # type: ignore[attr-defined]


_keep_installed_modules()


#: Fixtures that load a real model (``project``: a throw-away project running the bundled tiny.en); a test that
#: requests one is marked ``real_model``.
REAL_MODEL_FIXTURES = frozenset(
    {"project", "tiny_en", "tiny_pt", "tiny_dir", "clips", "voice", "judge", "smoke_result"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Here, not in tests/conftest.py, so that it also marks a run of speechlab.yaml alone.

    ``real_model`` on the bundled matrix's cases, on ``model_output`` tests and on tests using a real-model
    fixture, so ``-m "not slow and not real_model"`` is the quick tier of pure-logic and fake-backend tests."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if (
            fixtures & REAL_MODEL_FIXTURES
            or item.get_closest_marker("model_output") is not None
            or item.nodeid.split("::", 1)[0].endswith((".yaml", ".yml"))
        ):
            item.add_marker(pytest.mark.real_model)
