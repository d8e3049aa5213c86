"""Decode settings = the library's own defaults, overridden only by what speechlab.yaml says.

A regression gate must test what users deploy, and users call ``WhisperModel.transcribe(audio)`` or
``model.transcribe(audio)`` with the libraries' defaults.  So a Whisper backend does not keep a copy of
those defaults: at load time it reads them from the signature of the call its users make (one place per
backend), lays the model entry's options over them, and records the *full* resolved set (thresholds, seed
and the library's version included) in the golden and the run record.  When a library release changes a
default, the recorded settings change and the gate says "decode settings differ", instead of a WER move
with no visible cause.

The option *names* are static (so speechlab.yaml can be checked without importing the library); the
*values* come from the installed library.  ``tests/test_decode_defaults.py`` checks that the README table
and the names below match the installed libraries.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from .base import BackendError, Opt, option_problem

#: Bumped when the plugin's way of choosing decode settings changes; recorded as ``decode.policy``.
#: 1 (pytest-speechlab 0.1): the plugin's own defaults (timestamps off, no conditioning, temperature 0).
#: 2 (0.2): the libraries' own defaults, seeded.
POLICY = 2
POLICY_NOTE = (
    "pytest-speechlab 0.2 changed the Whisper backends' decode defaults to the libraries' own (timestamps on, "
    "condition_on_previous_text on, temperature fallback 0.0..1.0, seeded); goldens recorded with 0.1 used "
    "without_timestamps: true, condition_on_previous_text: false, temperature: 0.0"
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def signature_defaults(func: Callable[..., Any], skip: Iterable[str]) -> dict[str, Any]:
    """The keyword defaults of ``func`` (tuples as lists, so they compare equal to their JSON form)."""
    skipped = set(skip) | {"self"}
    out: dict[str, Any] = {}
    for name, param in inspect.signature(func).parameters.items():
        if name in skipped or param.default is inspect.Parameter.empty:
            continue
        out[name] = _jsonable(param.default)
    return out


def resolve(model: str, options: dict[str, Any], defaults: dict[str, Any], names: Iterable[str],
            types: dict[str, Opt]) -> dict[str, Any]:
    """The library's defaults for ``names``, with the model entry's ``options`` laid over them.

    Values are checked with the backend's ``option_types`` (the validator speechlab.yaml is checked with), so a
    ModelSpec built in code gets the same one-line error as the config file.
    """
    problem = option_problem(types, options)
    if problem:
        key, text = problem
        raise BackendError(f"model {model!r}: option {key}: {text}; fix it in speechlab.yaml")
    out = {key: _jsonable(options[key]) if key in options else defaults.get(key) for key in names}
    temperature = out.get("temperature")
    if isinstance(temperature, list):  # a fallback schedule, recorded as floats like the library's
        out["temperature"] = [float(t) for t in temperature]
    elif isinstance(temperature, int):
        out["temperature"] = float(temperature)
    return out
