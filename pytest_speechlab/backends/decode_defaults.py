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
import math
from collections.abc import Callable, Iterable
from typing import Any

from .base import BackendError

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


def _bad(model: str, key: str, value: Any, allowed: str) -> BackendError:
    return BackendError(f"model {model!r}: option {key}: {value!r} is not allowed ({allowed}); fix it in speechlab.yaml")


def _number(model: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(model, key, value, "a finite number")
    return float(value)


def temperature(model: str, value: Any) -> float | list[float]:
    """A temperature (a number >= 0) or a fallback schedule (a non-empty list of them)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise _bad(model, "temperature", value, "a number >= 0 or a non-empty list of them, e.g. [0.0, 0.2, 0.4]")
        temps = [temperature(model, v) for v in value]
        return [float(t) for t in temps]  # type: ignore[arg-type]
    t = _number(model, "temperature", value)
    if t < 0:
        raise _bad(model, "temperature", value, "a number >= 0 or a non-empty list of them")
    return t


def check_like_default(model: str, key: str, value: Any, default: Any) -> Any:
    """``value`` checked against the type of the library's default for ``key`` (None: no check)."""
    if key == "temperature":
        return temperature(model, value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise _bad(model, key, value, "true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(model, key, value, "an integer")
        return value
    if isinstance(default, float):
        if value is None:
            return None  # thresholds: None switches the check off in both libraries
        return _number(model, key, value)
    if isinstance(default, list) and value is not None and not isinstance(value, list):
        raise _bad(model, key, value, "a list")
    return _jsonable(value)


def positive_int(model: str, key: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(model, key, value, f"an integer >= {minimum}")
    return value


def resolve(model: str, options: dict[str, Any], defaults: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The library's defaults for ``names``, with the model entry's ``options`` laid over them (checked)."""
    out: dict[str, Any] = {}
    for key in names:
        default = defaults.get(key)
        out[key] = check_like_default(model, key, options[key], default) if key in options else default
    return out


def temperatures(value: Any) -> list[float]:
    """A temperature setting as the list of temperatures it may try."""
    return [float(t) for t in value] if isinstance(value, list) else [float(value)]
