"""``speechlab serve``: serve any configured model over an OpenAI-compatible HTTP API.

Endpoints: ``GET /health``, ``POST /v1/audio/transcriptions`` (ASR models), ``POST /v1/audio/speech`` (TTS
models).  Errors are OpenAI-style JSON ``{"error": {"message": ..., "type": ...}}``.  The model is loaded
once, at startup, through the same backend registry the pytest plugin uses, so the server runs exactly
the model (and decode settings) a local case runs: that is what lets the ``http`` backend be gated against
the local model's golden.

FastAPI, uvicorn and python-multipart (the ``serve`` extra) are imported only when the app is built.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint signatures at runtime and the
# types they name (UploadFile...) are imported inside create_app, where string annotations cannot see them.

import argparse
import hmac
import io
import json
import os
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from ..backends import get_backend
from ..backends.base import BackendError, MissingExtraError, ModelSpec

DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024  # OpenAI's own limit for audio uploads
# Compressed bytes say little about the work: 89 KB of FLAC can hold an hour of silence.  The decoded
# duration is what holds the model (and memory), so it is limited too, before decoding.
DEFAULT_MAX_AUDIO_SECONDS = 600.0
SERVE_REQUIRES = ("fastapi", "uvicorn", "multipart")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class UploadTooLarge(Exception):
    """The request body grew past the upload limit while it was being read."""


def error_body(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error shape."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _status_type(status: int) -> str:
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        413: "invalid_request_error",
        422: "invalid_request_error",
        503: "server_error",
    }.get(status, "server_error" if status >= 500 else "invalid_request_error")


class GuardMiddleware:
    """Pure ASGI middleware for ``/v1/``: the API key first, then the upload size.

    The size is checked on ``Content-Length`` before a byte of the body is read, and counted while the body
    streams in (chunked uploads have no length), so an oversized upload is refused without buffering it.
    """

    def __init__(self, app: ASGIApp, api_key: str | None, max_upload_bytes: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_upload_bytes = max_upload_bytes

    async def _reply(self, send: Send, status: int, message: str, code: str | None = None) -> None:
        body = json.dumps(error_body(message, _status_type(status), code)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _limit_text(self, size: int) -> str:
        return (
            f"the upload is {size / 1e6:.2f} MB, above this server's limit of "
            f"{self.max_upload_bytes / 1e6:.2f} MB; send a shorter clip or restart the server with a larger "
            f"--max-upload-mb"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.api_key is not None:
            auth = headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
                # Never echo what the client sent: it may be a real key meant for another server.
                why = "missing" if not auth else "incorrect"
                await self._reply(
                    send,
                    401,
                    f"API key {why}: send 'Authorization: Bearer <key>' with this server's key",
                    "invalid_api_key",
                )
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_upload_bytes:
            await self._reply(send, 413, self._limit_text(int(length)), "upload_too_large")
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_upload_bytes:
                    raise UploadTooLarge(self._limit_text(seen))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except UploadTooLarge as exc:
            if not started:
                await self._reply(send, 413, str(exc), "upload_too_large")


def read_upload(
    data: bytes, filename: str, target_rate: int, max_seconds: float = DEFAULT_MAX_AUDIO_SECONDS
) -> np.ndarray:
    """Decode an uploaded audio file, downmix to mono and resample to ``target_rate`` (soxr, HQ).

    Raises ValueError with a message naming the upload and the problem: unreadable, empty, longer than
    ``max_seconds`` once decoded (checked from the header, before decoding), or holding NaN/Infinity.
    """
    import soundfile as sf

    if not data:
        raise ValueError(f"the uploaded file {filename!r} is empty; send a WAV, FLAC or OGG file")
    try:
        info = sf.info(io.BytesIO(data))
        seconds = info.frames / float(info.samplerate) if info.samplerate else 0.0
        if seconds > max_seconds:
            raise ValueError(
                f"the uploaded file {filename!r} holds {seconds:.1f} s of audio, more than this server's "
                f"limit of {max_seconds:g} s; send a shorter clip or restart the server with a larger "
                "--max-audio-seconds"
            )
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise ValueError(
            f"could not read the uploaded file {filename!r} as audio ({exc}); send a WAV, FLAC or OGG file"
        ) from exc
    if audio.shape[0] == 0:
        raise ValueError(f"the uploaded file {filename!r} holds no audio samples (0 frames)")
    if audio.shape[0] / float(sr) > max_seconds:  # a header that under-reported its length
        raise ValueError(
            f"the uploaded file {filename!r} holds more than this server's limit of {max_seconds:g} s "
            "of audio; send a shorter clip or restart the server with a larger --max-audio-seconds"
        )
    if not np.isfinite(audio).all():
        raise ValueError(
            f"the uploaded file {filename!r} holds NaN or infinite samples; send PCM or finite float audio"
        )
    mono = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
    if int(sr) != target_rate:
        import soxr

        mono = soxr.resample(mono, int(sr), target_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def encode_wav_response(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes for the speech endpoint (what OpenAI's ``response_format=wav`` returns)."""
    import soundfile as sf

    buf = io.BytesIO()
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64).reshape(-1) * 32768.0), -32768, 32767).astype(np.int16)
    sf.write(buf, pcm, int(sample_rate), format="WAV", subtype="PCM_16")
    return buf.getvalue()


#: ``/v1/audio/speech`` response formats: (media type, soundfile format, subtype, sample rate or None to keep the
#: model's).  OpenAI's API defaults to mp3; ``pcm`` is raw 16-bit little-endian mono at 24 kHz, as OpenAI sends it.
SPEECH_FORMATS: dict[str, tuple[str, str | None, str | None, int | None]] = {
    "mp3": ("audio/mpeg", "MP3", "MPEG_LAYER_III", None),
    "opus": ("audio/ogg", "OGG", "OPUS", 24000),  # Ogg Opus takes 8/12/16/24/48 kHz only
    "flac": ("audio/flac", "FLAC", "PCM_16", None),
    "wav": ("audio/wav", "WAV", "PCM_16", None),
    "pcm": ("audio/pcm", None, None, 24000),
}
#: ``/v1/audio/transcriptions`` response formats.
TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


def encode_speech(audio: np.ndarray, sample_rate: int, fmt: str) -> tuple[bytes, str]:
    """``audio`` encoded as ``fmt`` (a key of :data:`SPEECH_FORMATS`), and its media type."""
    import soundfile as sf

    media, container, subtype, rate = SPEECH_FORMATS[fmt]
    mono = np.asarray(audio, dtype=np.float32).reshape(-1)
    if rate is not None and rate != int(sample_rate):
        import soxr

        mono = soxr.resample(mono, int(sample_rate), rate, quality="HQ").astype(np.float32)
        sample_rate = rate
    if container is None:  # raw PCM
        pcm = np.clip(np.round(mono.astype(np.float64) * 32768.0), -32768, 32767).astype("<i2")
        return pcm.tobytes(), media
    if fmt == "wav":
        return encode_wav_response(mono, sample_rate), media
    buf = io.BytesIO()
    sf.write(buf, np.clip(mono, -1.0, 1.0), int(sample_rate), format=container, subtype=subtype)
    return buf.getvalue(), media


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    sec, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{sec:02d}{sep}{ms:03d}"


def subtitles(segments: list[dict[str, Any]], fmt: str) -> str:
    """SubRip (``srt``) or WebVTT (``vtt``) text of transcript segments."""
    blocks = []
    for i, seg in enumerate(segments, start=1):
        sep = "," if fmt == "srt" else "."
        span = f"{_timestamp(seg['start'], sep)} --> {_timestamp(seg['end'], sep)}"
        text = str(seg["text"]).strip()
        blocks.append(f"{i}\n{span}\n{text}\n" if fmt == "srt" else f"{span}\n{text}\n")
    body = "\n".join(blocks)
    return body if fmt == "srt" else "WEBVTT\n\n" + body


def _health_body(model_name: str, spec: ModelSpec, device: str, m: Any) -> dict[str, Any]:
    """What ``/health`` answers for ``m`` (None while the model is loading)."""
    return {
        "model": model_name,
        "backend": spec.backend,
        "device": device,
        "task": spec.task,
        "ready": m is not None,
        "sample_rate": getattr(m, "sample_rate", None),
        "decode_settings": getattr(m, "decode_settings", None),
        # what /v1/audio/transcriptions answers for this model (verbose_json/srt/vtt need segment timestamps)
        "response_formats": ([f for f in TRANSCRIPTION_FORMATS
                              if f in ("json", "text") or callable(getattr(m, "transcribe_segments", None))]
                             if m is not None and hasattr(m, "transcribe") else []),
    }


def _require_serve_extra() -> None:
    """MissingExtraError unless the ``serve`` extra's modules are installed."""
    import importlib.util

    for mod in SERVE_REQUIRES:
        if importlib.util.find_spec(mod) is None:
            raise MissingExtraError("serve", "serve", mod)


def _add_error_handlers(fastapi_app: Any) -> None:
    """OpenAI-shaped error bodies for HTTP errors, invalid requests and unexpected exceptions."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app: FastAPI = fastapi_app

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI turns any error while parsing the body into a 400; the size guard's is a 413.
        if isinstance(exc.__cause__, UploadTooLarge):
            return JSONResponse(
                error_body(str(exc.__cause__), "invalid_request_error", "upload_too_large"), status_code=413
            )
        return JSONResponse(error_body(str(exc.detail), _status_type(exc.status_code)), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {err.get('msg')}")
        return JSONResponse(
            error_body("invalid request: " + "; ".join(parts), "invalid_request_error"), status_code=400
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # Still OpenAI-shaped, so clients quote something useful; the traceback goes to the server log.
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error"), status_code=500)


def _model_field_problem(model_name: str, requested: str | None) -> str | None:
    """Why a request's ``model`` field does not match the served model, or None."""
    if requested and requested != model_name:
        return f"this server serves model {model_name!r}, not {requested!r}; send model={model_name!r} or omit it"
    return None


def _speech_problem(m: Any, model_name: str, spec: ModelSpec, payload: dict[str, Any]) -> str | None:
    """Why a ``/v1/audio/speech`` request cannot be served by ``m``, or None."""
    if not hasattr(m, "synthesize"):
        return f"model {model_name!r} is a {spec.task} model; it does not synthesise speech"
    text = payload.get("input")
    if not isinstance(text, str) or not text.strip():
        return "'input' must be a non-empty string (the text to speak)"
    problem = _model_field_problem(model_name, payload.get("model"))
    if problem:
        return problem
    fmt = payload.get("response_format", "mp3")  # OpenAI's default
    if fmt not in SPEECH_FORMATS:
        return f"response_format {fmt!r} is not supported; use " + ", ".join(SPEECH_FORMATS)
    return None


def _transcription_response(
    m: Any, response_format: str, language: str | None, audio: Any, text: str, segments: list[dict[str, Any]] | None
) -> Any:
    """The transcription in ``response_format`` (text, srt, vtt, verbose_json or json)."""
    from fastapi.responses import Response

    if response_format == "text":
        return Response(text, media_type="text/plain")
    if response_format in ("srt", "vtt"):
        return Response(subtitles(segments or [], response_format), media_type="text/plain; charset=utf-8")
    if response_format == "verbose_json":
        return _verbose_json(m, language, audio, text, segments)
    return {"text": text}


def _transcription_problem(
    m: Any, model_name: str, spec: ModelSpec, model: str | None, language: str | None, response_format: str
) -> str | None:
    """Why a transcription request cannot be served by ``m`` (task, model field, language, format), or None."""
    if not hasattr(m, "transcribe"):
        return f"model {model_name!r} is a {spec.task} model; it does not transcribe"
    problem = _model_field_problem(model_name, model)
    if problem:
        return problem
    fixed = (getattr(m, "decode_settings", None) or {}).get("language")
    if language and fixed and language != fixed:
        return f"model {model_name!r} is configured for language {fixed!r}; the request asked for {language!r}"
    if response_format not in TRANSCRIPTION_FORMATS:
        return f"response_format {response_format!r} is not supported; use " + ", ".join(TRANSCRIPTION_FORMATS)
    timed = response_format in ("verbose_json", "srt", "vtt")
    if timed and not callable(getattr(m, "transcribe_segments", None)):
        return (
            f"model {model_name!r} gives no segment timestamps, so response_format "
            f"{response_format!r} is not available; use json or text"
        )
    return None


def _verbose_json(
    m: Any, language: str | None, audio: Any, text: str, segments: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """OpenAI's ``verbose_json`` transcription body."""
    fixed_language = (getattr(m, "decode_settings", None) or {}).get("language")
    return {
        "task": "transcribe",
        "language": language or fixed_language or "unknown",
        "duration": round(len(audio) / float(m.sample_rate), 3),
        "text": text,
        "segments": [
            {
                "seek": 0,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
                **seg,
            }
            for seg in segments or []
        ],
    }


def create_app(
    model_name: str,
    spec: ModelSpec,
    device: str,
    api_key: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    model: Any = None,
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
) -> Any:
    """The FastAPI app serving ``spec`` on ``device``.

    The model is loaded once when the app starts (its lifespan), with
    ``get_backend(spec.backend).load(spec, device)``, unless an already loaded ``model`` is given.
    ``api_key`` (when not None) is required as ``Authorization: Bearer <key>`` on ``/v1/`` endpoints;
    ``/health`` stays open so that orchestrators can probe it.
    """
    _require_serve_extra()
    from fastapi import FastAPI, File, Form, HTTPException, UploadFile
    from fastapi.responses import Response
    from starlette.concurrency import run_in_threadpool

    backend = get_backend(spec.backend)
    state: dict[str, Any] = {"model": model, "error": None}
    # Backends are not all thread-safe (piper, torch models): one inference at a time; concurrent requests
    # queue here, which the load check then measures honestly as latency.
    lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        if state["model"] is None:
            state["model"] = await run_in_threadpool(backend.load, spec, device)
        yield

    app = FastAPI(title=f"speechlab serve: {model_name}", lifespan=lifespan)
    _add_error_handlers(app)

    def _model() -> Any:
        m = state["model"]
        if m is None:
            raise HTTPException(503, f"model {model_name!r} is not loaded yet")
        return m


    @app.get("/health")
    def health() -> dict[str, Any]:
        return _health_body(model_name, spec, device, state["model"])

    @app.post("/v1/audio/transcriptions")
    def transcriptions(
        file: Annotated[UploadFile, File()],
        model: Annotated[str | None, Form()] = None,
        language: Annotated[str | None, Form()] = None,
        response_format: Annotated[str, Form()] = "json",
    ) -> Any:
        m = _model()
        problem = _transcription_problem(m, model_name, spec, model, language, response_format)
        if problem:
            raise HTTPException(400, problem)
        timed = response_format in ("verbose_json", "srt", "vtt")
        data = file.file.read()
        try:
            audio = read_upload(data, file.filename or "file", int(m.sample_rate), max_audio_seconds)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        with lock:
            try:
                segments = m.transcribe_segments(audio) if timed else None
                text = (
                    "".join(str(x["text"]) for x in segments).strip() if segments is not None else m.transcribe(audio)
                )
            except BackendError as exc:
                raise HTTPException(500, f"model {model_name!r} failed: {exc}") from exc
        return _transcription_response(m, response_format, language, audio, text, segments)

    @app.post("/v1/audio/speech")
    def speech(payload: dict[str, Any]) -> Any:
        m = _model()
        problem = _speech_problem(m, model_name, spec, payload)
        if problem:
            raise HTTPException(400, problem)
        text = payload["input"]
        fmt = payload.get("response_format", "mp3")  # OpenAI's default
        with lock:
            try:
                audio, sr = m.synthesize(text)
            except BackendError as exc:
                raise HTTPException(500, f"model {model_name!r} failed: {exc}") from exc
        body, media = encode_speech(audio, sr, fmt)
        return Response(body, media_type=media)

    app.add_middleware(GuardMiddleware, api_key=api_key, max_upload_bytes=int(max_upload_bytes))
    return app


# --- config -------------------------------------------------------------------------------------------


def load_model_spec(config_path: Path, name: str) -> ModelSpec:
    """The validated ModelSpec named ``name`` in ``config_path`` (the core's loader; ConfigError on a bad file)."""
    from ..config import ConfigError, load_config

    cfg = load_config(config_path)
    if name not in cfg.models:
        known = ", ".join(sorted(cfg.models)) or "none"
        raise ConfigError(f"{cfg.path}: models.{name}: no model {name!r} under models: (known: {known})")
    return cfg.models[name]


# --- CLI ----------------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``speechlab serve`` to the ``speechlab`` command."""
    p = subparsers.add_parser(
        "serve",
        help="serve a configured model over an OpenAI-compatible HTTP API",
        description="Serve one model from speechlab.yaml over /v1/audio/transcriptions and /v1/audio/speech.",
    )
    p.add_argument("--model", required=True, help="model name under models: in the config")
    p.add_argument(
        "--config", default="speechlab.yaml", type=Path, help="path to speechlab.yaml (default: ./speechlab.yaml)"
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", default=8000, type=_port, help="TCP port, 0-65535 (default 8000)")
    p.add_argument("--device", default="cpu", help="device to load the model on (cpu, cuda, mps)")
    p.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="require 'Authorization: Bearer KEY' where KEY is read from environment variable VAR",
    )
    p.add_argument(
        "--max-upload-mb",
        default=DEFAULT_MAX_UPLOAD_BYTES / 1e6,
        type=_positive_mb,
        help="largest accepted upload in MB, > 0 (default 25)",
    )
    p.add_argument(
        "--max-audio-seconds",
        default=DEFAULT_MAX_AUDIO_SECONDS,
        type=_positive_seconds,
        help=f"longest accepted upload once decoded, in seconds, > 0 (default {DEFAULT_MAX_AUDIO_SECONDS:g})",
    )
    p.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    p.set_defaults(func=run_serve)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--port wants an integer 0-65535, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"--port wants an integer 0-65535, got {port}")
    return port


def _positive(option: str, unit: str) -> Any:
    """An argparse type for ``option``: a finite number > 0 (``unit`` names what it counts)."""
    import math

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} wants a number of {unit} > 0, got {value!r}") from None
        if not math.isfinite(number) or number <= 0:
            raise argparse.ArgumentTypeError(f"{option} wants a number of {unit} > 0, got {value}")
        return number

    return parse


_positive_mb = _positive("--max-upload-mb", "MB")
_positive_seconds = _positive("--max-audio-seconds", "seconds")


def run_serve(args: argparse.Namespace) -> int:
    """Load the model and run uvicorn until interrupted."""
    if not args.api_key_env and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"speechlab serve: warning: listening on {args.host} without an API key: anyone who can reach this "
            "port can use the model; pass --api-key-env VAR",
            file=sys.stderr,
        )
    api_key: str | None = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(
                f"speechlab serve: environment variable {args.api_key_env} is empty or unset; export the key in it",
                file=sys.stderr,
            )
            return 2
    from ..config import ConfigError

    try:
        spec = load_model_spec(args.config, args.model)
        backend = get_backend(spec.backend)  # the loader has checked that the backend is registered
    except (BackendError, ConfigError) as exc:
        print(f"speechlab serve: {exc}", file=sys.stderr)
        return 2
    reason = backend.unsupported_reason(args.device)
    if reason:
        print(f"speechlab serve: {reason}", file=sys.stderr)
        return 2
    try:
        app = create_app(
            args.model,
            spec,
            args.device,
            api_key=api_key,
            max_upload_bytes=int(args.max_upload_mb * 1e6),
            max_audio_seconds=args.max_audio_seconds,
        )
        import uvicorn
    except BackendError as exc:
        print(f"speechlab serve: {exc}", file=sys.stderr)
        return 2
    # The model loads in the app's lifespan, before uvicorn accepts connections; a load failure ends the
    # process with uvicorn's lifespan error and our BackendError message in the log.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
