"""``http`` backend: gate a deployed, OpenAI-compatible speech API exactly like a local model.

ASR goes through ``POST {base_url}/v1/audio/transcriptions`` (multipart ``file`` = a WAV written in
memory, ``model``, ``language``, ``response_format=json``); TTS through ``POST {base_url}/v1/audio/speech``
(JSON ``input``, ``voice``, ``model``, ``response_format=wav``).  The device of an http case is
``remote``: the compute happens wherever the server runs.

Options read from the model entry in speechlab.yaml::

    models:
      fw-tiny-en-http:
        backend: http
        devices: [remote]
        base_url: http://127.0.0.1:8000   # or env SPEECHLAB_HTTP_BASE_URL
        api_key_env: SPEECHLAB_API_KEY    # NAME of the env var that holds the key (never the key itself)
        remote_model: fw-tiny-en          # the ``model`` form field; omitted when unset
        language: en
        timeout: 60                       # seconds per request
        retries: 3                        # retries after the first try, on 5xx / connection errors
        backoff: 0.5                      # first retry waits this long, then 2x, 4x, ...
        health_path: /health              # asked once at load for the served decode settings; null: don't
        timestamps: auto                  # segments with start/end (transcribe_segments) through
                                          # response_format=verbose_json: auto (when the server offers it), on, off

The API key is read from the environment when the model loads and is never printed, logged, written to
``decode_settings`` or put in an error message (server messages are scrubbed of it too).
Latency is client-side wall time per request (``last_latency_s``), so RTF computed from it includes the
network and the server's queueing, which is what a user of the deployment experiences.
"""

from __future__ import annotations

import io
import os
import time
from typing import Any, ClassVar

import numpy as np

from .base import Audio, BackendError, BaseBackend, ModelSpec, Opt

BASE_URL_ENV = "SPEECHLAB_HTTP_BASE_URL"
DEFAULT_API_KEY_ENV = "SPEECHLAB_API_KEY"
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
SPEECH_PATH = "/v1/audio/speech"
WAV_SUBTYPES = ("PCM_16", "FLOAT")


def encode_wav(audio: Audio, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    """A mono WAV file in memory.

    PCM_16 is quantised by hand (round(x * 32768), clipped) rather than by libsndfile, because libsndfile
    scales by 32767 on write but 32768 on read: audio that came from a 16-bit file would not survive the
    round trip bit-exactly, and the remote model would not see what the local model sees.
    """
    import soundfile as sf

    buf = io.BytesIO()
    mono = np.asarray(audio, dtype=np.float32).reshape(-1)
    if subtype == "PCM_16":
        pcm = np.clip(np.round(mono.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
        sf.write(buf, pcm, sample_rate, format="WAV", subtype="PCM_16")
    else:
        sf.write(buf, mono, sample_rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def decode_audio(data: bytes, source: str) -> tuple[Audio, int]:
    """Float32 mono audio and its rate from encoded bytes (WAV/FLAC/OGG); ``source`` names it in errors."""
    import soundfile as sf

    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise BackendError(f"{source}: the response is not readable audio ({exc}); expected a WAV file") from exc
    mono: Audio = audio.mean(axis=1).astype(np.float32) if audio.shape[1] > 1 else audio[:, 0].copy()
    return mono, int(sr)


class HTTPSpeechModel:
    """A model served over HTTP.  ``transcribe`` (ASR) and ``synthesize`` (TTS) each send one request.

    After each call ``last_latency_s`` holds the client-side wall time of the request that succeeded
    (retries and back-off not included, so it measures the service, not our patience) and
    ``last_attempts`` how many attempts the call took; ``total_retries`` counts retries over the object's life.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        api_key_env: str,
        *,
        task: str = "asr",
        remote_model: str | None = None,
        language: str | None = None,
        voice: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        sample_rate: int = 16000,
        wav_subtype: str = "PCM_16",
    ) -> None:
        import httpx

        self.name = name
        self.base_url = base_url.rstrip("/")
        self.task = task
        self.remote_model = remote_model
        self.language = language
        self.voice = voice
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sample_rate = sample_rate
        self.wav_subtype = wav_subtype
        self._api_key_env = api_key_env
        # Kept private and only ever used to build the header and to scrub messages.
        self.__key = api_key or None
        headers = {"Authorization": f"Bearer {self.__key}"} if self.__key else {}
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)
        # What a golden records: the settings that change the result, never the URL (it differs per
        # deployment and per test port) nor the key.  ``probe_server`` replaces them with the served model's
        # own decode settings when the server reports them (speechlab serve does, on /health).
        self.server_info: dict[str, Any] | None = None
        self.client_settings: dict[str, Any] = {
            "transport": "openai-http",
            "remote_model": remote_model,
            "language": language,
            "wav_subtype": wav_subtype,
            "sample_rate": sample_rate,
        }
        if task == "tts":
            self.client_settings["voice"] = voice
        self.decode_settings: dict[str, Any] = dict(self.client_settings)
        self.last_latency_s: float | None = None
        self.last_attempts = 0
        self.total_retries = 0
        self.latencies_s: list[float] = []
        # verbose_json (segments with timestamps): "on" asks, "off" never, "auto" asks unless the server said on
        # /health that it does not offer it, or refused it once (then the refusal is remembered).
        self.timestamps = "auto"
        self.offers_segments: bool | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"HTTPSpeechModel(name={self.name!r}, base_url={self.base_url!r}, task={self.task!r})"

    def probe_server(self, health_path: str = "/health") -> bool:
        """Ask ``health_path`` once (no retries, short timeout) what the server runs.

        When the answer is JSON with a ``decode_settings`` mapping (``speechlab serve`` sends the served model's),
        those become this model's ``decode_settings``: the golden then records what really decodes, and an http
        case can be gated against the golden of the same model run locally.  Any failure leaves the client's
        settings in place (plain OpenAI-compatible servers have no /health); requests report real errors later.
        """
        import httpx

        try:
            r = self._client.get(health_path, timeout=min(self.timeout, 5.0))
            body = r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return False
        if not isinstance(body, dict) or not isinstance(body.get("decode_settings"), dict):
            return False
        self.server_info = {k: body.get(k) for k in ("model", "backend", "device", "task", "sample_rate")}
        formats = body.get("response_formats")
        if isinstance(formats, list):
            self.offers_segments = "verbose_json" in formats
        self.decode_settings = dict(body["decode_settings"])
        return True

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _scrub(self, text: str) -> str:
        """``text`` with the API key replaced, in case a server echoes the Authorization header back."""
        return text.replace(self.__key, "***") if self.__key else text

    def _server_message(self, response: Any) -> str:
        """The server's error message: OpenAI-style ``{"error": {"message": ...}}``, else the raw body."""
        try:
            body = response.json()
        except ValueError:
            body = None
        msg: str
        if isinstance(body, dict) and isinstance(body.get("error"), dict) and "message" in body["error"]:
            msg = str(body["error"]["message"])
        elif isinstance(body, dict) and "detail" in body:
            msg = str(body["detail"])
        else:
            msg = response.text[:500] or response.reason_phrase
        return self._scrub(msg)

    def _post(self, path: str, **kwargs: Any) -> Any:
        """POST with retries (exponential back-off) on connection errors, timeouts and 5xx; 4xx raise at once."""
        import httpx

        url = f"{self.base_url}{path}"
        attempts = self.retries + 1
        last_problem = ""
        for attempt in range(attempts):
            if attempt:
                self.total_retries += 1
                time.sleep(self.backoff * (2 ** (attempt - 1)))
            self.last_attempts = attempt + 1
            t0 = time.perf_counter()
            try:
                response = self._client.post(path, **kwargs)
            except httpx.TimeoutException as exc:
                last_problem = f"timed out after {self.timeout:g} s ({type(exc).__name__})"
                continue
            except httpx.TransportError as exc:
                last_problem = f"could not connect ({type(exc).__name__}: {self._scrub(str(exc))})"
                continue
            elapsed = time.perf_counter() - t0
            if response.status_code >= 500:
                last_problem = f"HTTP {response.status_code}: {self._server_message(response)}"
                continue
            if response.status_code >= 400:
                hint = ""
                if response.status_code == 401:
                    hint = (
                        f" Check the API key in the environment variable {self._api_key_env}"
                        f" ({'set' if self.__key else 'not set'}); the server rejected it."
                    )
                elif response.status_code == 413:
                    hint = " The audio is larger than the server accepts; raise its upload limit or send shorter clips."
                raise BackendError(
                    f"model {self.name!r}: POST {url} failed with HTTP {response.status_code}: "
                    f"{self._server_message(response)}.{hint}"
                )
            self.last_latency_s = elapsed
            self.latencies_s.append(elapsed)
            return response
        raise BackendError(
            f"model {self.name!r}: POST {url} failed after {attempts} attempt(s): {last_problem}. "
            f"Is the server running at {self.base_url}? (start one with: speechlab serve --model NAME), "
            f"or set base_url in speechlab.yaml / {BASE_URL_ENV}."
        )

    def _transcription(self, audio: Audio, response_format: str) -> Any:
        wav = encode_wav(audio, self.sample_rate, self.wav_subtype)
        data: dict[str, str] = {"response_format": response_format}
        if self.remote_model:
            data["model"] = self.remote_model
        if self.language:
            data["language"] = self.language
        return self._post(TRANSCRIPTIONS_PATH, files={"file": ("audio.wav", wav, "audio/wav")}, data=data)

    def transcribe_segments(self, audio: Audio) -> list[dict[str, Any]]:
        """The segments of ``audio`` with start/end in seconds, asked for as ``verbose_json`` (OpenAI's format),
        as dicts with the keys faster-whisper's ``transcribe_segments`` returns (id, start, end, text and, where
        the server sends them, temperature, avg_logprob, compression_ratio, no_speech_prob)."""
        where = f"model {self.name!r}: {self.base_url}{TRANSCRIPTIONS_PATH}"
        if self.timestamps == "off":
            raise BackendError(f"{where}: segment timestamps are off for this model (timestamps: off); set "
                               "timestamps: auto to ask the server for verbose_json")
        if self.timestamps == "auto" and self.offers_segments is False:
            raise BackendError(f"{where}: the server does not offer response_format verbose_json (segments with "
                               "timestamps), so timestamp metrics cannot be computed over HTTP for this model")
        try:
            response = self._transcription(audio, "verbose_json")
        except BackendError as exc:
            if "HTTP 400" in str(exc) and self.timestamps == "auto":
                self.offers_segments = False  # asked once; the refusal stands for this model
            raise
        self.offers_segments = True
        try:
            body = response.json()
            raw = body["segments"]
            if not isinstance(raw, list):
                raise TypeError("segments is not a list")
            segments = []
            for i, seg in enumerate(raw):
                out: dict[str, Any] = {"id": int(seg.get("id", i)), "start": float(seg["start"]),
                                       "end": float(seg["end"]), "text": str(seg["text"])}
                for key in ("temperature", "avg_logprob", "compression_ratio", "no_speech_prob"):
                    if isinstance(seg.get(key), (int, float)):
                        out[key] = float(seg[key])
                segments.append(out)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackendError(f"{where} answered verbose_json without usable 'segments' (start, end, text each; "
                               f"{type(exc).__name__}: {exc}): {response.text[:200]!r}") from None
        return segments

    def transcribe(self, audio: Audio) -> str:
        """Send ``audio`` (float32 mono at ``sample_rate``) to the transcription endpoint; return its text."""
        response = self._transcription(audio, "json")
        try:
            body = response.json()
            text = body["text"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(
                f"model {self.name!r}: {self.base_url}{TRANSCRIPTIONS_PATH} answered without a JSON 'text' "
                f"field ({response.text[:200]!r}); is it an OpenAI-compatible transcription endpoint?"
            ) from exc
        return str(text).strip()

    def synthesize(self, text: str) -> tuple[Audio, int]:
        """Send ``text`` to the speech endpoint; return the float32 mono waveform and its rate."""
        payload: dict[str, Any] = {"input": text, "response_format": "wav"}
        if self.voice:
            payload["voice"] = self.voice
        if self.remote_model:
            payload["model"] = self.remote_model
        response = self._post(SPEECH_PATH, json=payload)
        audio, sr = decode_audio(response.content, f"model {self.name!r}: {self.base_url}{SPEECH_PATH}")
        self.sample_rate = sr
        return audio, sr


class HTTPBackend(BaseBackend):
    """Any OpenAI-compatible speech server (``speechlab serve`` is one); device ``remote`` only."""

    name: ClassVar[str] = "http"
    extra: ClassVar[str] = "serve"
    tasks: ClassVar[tuple[str, ...]] = ("asr", "tts")
    devices: ClassVar[tuple[str, ...]] = ("remote",)
    requires: ClassVar[tuple[str, ...]] = ("httpx",)
    speed_reference: ClassVar[str | None] = None  # a remote service's speed is not this machine's: reported, not gated
    # Value checks (issue 12): speechlab.yaml refuses anything else, naming the key and what is allowed.
    option_types: ClassVar[dict[str, Opt]] = {
        "base_url": Opt("str"),
        "api_key_env": Opt("str"),
        "wav_subtype": Opt("str", choices=WAV_SUBTYPES),
        "timeout": Opt("number", lo=0, lo_open=True, hi=86_400),
        "retries": Opt("int", lo=0, hi=100),
        "backoff": Opt("number", lo=0, hi=3600),
        "sample_rate": Opt("int", lo=1000, hi=384_000),
        "remote_model": Opt("str", null=True),
        "language": Opt("str", null=True),
        "voice": Opt("str", null=True),
        "health_path": Opt("str", null=True),
        "timestamps": Opt("str", choices=("auto", "on", "off")),
    }

    def unsupported_reason(self, device: str) -> str | None:
        if device != "remote":
            return f"the http backend runs on device 'remote' only (the server picks its own hardware), not {device!r}"
        return None

    def load(self, spec: ModelSpec, device: str = "remote") -> HTTPSpeechModel:
        """Connect nothing yet: check the options and build a client; requests happen per call."""
        self.check_installed()
        reason = self.unsupported_reason(device)
        if reason:
            raise BackendError(f"model {spec.name!r}: {reason}")
        o = spec.options
        where = spec.config_path or "speechlab.yaml"
        base_url = str(o.get("base_url") or os.environ.get(BASE_URL_ENV) or "").strip()
        if not base_url:
            raise BackendError(
                f"model {spec.name!r} (backend http) has no base_url: set 'base_url: http://HOST:PORT' under "
                f"models.{spec.name} in {where}, or the environment variable {BASE_URL_ENV}"
            )
        if not base_url.startswith(("http://", "https://")):
            raise BackendError(
                f"model {spec.name!r}: base_url {base_url!r} must start with http:// or https:// (in {where})"
            )
        key_env = str(o.get("api_key_env") or DEFAULT_API_KEY_ENV)
        if "api_key" in o:
            raise BackendError(
                f"model {spec.name!r}: do not put the API key in {where}; put it in an environment variable and "
                f"name that variable with 'api_key_env:' (default {DEFAULT_API_KEY_ENV})"
            )
        subtype = str(o.get("wav_subtype", "PCM_16")).upper()
        if subtype not in WAV_SUBTYPES:
            raise BackendError(f"model {spec.name!r}: wav_subtype must be one of {', '.join(WAV_SUBTYPES)} (in "
                               f"{where})")
        try:
            timeout = float(o.get("timeout", 60.0))
            retries = int(o.get("retries", 3))
            backoff = float(o.get("backoff", 0.5))
            sample_rate = int(o.get("sample_rate", 16000))
        except (TypeError, ValueError) as exc:
            raise BackendError(
                f"model {spec.name!r}: timeout, retries, backoff and sample_rate must be numbers (in {where}): {exc}"
            ) from exc
        if timeout <= 0 or retries < 0 or backoff < 0 or sample_rate <= 0:
            raise BackendError(
                f"model {spec.name!r}: timeout and sample_rate must be > 0, retries and backoff >= 0 (in {where})"
            )
        remote_model = o.get("remote_model")
        model = HTTPSpeechModel(
            spec.name,
            base_url,
            os.environ.get(key_env),
            key_env,
            task=spec.task,
            remote_model=str(remote_model) if remote_model else None,
            language=o.get("language"),
            voice=o.get("voice"),
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            sample_rate=sample_rate,
            wav_subtype=subtype,
        )
        model.timestamps = str(o.get("timestamps", "auto"))
        health_path = o.get("health_path", "/health")
        if health_path:
            model.probe_server(str(health_path))
        if model.timestamps == "off":
            model.offers_segments = False  # long-form cases then say "no timestamps" instead of asking
        return model
