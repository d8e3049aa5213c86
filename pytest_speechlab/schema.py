"""The JSON Schemas of golden files and run records (shipped in ``pytest_speechlab/schemas/``), and the
validation every reader runs: a file that breaks its schema is an error naming the file, the key, the value
and the fix, never a traceback and never a comparison that silently compares nothing.

Users can validate committed goldens with the same files, e.g.
``check-jsonschema --schemafile <site-packages>/pytest_speechlab/schemas/golden-1.schema.json golden/**/*.json``
(note: JSON Schema itself cannot refuse NaN/Infinity; :func:`validate` does).
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from typing import Any

# The schema number each kind of file is written with, and the file describing it.
GOLDEN_SCHEMA = 1
RECORD_SCHEMA = 2
SCHEMA_FILES = {
    "golden": f"golden-{GOLDEN_SCHEMA}.schema.json",
    "run record": f"run-record-{RECORD_SCHEMA}.schema.json",
}


def schema_path(kind: str) -> str:
    """Where the shipped schema of ``kind`` (``golden`` or ``run record``) is, for messages and users."""
    return str(resources.files("pytest_speechlab") / "schemas" / SCHEMA_FILES[kind])


@cache
def _validator(kind: str) -> Any:
    import jsonschema
    from jsonschema import Draft202012Validator

    def finite_number(_checker: Any, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    def finite_integer(_checker: Any, value: Any) -> bool:
        return finite_number(_checker, value) and float(value).is_integer() and isinstance(value, int)

    # "number" excludes NaN and +-Infinity (which Python's json module reads), so they fail 'type'.
    checker = Draft202012Validator.TYPE_CHECKER.redefine_many({"number": finite_number, "integer": finite_integer})
    cls = jsonschema.validators.extend(Draft202012Validator, type_checker=checker)
    schema = json.loads(
        (resources.files("pytest_speechlab") / "schemas" / SCHEMA_FILES[kind]).read_text(encoding="utf-8")
    )
    return cls(schema)


def _where(path: Any) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _short(value: Any) -> str:
    text = json.dumps(value, allow_nan=True, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def problems(data: Any, kind: str) -> list[str]:
    """Every schema violation of ``data`` as ``key: value: what is wrong`` (empty when valid)."""
    out = []
    for err in sorted(_validator(kind).iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message)):
        key = _where(err.absolute_path)
        if err.validator == "type":
            want = err.validator_value
            want = " or ".join(want) if isinstance(want, list) else want
            finite = " finite" if "number" in str(want) or "integer" in str(want) else ""
            out.append(f"{key}: {_short(err.instance)} is not a{finite} {want}")
        else:
            msg = err.message if len(err.message) <= 200 else err.message[:197] + "..."
            out.append(f"{key}: {msg}")
    return out


def validate(data: Any, kind: str, path: str, error: type[Exception], fix: str) -> None:
    """Raise ``error`` naming ``path``, the first offending key and value, and ``fix``, when ``data`` breaks
    the schema of ``kind``; a schema number newer than this version reads is refused first."""
    current = GOLDEN_SCHEMA if kind == "golden" else RECORD_SCHEMA
    number = data.get("schema") if isinstance(data, dict) else None
    if isinstance(number, int) and not isinstance(number, bool) and number > current:
        raise error(
            f"{path}: schema: {kind} schema {number} is newer than this pytest-speechlab reads ({current}); "
            "upgrade pytest-speechlab"
        )
    found = problems(data, kind)
    if found:
        more = f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""
        raise error(f"{path}: {found[0]}{more}; the {kind} breaks its schema ({SCHEMA_FILES[kind]}); {fix}")
