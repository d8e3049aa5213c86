"""``speechlab serve`` limits what an upload costs by its decoded duration (not its compressed bytes),
refuses non-finite audio with 400 as the local loader does, and warns when it listens beyond loopback
without a key (issue 12 item 11).  In-process: FastAPI's TestClient and a stand-in model, no real model."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from pytest_speechlab.backends.base import ModelSpec

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")


def _encoded(audio: np.ndarray, sr: int, fmt: str, subtype: str) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


class _Model:
    sample_rate = 16000

    def __init__(self) -> None:
        self.decode_settings: dict[str, Any] = {"language": "en"}
        self.calls = 0

    def transcribe(self, audio: np.ndarray) -> str:
        self.calls += 1
        return "hello"


@pytest.fixture
def client() -> Any:
    from fastapi.testclient import TestClient

    from pytest_speechlab.commands.serve import create_app

    model = _Model()
    app = create_app("m", ModelSpec("m", "faster-whisper"), "cpu", model=model, max_audio_seconds=60.0)
    with TestClient(app) as c:
        c.model = model  # type: ignore[attr-defined]
        yield c


def _post(client: Any, data: bytes, name: str) -> Any:
    return client.post("/v1/audio/transcriptions", files={"file": (name, data, "audio/wav")}, data={"model": "m"})


def test_long_silence_in_a_small_flac_is_refused_before_decoding(client: Any) -> None:
    hour = _encoded(np.zeros(16000 * 3600, dtype=np.int16), 16000, "FLAC", "PCM_16")
    assert len(hour) < 2_000_000  # tiny compressed: the byte limit alone would let it through
    r = _post(client, hour, "hour.flac")
    assert r.status_code == 400
    assert r.json()["error"]["message"] == ("the uploaded file 'hour.flac' holds 3600.0 s of audio, more than this "
                                            "server's limit of 60 s; send a shorter clip or restart the server with a "
                                            "larger --max-audio-seconds")
    assert client.model.calls == 0


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_float_wav_is_a_400(client: Any, value: float) -> None:
    audio = np.full(1600, 0.1, dtype=np.float32)
    audio[100] = value
    r = _post(client, _encoded(audio, 16000, "WAV", "FLOAT"), "bad.wav")
    assert r.status_code == 400
    assert r.json()["error"]["message"] == ("the uploaded file 'bad.wav' holds NaN or infinite samples; send PCM or "
                                            "finite float audio")
    assert client.model.calls == 0


def test_a_short_clip_still_transcribes(client: Any) -> None:
    r = _post(client, _encoded(np.full(1600, 0.1, dtype=np.float32), 16000, "WAV", "FLOAT"), "ok.wav")
    assert r.status_code == 200 and r.json() == {"text": "hello"}


def test_open_host_without_key_warns(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    from pytest_speechlab.commands.cli import main

    rc = main(["serve", "--model", "m", "--host", "0.0.0.0", "--config", str(tmp_path / "none.yaml")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("speechlab serve: warning: listening on 0.0.0.0 without an API key: anyone who can reach "
                          "this port can use the model; pass --api-key-env VAR\n")


def test_max_audio_seconds_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_speechlab.commands.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["serve", "--model", "m", "--max-audio-seconds", "0"])
    assert exc.value.code == 2
    assert (
        "argument --max-audio-seconds: --max-audio-seconds wants a number of seconds > 0, got 0"
        in capsys.readouterr().err
    )
