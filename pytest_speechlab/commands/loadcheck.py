"""A bounded load check: N concurrent clients for M seconds against an OpenAI-compatible transcription API.

Each client is a thread with its own :class:`~pytest_speechlab.backends.http.HTTPSpeechModel` (its own
connection) and retries switched off, so every failure counts.  A client starts no request after the
deadline, and every request has a timeout, so the check always ends by ``duration_s + timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Audio, BackendError


@dataclass
class LoadReport:
    """What a load check measured.  Latencies are client-side wall times in seconds."""

    clients: int
    duration_s: float  # wall time from the first request to the last answer
    requests: int
    ok: int
    failed: int
    throughput_rps: float  # successful requests per second of wall time
    p50_s: float | None
    p95_s: float | None
    max_s: float | None
    audio_s: float  # seconds of audio in one request
    errors: list[str] = field(default_factory=list)  # the first few distinct failure messages
    texts: list[str] = field(default_factory=list)  # the distinct transcripts seen (should be one)

    def summary(self) -> str:
        """One line for a terminal."""
        p = (
            f"p50 {self.p50_s * 1000:.0f} ms, p95 {self.p95_s * 1000:.0f} ms"
            if self.p50_s is not None and self.p95_s is not None
            else "no successful request"
        )
        return (
            f"{self.clients} clients x {self.duration_s:.1f} s: {self.requests} requests, {self.ok} ok, "
            f"{self.failed} failed, {self.throughput_rps:.2f} req/s ({self.throughput_rps * self.audio_s:.2f} "
            f"audio-s/s), {p}"
        )


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear interpolation (numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def run_load(
    base_url: str,
    audio: Audio,
    *,
    sample_rate: int = 16000,
    clients: int = 4,
    duration_s: float = 5.0,
    timeout: float = 30.0,
    api_key: str | None = None,
    remote_model: str | None = None,
    language: str | None = None,
) -> LoadReport:
    """Drive ``clients`` threads, each sending ``audio`` in a loop until ``duration_s`` has passed."""
    from ..backends.http import HTTPSpeechModel

    if clients < 1 or duration_s <= 0:
        raise ValueError("clients must be >= 1 and duration_s > 0")
    latencies: list[float] = []
    errors: list[str] = []
    texts: set[str] = set()
    failed = 0
    mutex = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    deadline_box: list[float] = []

    def client() -> None:
        nonlocal failed
        model = HTTPSpeechModel(
            "loadcheck",
            base_url,
            api_key,
            "(loadcheck)",
            remote_model=remote_model,
            language=language,
            timeout=timeout,
            retries=0,
            sample_rate=sample_rate,
        )
        try:
            barrier.wait()
            while time.perf_counter() < deadline_box[0]:
                try:
                    text = model.transcribe(audio)
                except BackendError as exc:
                    with mutex:
                        failed += 1
                        if len(errors) < 5 and str(exc) not in errors:
                            errors.append(str(exc))
                    continue
                with mutex:
                    assert model.last_latency_s is not None
                    latencies.append(model.last_latency_s)
                    texts.add(text)
        finally:
            model.close()

    threads = [threading.Thread(target=client, name=f"loadcheck-{i}", daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    deadline_box.append(start + duration_s)
    barrier.wait()
    for t in threads:
        # A request started just before the deadline may take up to ``timeout``; nothing waits longer.
        t.join(duration_s + timeout + 5.0)
    wall = time.perf_counter() - start
    ok = len(latencies)
    return LoadReport(
        clients=clients,
        duration_s=wall,
        requests=ok + failed,
        ok=ok,
        failed=failed,
        throughput_rps=ok / wall if wall > 0 else 0.0,
        p50_s=percentile(latencies, 50) if latencies else None,
        p95_s=percentile(latencies, 95) if latencies else None,
        max_s=max(latencies) if latencies else None,
        audio_s=len(audio) / sample_rate,
        errors=errors,
        texts=sorted(texts),
    )


def register(subparsers: Any) -> None:
    """Add ``speechlab loadcheck`` to the ``speechlab`` command."""
    p = subparsers.add_parser(
        "loadcheck",
        help="N concurrent clients for M seconds against a transcription endpoint; throughput and p50/p95",
    )
    p.add_argument("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--audio", required=True, type=Path, help="audio file to send (any rate; resampled to 16 kHz)")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    p.add_argument("--api-key-env", default=None, metavar="VAR", help="environment variable holding the API key")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    from .serve import read_upload

    try:
        audio = read_upload(args.audio.read_bytes(), str(args.audio), 16000)
    except (OSError, ValueError) as exc:
        print(f"speechlab loadcheck: {exc}")
        return 2
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    report = run_load(args.url, audio, clients=args.clients, duration_s=args.seconds, timeout=args.timeout, api_key=key)
    print(report.summary())
    for err in report.errors:
        print(f"  error: {err}")
    if args.json:
        _write_atomic(args.json, json.dumps(asdict(report), indent=2) + "\n")
    return 1 if report.failed or not report.ok else 0



def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, so it is never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
