"""The small protocol every model backend satisfies.

A backend is a class registered by name in :mod:`pytest_speechlab.backends` (lazily: the registry holds
``"module:Class"`` strings so that importing the plugin imports no heavy library).  It says which tasks
and devices it supports and which pip extra it needs, and it loads a :class:`ModelSpec` on a device into
a loaded model that satisfies :class:`ASRModel`, :class:`TTSModel` or both.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .errors import BackendError as BackendError
from .errors import MissingExtraError as MissingExtraError

Audio = npt.NDArray[np.float32]

TASKS = ("asr", "tts", "chat")
DEVICES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class ModelSpec:
    """One entry of ``models:`` in speechlab.yaml, validated.

    ``options`` holds every other key of the entry (decode settings such as ``beam_size``,
    ``compute_type``, ``language``...); backends read what they understand from it and report the
    settings they really used through ``decode_settings`` on the loaded model.
    """

    name: str
    backend: str
    weights: str | None = None
    devices: tuple[str, ...] = ("cpu",)
    stage: str = "candidate"
    task: str = "asr"
    options: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    config_path: Path | None = None  # the speechlab.yaml it came from; relative weights resolve against it
    real_e2e: bool = False  # needs weights that are not bundled: skip, not fail, when they are absent
    golden_from: str | None = None  # "MODEL/DEVICE": gate against that case's golden (e.g. a deployed copy)
    speed_reference: str | None = None  # speed-reference workload (speed.WORKLOADS or "none"); None: the backend's

    def resolve_path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder; ``hf:ORG/NAME@REV`` is the local
        snapshot of that Hub revision (hub.py: the cache first, a download only when allowed)."""
        if value.startswith("hf:"):
            from ..hub import resolve

            return resolve(value, f"model {self.name!r} ('weights:' in {self.config_path or 'speechlab.yaml'})")[0]
        p = Path(value).expanduser()
        if not p.is_absolute() and self.config_path is not None:
            p = self.config_path.parent / p
        return p


@dataclass(frozen=True)
class Opt:
    """What one model option of a backend accepts: a declarative entry of ``option_types``.

    ``kind``: ``int``, ``number``, ``bool``, ``str``, ``numbers`` (a number or a list of numbers, e.g. a
    temperature fallback), ``ints`` (a list of integers), ``mapping`` (a YAML mapping, checked by the library).
    ``lo``/``hi``: inclusive bounds (``lo_open``: lo excluded).  ``choices``: the
    allowed strings; ``also``: extra literal values accepted as-is (e.g. ``"voice"``); ``null``: None allowed.
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[str, ...] = ()
    also: tuple[Any, ...] = ()
    null: bool = False

    def allowed(self) -> str:
        """What is allowed, in words (for the error message)."""
        if self.choices:
            what = "one of " + ", ".join(self.choices)
        else:
            what = {
                "int": "an integer",
                "number": "a number",
                "bool": "true or false",
                "str": "a string",
                "numbers": "a number or a list of numbers",
                "ints": "a list of integers",
                "mapping": "a mapping (key: value)",
            }[self.kind]
            if self.lo is not None and self.hi is not None:
                what += f" {'>' if self.lo_open else '>='} {_num(self.lo)} and <= {_num(self.hi)}"
            elif self.lo is not None:
                what += f" {'>' if self.lo_open else '>='} {_num(self.lo)}"
            elif self.hi is not None:
                what += f" <= {_num(self.hi)}"
        extra = [repr(a) for a in self.also] + (["null"] if self.null else [])
        return what + (f" (or {', '.join(extra)})" if extra else "")

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` (as YAML gave it) is allowed."""
        import math

        if value is None:
            return self.null
        if any(value == a and type(value) is type(a) for a in self.also):
            return True
        if self.choices:
            return isinstance(value, str) and value in self.choices
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str)
        if self.kind == "mapping":
            return isinstance(value, dict)
        if self.kind == "ints":
            return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        values = value if self.kind == "numbers" and isinstance(value, list) and value else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return False
            if self.kind == "int" and not isinstance(v, int):
                return False
            if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
                return False
            if self.hi is not None and v > self.hi:
                return False
        return True


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def option_problem(types: dict[str, Opt], options: dict[str, Any]) -> tuple[str, str] | None:
    """The first option whose value ``types`` does not allow, as (key, "value: allowed"), or None."""
    for key, opt in types.items():
        if key in options and not opt.accepts(options[key]):
            return key, f"{options[key]!r} is not allowed; want {opt.allowed()}"
    return None


@runtime_checkable
class ASRModel(Protocol):
    """A loaded speech-recognition model: 16 kHz (or ``sample_rate``) float32 mono in, text out."""

    sample_rate: int
    decode_settings: dict[str, Any]

    def transcribe(self, audio: Audio) -> str: ...


@runtime_checkable
class TTSModel(Protocol):
    """A loaded speech-synthesis model: text in, float32 mono waveform and its sample rate out."""

    sample_rate: int
    decode_settings: dict[str, Any]

    def synthesize(self, text: str) -> tuple[Audio, int]: ...


class Backend(Protocol):
    """What a backend class provides (class attributes plus ``load``)."""

    name: ClassVar[str]
    extra: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    devices: ClassVar[tuple[str, ...]]
    requires: ClassVar[tuple[str, ...]]  # importable module names the backend needs

    def unsupported_reason(self, device: str) -> str | None: ...

    def load(self, spec: ModelSpec, device: str) -> Any: ...


class BaseBackend:
    """Shared behaviour: device support and extra checks.  Subclasses set the class attributes."""

    name: ClassVar[str] = "base"
    extra: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ("asr",)
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    requires: ClassVar[tuple[str, ...]] = ()
    # The speed-reference workload (pytest_speechlab.speed.WORKLOADS) that stresses this backend's runtime.
    speed_reference: ClassVar[str | None] = "numpy"
    # The runtime whose tiny-op probe decides whether a device is usable (devices.PROBES): torch,
    # ctranslate2, onnxruntime, or None (the machine-level check only).
    runtime: ClassVar[str | None] = None
    # The libraries load() imports besides ``runtime``.  The session imports both before it measures what
    # loading the model adds to the process, so a model's memory (RSS_MB) does not depend on whether another
    # model imported torch (or ctranslate2, onnxruntime) first.  A missing one is left to load() to report.
    import_modules: ClassVar[tuple[str, ...]] = ()
    # Model-entry keys (decode/load settings) this backend reads; speechlab.yaml rejects any other key so a
    # typo is an error, not a silently ignored setting.  None: not declared, so not checked.
    options: ClassVar[tuple[str, ...] | None] = None
    # Model-entry values this backend checks (types and ranges), by key; speechlab.yaml rejects a value that
    # breaks them with one line naming the key, the value and what is allowed.  Keys left out are not checked.
    option_types: ClassVar[dict[str, Opt]] = {}

    def unsupported_reason(self, device: str) -> str | None:
        """Why this backend cannot run on ``device`` at all (whatever the machine), or None."""
        if device not in self.devices:
            where = device.upper() if device != "cpu" else "CPU"
            return f"{self.name} has no {where} support (it runs on {', '.join(self.devices)})"
        return None

    def check_installed(self) -> None:
        """Raise :class:`MissingExtraError` when a required package is missing (no import done)."""
        for mod in self.requires:
            if importlib.util.find_spec(mod) is None:
                raise MissingExtraError(self.name, self.extra, mod)

    def load(self, spec: ModelSpec, device: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


def import_runtime(backend: Any) -> list[str]:
    """Import ``backend.runtime`` and ``backend.import_modules`` (the libraries its load() imports) and return
    the ones imported.

    The session calls this before it reads the process's resident memory around a model load: what importing
    torch adds (hundreds of MB) belongs to the process, not to the model, and would otherwise be counted for
    whichever model happened to import it first, so a case's RSS_MB would depend on the order of the session.
    A module that fails to import is skipped: load() imports it again and says what is missing and how to get it.
    """
    import importlib

    names = getattr(backend, "import_modules", ()) or ()
    names = (names,) if isinstance(names, str) else tuple(names)  # a lone name written without the tuple
    runtime = getattr(backend, "runtime", None)
    done = []
    for name in dict.fromkeys(((runtime,) if runtime else ()) + names):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - load() reports it (MissingExtraError / BackendError)
            continue
        done.append(name)
    return done
