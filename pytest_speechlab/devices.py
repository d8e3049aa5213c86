"""Devices: what is really on this machine, "auto" resolution (cuda -> mps -> cpu), and skip reasons.

Nothing here imports torch or ctranslate2 at module import; the probes run once, on first need.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from functools import cache
from pathlib import Path


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


def available(device: str) -> bool:
    """Whether ``device`` is on this machine."""
    return unavailable_reason(device) is None


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


def machine_fingerprint(device: str, threads: int | None = None) -> dict[str, object]:
    """What makes speed and kernels comparable: device name, CPU model and the features that select
    kernels, usable CPUs (affinity + cgroup quota), threads; plus the 1-minute load of the moment."""
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
    }


MACHINE_CLASS_KEYS = ("device_name", "cpu_model", "cpu_flags")


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
        else:
            out.append(f"{key.replace('_', ' ')}: golden {g!r}, now {n!r}")
    return out


def resolve_auto(supported: tuple[str, ...]) -> str:
    """The best device for a backend that supports ``supported``: cuda, then mps, then cpu."""
    for dev in ("cuda", "mps", "cpu", "remote"):
        if dev in supported and available(dev):
            return dev
    return supported[0] if supported else "cpu"
