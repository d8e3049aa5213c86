"""devices.pick: the one rule the single-device fixtures (speech_device, asr_eval, tts_eval) and the matrix's
``--speechlab-device auto`` share."""

from __future__ import annotations

import pytest

from pytest_speechlab.devices import pick, resolve


@pytest.mark.parametrize("requested", ["auto", "all"])
def test_auto_and_all_resolve_to_one_supported_device(requested: str) -> None:
    assert pick(requested, ("cpu",)) == "cpu"
    assert pick(requested, ("cpu", "cuda")) == resolve("auto", ("cpu", "cuda")).device


def test_a_named_device_is_taken_as_is() -> None:
    """Even one the backend does not list: skip_if_unrunnable says why it cannot run, not pick."""
    assert pick("cpu", ("cpu",)) == "cpu"
    assert pick("cuda", ("cpu",)) == "cuda"
    assert pick("remote", ("remote",)) == "remote"
