"""Devices: what is really on this machine, "auto" resolution (cuda -> mps -> cpu), and skip reasons.

Nothing here imports torch or ctranslate2 at module import; the probes run once, on first need.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any


@cache
def _torch_probe() -> dict[str, object] | None:
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    mps = getattr(torch.backends, "mps", None)
    return {
        "version": torch.__version__,
        "cuda": bool(torch.cuda.is_available()),
        "cuda_count": int(torch.cuda.device_count()) if torch.cuda.is_available() else 0,
        "cuda_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # Kernels are chosen by compute capability (fp16/bf16/int8 tensor cores), not by the GPU's marketing name.
        "cuda_capability": (".".join(str(v) for v in torch.cuda.get_device_capability(0))
                            if torch.cuda.is_available() else None),
        "cuda_build": torch.version.cuda,
        "mps": bool(mps is not None and mps.is_available()),
        "mps_built": bool(mps is not None and mps.is_built()),
    }


@cache
def _ct2_cuda_count() -> int | None:
    if importlib.util.find_spec("ctranslate2") is None:
        return None
    import ctranslate2

    try:
        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # noqa: BLE001 - no CUDA runtime at all counts as zero devices
        return 0


def unavailable_reason(device: str) -> str | None:
    """Why ``device`` is not on this machine, or None when it is."""
    if device in ("cpu", "remote"):
        return None
    probe = _torch_probe()
    if device == "cuda":
        if probe is not None:
            if probe["cuda"]:
                return None
            build = probe["cuda_build"]
            return (f"cuda not available: torch {probe['version']} reports no CUDA device"
                    + (f" (built for CUDA {build}; no NVIDIA GPU or driver visible)" if build else " (CPU-only build)"))
        count = _ct2_cuda_count()
        if count:
            return None
        if count is None:
            return "cuda not available: neither torch nor ctranslate2 is installed to detect a GPU"
        return "cuda not available: ctranslate2 reports 0 CUDA devices"
    if device == "mps":
        if platform.system() != "Darwin":
            return f"mps not available: Apple GPUs (MPS) exist only on macOS, this is {platform.system()}"
        if probe is None:
            return "mps not available: torch is not installed (install an extra that needs torch)"
        if probe["mps"]:
            return None
        return f"mps not available: torch {probe['version']} reports MPS unavailable (built: {probe['mps_built']})"
    return f"unknown device {device!r}"


def device_name(device: str) -> str:
    """A human name of the hardware behind ``device`` (GPU name, CPU model)."""
    if device == "cuda":
        probe = _torch_probe()
        if probe and probe["cuda_name"]:
            return str(probe["cuda_name"])
        return "CUDA device"
    if device == "mps":
        return f"Apple GPU ({platform.machine()})"
    if device == "remote":
        return "remote service"
    return cpu_model()


@cache
def cpu_model() -> str:
    """The CPU model string (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
                "amx_int8", "amx_bf16", "neon", "asimd", "sve")


@cache
def cpu_flags() -> tuple[str, ...]:
    """The CPU features that change which int8/fp32 kernels CTranslate2, ONNX Runtime and torch pick
    (AVX2, AVX-512, VNNI, AMX...), from /proc/cpuinfo; empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    have = set(line.split(":", 1)[1].split())
                    return tuple(f for f in KERNEL_FLAGS if f in have)
    except OSError:
        pass
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return ("neon",)
    return ()


def _cgroup_quota_cpus() -> float | None:
    """CPUs allowed by a cgroup CPU quota (v2 cpu.max, v1 cfs_quota/period), None when unlimited/unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="utf-8").split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text(encoding="utf-8"))
        per = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text(encoding="utf-8"))
        return q / per if q > 0 and per > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """The CPUs this process may really use: its affinity mask (``taskset``) capped by a cgroup CPU quota
    (containers), not ``os.cpu_count()`` which sees every CPU of the host."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota_cpus()
    if quota is not None:
        n = max(1, min(n, int(quota + 0.999)))
    return n


def machine_fingerprint(
    device: str, threads: int | None = None, kernels: dict[str, Any] | None = None
) -> dict[str, object]:
    """What makes speed and kernels comparable: device name, CPU model and the features that select
    kernels, usable CPUs (affinity + cgroup quota), threads; plus the 1-minute load of the moment.
    ``kernels``: what the backend's runtime says it selected (kernels.py), when it could tell."""
    try:
        load1 = round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        load1 = None
    usable = usable_cpus()
    return {
        "device": device,
        "load_avg_1m": load1,  # not part of comparability; a saturated CPU makes a recorded speed untrustworthy
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cpu_flags": list(cpu_flags()),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "threads": threads or usable,
        **({"gpu_capability": gpu_capability()} if device == "cuda" and gpu_capability() else {}),
        **({"kernels": kernels} if kernels else {}),
    }


def gpu_capability() -> str | None:
    """The CUDA compute capability of GPU 0 ("9.0" on an H100/H200), when torch can tell."""
    probe = _torch_probe()
    cap = probe.get("cuda_capability") if probe else None
    return str(cap) if cap else None


#: The keys of a ``kernels`` block (kernels.py) that say which kernels ran; ``env`` and ``runtime`` are context.
SELECTED_KERNEL_KEYS = ("ct2_isa", "ct2_mkl", "ct2_gemm_s8", "ct2_sgemm", "onednn_isa", "torch_cpu_capability")


def kernel_difference(golden: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """How two ``kernels`` blocks differ in what ran: one phrase per key both report, empty when they agree."""
    out = []
    for key in SELECTED_KERNEL_KEYS:
        g, n = golden.get(key), now.get(key)
        if g is not None and n is not None and g != n:
            out.append(f"{key.replace('_', ' ')}: golden {g!r}, now {n!r}")
    if out and isinstance(now.get("env"), dict) and now["env"]:
        out[-1] += " (set here: " + ", ".join(f"{k}={v}" for k, v in now["env"].items()) + ")"
    return out


MACHINE_CLASS_KEYS = ("device_name", "gpu_capability", "cpu_model", "cpu_flags", "kernels")


def machine_difference(golden: dict[str, object], now: dict[str, object]) -> list[str]:
    """How two fingerprints differ in what changes kernels (device, CPU model, CPU features): one phrase
    per difference, empty when they are the same class (keys a golden predates are not compared)."""
    out: list[str] = []
    for key in MACHINE_CLASS_KEYS:
        g, n = golden.get(key), now.get(key)
        if g is None or n is None or g == n:
            continue
        if key == "cpu_flags" and isinstance(g, list) and isinstance(n, list):
            only_g, only_n = sorted(set(g) - set(n)), sorted(set(n) - set(g))
            parts = ([f"golden machine has {', '.join(only_g)}"] if only_g else []) + (
                [f"this one has {', '.join(only_n)}"] if only_n else [])
            out.append("CPU features differ: " + "; ".join(parts))
        elif key == "kernels":
            if isinstance(g, dict) and isinstance(n, dict):
                out.extend(f"kernels differ: {d}" for d in kernel_difference(g, n))
        else:
            out.append(f"{key.replace('_', ' ')}: golden {g!r}, now {n!r}")
    return out


# ---- probes: "available" means a tiny operation really ran on the device through the backend's runtime --

def probe_torch(device: str, torch: Any) -> str | None:
    """Run a tiny op on ``device`` through ``torch``; None when it ran, else why not (the error named).

    GitHub's macOS arm64 runners report ``torch.backends.mps.is_available() == True`` and then fail the
    first allocation ("MPS backend out of memory (MPS allocated: 0 bytes ...)"): only running something tells."""
    try:
        x = torch.ones(4, device=device)
        y = float((x * 2).sum().cpu().item())
    except Exception as exc:  # noqa: BLE001 - any runtime error means the device is not usable here
        msg = " ".join(str(exc).split())[:300]
        return (f"{device} probe failed: torch {getattr(torch, '__version__', '?')} reports {device} available, "
                f"but a 4-element tensor could not be created and summed on it ({type(exc).__name__}: {msg})")
    if y != 8.0:
        return f"{device} probe failed: torch computed {y} for 2 x ones(4) on {device} (expected 8.0)"
    return None


CUBLAS_12 = "libcublas.so.12"


def probe_ctranslate2_cuda(ct2: Any, load_library: Callable[[str], Any]) -> str | None:
    """CTranslate2 on cuda: a visible GPU, and the cuBLAS 12 library its wheels are built against.

    The locked torch brings CUDA 13 libraries, so a GPU box can see the GPU and still lack cuBLAS 12;
    CTranslate2 then fails at the first GEMM.  ``load_library`` is :func:`ctypes.CDLL` (a parameter so
    the probe can be tested without a GPU)."""
    version = getattr(ct2, "__version__", "?")
    try:
        count = int(ct2.get_cuda_device_count())
    except Exception as exc:  # noqa: BLE001 - no CUDA runtime at all counts as zero devices
        return f"cuda probe failed: ctranslate2 {version} cannot query CUDA devices ({exc})"
    if count < 1:
        return f"cuda not available: ctranslate2 {version} reports 0 CUDA devices"
    try:
        load_library(CUBLAS_12)
    except OSError as exc:
        return (f"cuda probe failed: ctranslate2 {version} needs cuBLAS 12 ({CUBLAS_12}), which cannot be loaded "
                f"({exc}); install it with `uv add nvidia-cublas-cu12` (pip install nvidia-cublas-cu12) and put its "
                "lib folder on LD_LIBRARY_PATH, or install the CUDA 12 toolkit")
    return None


def probe_onnxruntime_cuda(ort: Any) -> str | None:
    """ONNX Runtime on cuda: the CUDAExecutionProvider must be in this build."""
    providers = list(ort.get_available_providers())
    if "CUDAExecutionProvider" not in providers:
        return (f"cuda not available to onnxruntime {getattr(ort, '__version__', '?')}: no CUDAExecutionProvider "
                f"(it has {', '.join(providers)}); install onnxruntime-gpu")
    return None


def _run_probe(runtime: str, device: str) -> str | None:
    import importlib

    if runtime == "torch":
        if importlib.util.find_spec("torch") is None:
            return f"{device} not available: torch is not installed (install an extra that needs torch)"
        return probe_torch(device, importlib.import_module("torch"))
    if runtime == "ctranslate2" and device == "cuda":
        if importlib.util.find_spec("ctranslate2") is None:
            return "cuda not available: ctranslate2 is not installed (faster-whisper extra)"
        import ctypes

        return probe_ctranslate2_cuda(importlib.import_module("ctranslate2"), ctypes.CDLL)
    if runtime == "onnxruntime" and device == "cuda":
        if importlib.util.find_spec("onnxruntime") is None:
            return "cuda not available: onnxruntime is not installed (tts extra)"
        return probe_onnxruntime_cuda(importlib.import_module("onnxruntime"))
    return None


# (runtime, device) -> probe; tests replace entries to stand in for hardware this machine lacks.
PROBES: dict[tuple[str, str], Callable[[], str | None]] = {
    (rt, dev): functools.partial(_run_probe, rt, dev)
    for rt in ("torch", "ctranslate2", "onnxruntime") for dev in ("cuda", "mps")
}
_PROBED: dict[tuple[str, str], str | None] = {}


def probe(runtime: str | None, device: str) -> str | None:
    """Why ``device`` cannot be used through ``runtime`` (None: a tiny op ran).  The machine-level check
    (:func:`unavailable_reason`) comes first, so a probe never imports a runtime for a device that is not
    there; each (runtime, device) is probed once per process."""
    reason = unavailable_reason(device)
    if reason or runtime is None or device in ("cpu", "remote"):
        return reason
    key = (runtime, device)
    if key not in _PROBED:
        fn = PROBES.get(key)
        _PROBED[key] = fn() if fn is not None else None
    return _PROBED[key]


@dataclass(frozen=True)
class Resolved:
    """The device a case runs on, or why it cannot run here (``device`` is then the one requested)."""

    device: str
    reason: str | None = None


def resolve(requested: str, supported: tuple[str, ...], runtime: str | None = None) -> Resolved:
    """The one place that decides devices: ``auto`` -> the first of cuda, mps, cpu that ``supported``
    lists and whose probe runs; a named device -> itself, with the reason when the backend does not
    support it or its probe fails."""
    if requested == "auto":
        for dev in ("cuda", "mps", "cpu", "remote"):
            if dev in supported and probe(runtime, dev) is None:
                return Resolved(dev)
        return Resolved(supported[0] if supported else "cpu", "no device in " + ", ".join(supported) + " is usable "
                                                                                                       "here")
    if requested not in supported:
        return Resolved(requested, f"no {requested} support in this backend (it runs on {', '.join(supported)})")
    return Resolved(requested, probe(runtime, requested))


def resolve_auto(supported: tuple[str, ...], runtime: str | None = None) -> str:
    """The best device for a backend that supports ``supported``: cuda, then mps, then cpu."""
    return resolve("auto", supported, runtime).device


def pick(requested: str, supported: tuple[str, ...], runtime: str | None = None) -> str:
    """The one device a single test runs on (the fixtures ``speech_device``, ``asr_eval``, ``tts_eval``):
    ``auto`` (and ``all``, which names no single device) -> :func:`resolve_auto`; any other name -> itself."""
    return resolve_auto(supported, runtime) if requested in ("auto", "all") else requested
