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

for _name in ("soundfile", "soxr", "ctranslate2", "faster_whisper", "onnxruntime", "piper"):
    if importlib.util.find_spec(_name) is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module(_name)
