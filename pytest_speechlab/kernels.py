"""Which CPU kernels a runtime really uses, for the machine fingerprint (issue 31).

``/proc/cpuinfo`` says what a CPU *can* do; the runtimes pick their kernels themselves, and two machines of one
CPU model can decode differently because of one flag (tiny.en int8 writes "The weather" with oneDNN's AVX2
kernels and "the weather" with its AVX-512 ones).  Environment knobs change the pick on one machine too
(``ONEDNN_MAX_CPU_ISA``, ``CT2_FORCE_CPU_ISA``, ``CT2_USE_MKL``, ``ATEN_CPU_CAPABILITY``), which is how the test
suite emulates another machine class.  So each backend asks its runtime what it selected:

* CTranslate2: its own log (``CT2_VERBOSE=1``: "Selected ISA", the int8/fp32 GEMM backends) and oneDNN's
  (``ONEDNN_VERBOSE=1``: the ISA its JIT kernels target), read from a short probe process that loads the case's
  model and encodes one silent window: about a second, once per machine, runtime version and environment (the
  answer is cached in the speechlab cache folder);
* torch: ``torch.backends.cpu.get_cpu_capability()`` (in-process; torch is already loaded by the backend).

A key the runtime did not report is absent; a probe that failed says so in ``probe_error`` and compares nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .devices import kernel_difference as kernel_difference  # re-exported: the comparison lives with the fingerprint

#: Environment variables that change which kernels a runtime selects, per runtime.
KNOBS: dict[str, tuple[str, ...]] = {
    "ctranslate2": ("CT2_FORCE_CPU_ISA", "CT2_USE_MKL", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
                    "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR"),
    "torch": ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR"),
}

_PROBE = r"""
import sys
import ctranslate2, numpy as np
w = ctranslate2.models.Whisper(sys.argv[1], device="cpu", compute_type=sys.argv[2], intra_threads=1)
x = ctranslate2.StorageView.from_array(np.zeros((1, w.n_mels, 3000), dtype=np.float32))
w.encode(x)
"""

_CT2_LINES = {"Selected ISA:": "ct2_isa", "Use Intel MKL:": "ct2_mkl", "GEMM_S8 backend:": "ct2_gemm_s8",
              "SGEMM backend:": "ct2_sgemm"}


def knobs(runtime: str) -> dict[str, str]:
    """The kernel-selecting environment variables of ``runtime`` that are set in this process."""
    return {k: os.environ[k] for k in KNOBS.get(runtime, ()) if os.environ.get(k)}


def parse_ct2_log(text: str) -> dict[str, str]:
    """What CTranslate2 and oneDNN said they selected, from their verbose logs."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        for marker, key in _CT2_LINES.items():
            if marker in line:
                out[key] = line.split(marker, 1)[1].strip()
        if line.startswith(("onednn_verbose,info,cpu,isa:", "dnnl_verbose,info,cpu,isa:")):
            out["onednn_isa"] = line.split("isa:", 1)[1].strip()
    return out


def _cache_path(key: dict[str, Any]) -> Path:
    from .backends.weights import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "kernels" / f"{digest}.json"


def ctranslate2_kernels(model_dir: str | Path, compute_type: str) -> dict[str, Any]:
    """The kernels CTranslate2 selects on this machine for ``model_dir`` at ``compute_type`` (cached)."""
    from importlib.metadata import version

    from .atomic import atomic_write_text
    from .devices import cpu_flags, cpu_model

    env = knobs("ctranslate2")
    try:
        runtime = f"ctranslate2 {version('ctranslate2')}"
    except Exception:  # noqa: BLE001 - not installed: nothing to probe
        return {}
    key = {"runtime": runtime, "compute_type": compute_type, "cpu": cpu_model(), "flags": list(cpu_flags()),
           "env": env, "model": str(model_dir)}
    path = _cache_path(key)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(cached, dict) and cached.get("key") == key:
            return dict(cached["kernels"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    probe_env = {**os.environ, "CT2_VERBOSE": "1", "ONEDNN_VERBOSE": "1", "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, str(model_dir), compute_type], env=probe_env,
                              capture_output=True, text=True, timeout=120, check=False)
        found = parse_ct2_log(proc.stdout + "\n" + proc.stderr)
        error = None if proc.returncode == 0 and found else (
            f"probe exited {proc.returncode}: " + " ".join((proc.stderr or "").split()[-30:]))
    except (OSError, subprocess.SubprocessError) as exc:
        found, error = {}, f"probe could not run: {exc}"
    kernels: dict[str, Any] = {"runtime": runtime, **found, **({"env": env} if env else {})}
    if error:
        kernels = {"runtime": runtime, "probe_error": error[:300], **({"env": env} if env else {})}
    else:
        atomic_write_text(path, json.dumps({"key": key, "kernels": kernels}, indent=1) + "\n")
    return kernels


def torch_kernels(torch: Any) -> dict[str, Any]:
    """The CPU capability torch's ATen dispatches to (``ATEN_CPU_CAPABILITY`` caps it)."""
    env = knobs("torch")
    out: dict[str, Any] = {"runtime": f"torch {getattr(torch, '__version__', '?')}"}
    try:
        out["torch_cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    except Exception as exc:  # noqa: BLE001 - an old torch: say so, compare nothing
        out["probe_error"] = f"torch.backends.cpu.get_cpu_capability() failed: {exc}"
    if env:
        out["env"] = env
    return out
