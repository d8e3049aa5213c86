"""The memory gate (RSS_MB) does not depend on the order of the session.

Two fake backends load the same heavy "runtime" module (a stand-in for torch: 256 MiB, touched, at import).
Whichever model's load imports it first used to be charged for it, so a golden recorded in a full session
(another model imported torch first) failed ``pytest -k <one model>`` by x2.6-3.0.  The session now imports a
backend's ``import_modules`` before it measures what the model's load adds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from _support import tone_dataset

HEAVY = '''
import numpy as np

BLOCK = np.ones(256 * 1024 * 1024 // 8)  # 256 MiB, touched: what importing a big runtime adds to the process
'''

CONFTEST = '''
from pytest_speechlab.backends import register
from pytest_speechlab.backends.base import BaseBackend


class Echo:
    sample_rate = 16000
    decode_settings = {}

    def transcribe(self, audio):
        return "hello world"


class HeavyA(BaseBackend):
    name = "heavy_a"
    tasks = ("asr",)
    devices = ("cpu",)
    speed_reference = None
    import_modules = ("fakeheavy",)

    def load(self, spec, device):
        import fakeheavy  # noqa: F401 - the runtime this backend needs
        return Echo()


class HeavyB(HeavyA):
    name = "heavy_b"


register("heavy_a", "conftest:HeavyA")
register("heavy_b", "conftest:HeavyB")
'''

CONFIG = """
models:
  a:
    backend: heavy_a
    devices: [cpu]
  b:
    backend: heavy_b
    devices: [cpu]
datasets:
  clips:
    manifest: data/manifest.jsonl
    normalizer: basic
rounds: 1
golden_dir: golden
"""


def _memory(p: pytest.Pytester, *args: str) -> dict[str, Any]:
    out = p.path / "run.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:xdist",
         "--benchmark-disable", "--speechlab-json", str(out), *args],
        cwd=p.path, env={**__import__("os").environ, "PYTHONPATH": str(p.path)}, capture_output=True, text=True,
        timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {c["model"]: c["metrics"].get("case_peak_rss_mb") for c in json.loads(out.read_text("utf-8"))["cases"]}


@pytest.mark.real_model
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-case memory is measured on Linux only")
def test_case_memory_does_not_depend_on_which_model_imported_the_runtime_first(pytester: pytest.Pytester) -> None:
    tone_dataset(pytester.path / "data", (1.0,), "hello world")
    pytester.makepyfile(fakeheavy=HEAVY)
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".yaml", speechlab=CONFIG)
    both = _memory(pytester, "--speechlab-update-golden")  # a imports the runtime, then b finds it loaded
    alone = _memory(pytester, "--speechlab-model", "b")  # b alone: b's load would import it
    assert both["a"] is not None and both["b"] is not None and alone["b"] is not None
    # Neither model is charged for the 256 MiB module, whatever ran first ...
    assert max(both["a"], both["b"], alone["b"]) < 128, (both, alone)
    # ... and the model measured alone matches its golden from the full session (the gate passed: rc 0 above).
    assert abs(alone["b"] - both["b"]) < 64, (both, alone)
