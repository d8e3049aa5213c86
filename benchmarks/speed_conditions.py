"""Absolute RTF vs relative speed (``speed_rel``) of the bundled models under four (+1) machine conditions, and
whether a real 30% slowdown is caught in each.

    uv run python benchmarks/speed_conditions.py [--models fw-tiny-en piper-joe ow-tiny-en] [--rounds N]

For each model: record a golden in a temp project on the machine as it is (a), then run the gated smoke
case in fresh processes under (a) the same machine, (b) one busy process pinned to CPU 0, (c) the run
pinned to CPU 0 (``taskset -c 0``: half the CPUs), (d) one thread (OMP_NUM_THREADS=1 and, for faster-whisper,
``cpu_threads: 1``: a setting the golden's reference did not run with, so the gate must refuse to compare), and
(e) = (b) + (c), a machine about 4x slower; each once as is and once with a wrapper that sleeps 0.3x each model
call's own duration
(a 30% slowdown of the model's time, invisible in its decode settings).  Prints a markdown table and writes
``benchmarks/speed-conditions.json``.  Linux only (CPU affinity).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent

# A conftest for the temp project: SPEECHLAB_BENCH_SLOWDOWN=0.3 wraps the loaded model's transcribe /
# synthesize with a sleep of 0.3x the call's own duration.
CONFTEST = '''
import os
import time

import pytest

SLOW = float(os.environ.get("SPEECHLAB_BENCH_SLOWDOWN", "0") or 0)

if os.environ.get("SPEECHLAB_BENCH_IGNORE_LOAD"):
    # The benchmark machine is shared: record the golden's speed even though the 1-minute load says
    # saturated (the real load is printed with every row), or every row would read "not compared".
    os.getloadavg = lambda: (0.0, 0.0, 0.0)


def _wrap(fn):
    def slow(*a, **k):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        time.sleep(SLOW * (time.perf_counter() - t0))
        return out
    return slow


def _wrap_stream(fn):
    def slow(*a, **k):
        t0 = time.perf_counter()
        yield from fn(*a, **k)
        time.sleep(SLOW * (time.perf_counter() - t0))
    return slow


if SLOW:
    from pytest_speechlab import session as _s

    _orig = _s.SpeechlabSession.model

    def model(self, spec, device):
        m = _orig(self, spec, device)
        if spec.name == os.environ.get("SPEECHLAB_BENCH_MODEL") and not getattr(m, "_bench_slow", False):
            for name in ("transcribe", "synthesize"):
                if hasattr(m, name):
                    setattr(m, name, _wrap(getattr(m, name)))
            if hasattr(m, "synthesize_stream"):  # Piper streams: the sleep follows the last chunk
                m.synthesize_stream = _wrap_stream(m.synthesize_stream)
            m._bench_slow = True
        return m

    _s.SpeechlabSession.model = model
'''

CONDITIONS = ("a: idle", "b: busy process on CPU 0", "c: taskset -c 0",
              "d: 1 thread (fw cpu_threads: 1; OMP_NUM_THREADS=1)", "e: taskset -c 0 + busy process on CPU 0")


SMOKE = {"asr": "smoke", "tts": "tts_smoke"}


def _project(tmp: Path, model: str, threads: int | None = None) -> str:
    """A temp project with ``model`` on cpu and its smoke dataset only (the README's first command's cases,
    without the perturbed copy); returns the dataset's name.  ``threads``: the model's ``cpu_threads``
    (faster-whisper) for condition (d)."""
    cfg = yaml.safe_load((REPO / "speechlab.yaml").read_text(encoding="utf-8"))
    entry = {**cfg["models"][model], "devices": ["cpu"]}
    task = entry.get("task", "asr")
    if entry.get("speed_reference") == "none":
        # The bundled config reports this model's speed without a gate; the table measures the torch
        # reference anyway, to show why.
        entry["speed_reference"] = "torch"
    if threads is not None and entry["backend"] == "faster-whisper":
        entry["cpu_threads"] = threads
    models = {model: entry}
    judge = cfg.get("judge")
    if task == "tts" and judge:
        models[judge] = {**cfg["models"][judge], "devices": ["cpu"]}
    name = SMOKE[task]
    ds = {k: v for k, v in cfg["datasets"][name].items() if k not in ("thresholds", "perturb")}
    ds["manifest"] = str((REPO / ds["manifest"]).resolve())
    doc = {"models": models, "datasets": {name: ds}, "golden_dir": "golden", "judge": judge if task == "tts" else None,
           "thresholds": {"wer_abs": 1.0, "cer_abs": 1.0, "rss_rel": 10.0}}
    (tmp / "speechlab.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    (tmp / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    return name


@contextmanager
def _busy(on: bool) -> Any:
    proc = None
    if on:
        proc = subprocess.Popen([sys.executable, "-c", "import os\nos.sched_setaffinity(0, {0})\nwhile True: pass"])
        time.sleep(0.5)
    try:
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def _run(tmp: Path, model: str, condition: str, slowdown: float, rounds: int | None,
         update: bool = False) -> dict[str, Any]:
    env = {**os.environ, "SPEECHLAB_BENCH_SLOWDOWN": str(slowdown), "SPEECHLAB_BENCH_MODEL": model}
    cmd = [sys.executable, "-m", "pytest", "speechlab.yaml", "-p", "no:cacheprovider", "-q", "--benchmark-disable",
           "--speechlab-model", model, "-m", "cpu", "--speechlab-json", "run.json"]
    if rounds:
        cmd += ["--speechlab-rounds", str(rounds)]
    if update:
        cmd.append("--speechlab-update-golden")
        env["SPEECHLAB_BENCH_IGNORE_LOAD"] = "1"
    load = round(os.getloadavg()[0], 2)
    if condition[0] in "ce":
        cmd = ["taskset", "-c", "0", *cmd]
    dataset = _project(tmp, model, threads=1 if condition.startswith("d") else None)
    if condition.startswith("d"):
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with _busy(condition[0] in "be"):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900, check=False)
        wall = time.perf_counter() - t0
    _project(tmp, model)  # back to the golden's settings
    cases = json.loads((tmp / "run.json").read_text(encoding="utf-8"))["cases"]
    case = next(c for c in cases if c["model"] == model and c["dataset"] == dataset)
    speed: dict[str, Any] = next((c for c in case.get("checks", []) if c["metric"] == "SPEED"), {})
    m = case.get("metrics") or {}
    return {"condition": condition, "slowdown": slowdown, "rc": proc.returncode, "wall_s": round(wall, 1),
            "case": case.get("case"), "rtf": m.get("rtf"), "speed_rel": m.get("speed_rel"),
            "band": m.get("speed_rel_band"), "rounds": len(m.get("rtf_rounds") or []),
            "speed_status": speed.get("status"), "tolerance": speed.get("tolerance"),
            "reference": (case.get("speed_reference") or {}).get("workload"),
            "ref_total_s": (case.get("speed_reference") or {}).get("total_s"),
            "load_avg_1m": load,
            "usable_cpus": (case.get("machine") or {}).get("usable_cpus"),
            "tail": "" if proc.returncode in (0, 1) else proc.stdout[-2000:] + proc.stderr[-2000:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["fw-tiny-en", "piper-joe", "ow-tiny-en"])
    ap.add_argument("--rounds", type=int, default=None, help="timed passes (default: the plugin's adaptive rounds)")
    args = ap.parse_args()
    known = yaml.safe_load((REPO / "speechlab.yaml").read_text(encoding="utf-8"))["models"]
    unknown = [m for m in args.models if m not in known or known[m].get("task", "asr") not in SMOKE]
    if unknown:
        ap.error(f"--models {' '.join(unknown)}: not an ASR or TTS model of speechlab.yaml ({', '.join(known)})")
    rows: list[dict[str, Any]] = []
    for model in args.models:
        with tempfile.TemporaryDirectory(prefix=f"speed-{model}-") as d:
            tmp = Path(d)
            _project(tmp, model)
            golden = _run(tmp, model, "a: idle", 0.0, args.rounds, update=True)
            golden.update(model=model, condition="golden (a)")
            rows.append(golden)
            print(json.dumps(golden), flush=True)
            for cond in CONDITIONS:
                for slow in (0.0, 0.3):
                    r = _run(tmp, model, cond, slow, args.rounds)
                    r["model"] = model
                    r["rtf_x"] = r["rtf"] / golden["rtf"] if r["rtf"] and golden["rtf"] else None
                    r["rel_x"] = (r["speed_rel"] / golden["speed_rel"]
                                  if r["speed_rel"] and golden["speed_rel"] else None)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    out = REPO / "benchmarks" / "speed-conditions.json"
    # The rows of models not measured this time are kept (each row says when its model was measured).
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for r in rows:
        r["measured"] = stamp
    kept: list[dict[str, Any]] = []
    if out.exists():
        try:
            old = json.loads(out.read_text(encoding="utf-8"))
            kept = [{"measured": old.get("created"), **r}
                    for r in old.get("rows", []) if r.get("model") not in args.models]
        except (json.JSONDecodeError, AttributeError):
            print(f"{out}: not valid JSON; rewritten with this run's rows only", file=sys.stderr)
    from pytest_speechlab.atomic import atomic_write_text

    atomic_write_text(out, json.dumps({"created": stamp, "rows": kept + rows}, indent=2) + "\n")
    print("\n| model (reference) | condition | 30% slower | RTF | RTF vs golden | speed_rel vs golden | band | "
          "speed verdict | load 1m |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["condition"].startswith("golden"):
            continue

        def fx(x: float | None, fmt: str = ".2f", unit: str = "x") -> str:
            return "-" if x is None else f"{x:{fmt}}{unit}"

        print(
            f"| {r['model']} ({r['reference']}) | {r['condition']} | {'yes' if r['slowdown'] else 'no'} | "
            f"{fx(r['rtf'], '.4f', '')} | {fx(r['rtf_x'])} | {fx(r['rel_x'])} | {fx(r['band'], '.2f', '')} | "
            f"{r['speed_status']} {r['tolerance']} | "
            f"{r['load_avg_1m']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
