"""The built-in test that pytest collects from speechlab.yaml: one item per model x device x dataset."""

from __future__ import annotations

import pytest


def test_speech(speechlab_case: object, request: pytest.FixtureRequest) -> None:
    """Run one configured case and gate it against its golden baseline."""
    from .running import run_matrix_case

    run_matrix_case(speechlab_case, request)
