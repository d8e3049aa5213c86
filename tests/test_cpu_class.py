"""Any x86 CPU class (issue 31): the fingerprint names the kernels a runtime really selected, and the tests
that depend on a model's exact output hold when the kernels are those of another class.

A test cannot own another machine, but it can make this one select another class's kernels: oneDNN (which
CTranslate2 uses for int8 on AMD) honours ``ONEDNN_MAX_CPU_ISA``; with ``AVX2`` tiny.en writes "The weather ..."
here, as the VM class with ``avx_vnni`` does, where the bundled golden (recorded on this class) says "the
weather ...".  The guard below runs the model-output tests (marker ``model_output``) and the bundled smoke case
under that emulation, so a new test that hard-codes this machine's transcript fails here first.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _support import FW_MISSING, inner_env

from pytest_speechlab.devices import machine_difference
from pytest_speechlab.kernels import KNOBS, kernel_difference, parse_ct2_log

REPO = Path(__file__).resolve().parent.parent
EMULATE = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
#: Every kernel-selecting variable: a suite that itself runs emulated (CT2_USE_MKL=1 ...) must not leak it into the
#: subprocesses that compare "here" with the emulated class.
ALL_KNOBS = {k for knobs in KNOBS.values() for k in knobs}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in inner_env().items() if k not in ALL_KNOBS}
    env.update(extra)
    return env

CT2_LOG = """\
[ct2] [info] CPU: AuthenticAMD (SSE4.1=true, AVX=true, AVX2=true)
[ct2] [info]  - Selected ISA: AVX2
[ct2] [info]  - Use Intel MKL: false
[ct2] [info]  - SGEMM backend: DNNL (packed: false)
[ct2] [info]  - GEMM_S8 backend: DNNL (packed: false, u8s8 preferred: true)
onednn_verbose,info,cpu,runtime:OpenMP,nthr:2
onednn_verbose,info,cpu,isa:Intel AVX-512 with Intel DL Boost and bfloat16 support
onednn_verbose,exec,cpu,reorder,jit:uni,undef,src_f32::blocked:abc:f0 dst_f32::blocked:acb:f0,,,1x80x3000,0.67
"""


def test_ct2_and_onednn_logs_are_read() -> None:
    assert parse_ct2_log(CT2_LOG) == {
        "ct2_isa": "AVX2", "ct2_mkl": "false", "ct2_sgemm": "DNNL (packed: false)",
        "ct2_gemm_s8": "DNNL (packed: false, u8s8 preferred: true)",
        "onednn_isa": "Intel AVX-512 with Intel DL Boost and bfloat16 support",
    }


def test_a_kernel_difference_is_a_machine_class_difference() -> None:
    here = {"cpu_model": "AMD EPYC", "kernels": {"runtime": "ctranslate2 4.8.5", "onednn_isa": "Intel AVX-512"}}
    there = {"cpu_model": "AMD EPYC", "kernels": {"runtime": "ctranslate2 4.8.5", "onednn_isa": "Intel AVX2",
                                                  "env": {"ONEDNN_MAX_CPU_ISA": "AVX2"}}}
    assert machine_difference(here, there) == [
        "kernels differ: onednn isa: golden 'Intel AVX-512', now 'Intel AVX2' (set here: ONEDNN_MAX_CPU_ISA=AVX2)"]
    assert machine_difference(here, here) == []
    # a golden that predates the key, or a probe that failed, compares nothing
    assert machine_difference({"cpu_model": "AMD EPYC"}, there) == []
    assert kernel_difference({"probe_error": "probe exited 1"}, there["kernels"]) == []


@pytest.mark.real_model
@pytest.mark.skipif(FW_MISSING is not None, reason=f"needs the faster-whisper extra: {FW_MISSING}")
def test_the_probe_reports_what_ctranslate2_selected_under_an_emulated_class(tmp_path: Path) -> None:
    """The real probe, here and with oneDNN capped at AVX2 (fresh cache folders: no cached answer)."""
    code = ("import json; from pytest_speechlab.kernels import ctranslate2_kernels; "
            "from pytest_speechlab.backends.weights import bundled_ct2_dir; "
            "print(json.dumps(ctranslate2_kernels(bundled_ct2_dir('tiny.en'), 'int8')))")
    out = {}
    for name, extra in (("here", {}), ("avx2", EMULATE)):
        env = _clean_env(SPEECHLAB_CACHE=str(tmp_path / name), **extra)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                              check=False)
        assert proc.returncode == 0, proc.stderr
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["here"]["ct2_isa"] and out["here"]["onednn_isa"], out
    assert out["avx2"]["onednn_isa"] == "Intel AVX2" and out["avx2"]["env"] == EMULATE, out
    diff = kernel_difference(out["here"], out["avx2"])
    assert out["here"]["onednn_isa"] == "Intel AVX2" or any(d.startswith("onednn isa:") for d in diff), diff
    cached = list((tmp_path / "avx2" / "kernels").glob("*.json"))
    assert len(cached) == 1  # once per machine, runtime and environment


@pytest.mark.real_model
@pytest.mark.skipif(FW_MISSING is not None, reason=f"needs the faster-whisper extra: {FW_MISSING}")
def test_model_output_tests_and_the_smoke_goldens_hold_on_an_emulated_cpu_class(tmp_path: Path) -> None:
    """The guard: the tests marked ``model_output`` and the bundled fw smoke case, in a pytest process whose
    oneDNN kernels are another class's.  The smoke case must pass through the cross-machine rule (its
    transcript of smoke-01 changes case: "The weather"), naming the kernel difference, with speed not compared."""
    record = tmp_path / "run.json"
    env = _clean_env(**EMULATE)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "model_output or smoke",
           "-k", "model_output or fw-tiny-en-cpu-smoke and not snr", "--speechlab-json", str(record),
           "--speechlab-rounds", "1", "tests", "speechlab.yaml"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=900, check=False)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    case = next(c for c in json.loads(record.read_text())["cases"] if c["case"] == "fw-tiny-en-cpu-smoke")
    assert case["verdict"] == "pass", tail
    assert any(d.startswith("kernels differ: onednn isa:") for d in case["machine_difference"]), case
    assert case["machine"]["kernels"]["env"] == EMULATE
    speed = next(c for c in case["checks"] if c["metric"] == "SPEED")
    assert speed["status"] == "not-compared" and "other hardware" in speed["note"]
    first = next(u for u in case["utterances"] if u["id"] == "smoke-01")
    assert first["hypothesis"].startswith("The weather"), first  # the emulation took effect
