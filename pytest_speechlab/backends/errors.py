"""The errors backends raise (no imports of the package: hub.py and base.py both use them)."""

from __future__ import annotations


class BackendError(Exception):
    """A backend could not load or run a model; the message names the file and the fix."""


class MissingExtraError(BackendError):
    """The Python packages a backend needs are not installed."""

    def __init__(self, backend: str, extra: str, missing: str) -> None:
        self.backend = backend
        self.extra = extra
        self.missing = missing
        super().__init__(
            f"backend {backend!r} needs the Python package {missing!r}, which is not installed; "
            f"install the extra: uv add 'pytest-speechlab[{extra}]' (or pip install 'pytest-speechlab[{extra}]')"
        )
