"""pytest-speechlab.

Modules that moved keep their old import path: ``import pytest_speechlab.convert`` (or ``from
pytest_speechlab.cli import main``) still works, warns with a :class:`DeprecationWarning` that names the new
path, and gives the very module object at the new path (so ``monkeypatch.setattr`` on either name patches
the same thing).  Nothing is imported until such an old path is used.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import CodeType, ModuleType

# old dotted path -> new dotted path (issue 14: commands in commands/, the converter beside its backend).
MOVED: dict[str, str] = {
    "pytest_speechlab.cli": "pytest_speechlab.commands.cli",
    "pytest_speechlab.convert": "pytest_speechlab.backends.convert_ct2",
    "pytest_speechlab.scorecard": "pytest_speechlab.commands.scorecard",
    "pytest_speechlab.serve": "pytest_speechlab.commands.serve",
    "pytest_speechlab.loadcheck": "pytest_speechlab.commands.loadcheck",
    "pytest_speechlab.check": "pytest_speechlab.commands.check",
    "pytest_speechlab.capability": "pytest_speechlab.commands.capability",
    "pytest_speechlab.validate": "pytest_speechlab.commands.validate",
    "pytest_speechlab.init": "pytest_speechlab.commands.init",
    "pytest_speechlab.runs": "pytest_speechlab.records",
}


class _MovedLoader(importlib.abc.Loader):
    """Hands out the module at its new path under the old name, with a DeprecationWarning."""

    def __init__(self, new: str) -> None:
        self.new = new
        self.spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.new}; import it from there (the old path will be removed)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(self.new)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the old name's spec on the module: give it back its own.
        module.__spec__ = self.spec

    def get_code(self, fullname: str) -> CodeType | None:
        """For ``python -m <old path>`` (runpy runs the new module's code as ``__main__``)."""
        warnings.warn(f"{fullname} moved to {self.new}; run python -m {self.new}", DeprecationWarning, stacklevel=2)
        spec = importlib.util.find_spec(self.new)
        loader = spec.loader if spec is not None else None
        if not isinstance(loader, importlib.abc.InspectLoader):
            return None
        return loader.get_code(self.new)


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(new))


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())
