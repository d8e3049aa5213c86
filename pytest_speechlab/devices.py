"""Devices: what is really on this machine, "auto" resolution (cuda -> mps -> cpu), and skip reasons.

Nothing here imports torch or ctranslate2 at module import; the probes run once, on first need.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from functools import cache


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


def machine_fingerprint(device: str, threads: int | None = None) -> dict[str, object]:
    """What makes speed comparable: device name, CPU model and thread count."""
    try:
        load1 = round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        load1 = None
    return {
        "device": device,
        "load_avg_1m": load1,  # not part of comparability, but a saturated CPU makes speed meaningless
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads or os.cpu_count(),
    }


def resolve_auto(supported: tuple[str, ...]) -> str:
    """The best device for a backend that supports ``supported``: cuda, then mps, then cpu."""
    for dev in ("cuda", "mps", "cpu", "remote"):
        if dev in supported and available(dev):
            return dev
    return supported[0] if supported else "cpu"
