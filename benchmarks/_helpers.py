"""Shared helpers of the benchmarks: tmp projects, measured subprocess runs, load average."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
SMOKE = ROOT / "fixtures" / "smoke"
BENCH = ROOT / "fixtures" / "bench"

TINY = """\
  {name}:
    backend: faster-whisper
    weights: bundled:tiny.en
    compute_type: int8
    beam_size: 5
    language: en
    devices: [cpu]
{extra}"""


def make_project(root: Path, n_datasets: int, clips: list[str], *, models: dict[str, str] | None = None,
                 rounds: int = 1) -> Path:
    """A user project: ``n_datasets`` datasets, each a copy of the given bundled smoke clips."""
    rows = {json.loads(line)["id"]: json.loads(line) for line in (SMOKE / "manifest.jsonl").read_text().splitlines()}
    ds_yaml = []
    for k in range(n_datasets):
        d = root / "data" / f"d{k:02d}"
        d.mkdir(parents=True)
        with open(d / "manifest.jsonl", "w", encoding="utf-8") as fh:
            for cid in clips:
                shutil.copy(SMOKE / rows[cid]["audio_filepath"], d / rows[cid]["audio_filepath"])
                fh.write(json.dumps(rows[cid]) + "\n")
        ds_yaml.append(f"  d{k:02d}: {{manifest: data/d{k:02d}/manifest.jsonl, normalizer: whisper-en}}")
    models = models or {"fw": ""}
    text = ("models:\n" + "".join(TINY.format(name=n, extra=e) for n, e in models.items())
            + "datasets:\n" + "\n".join(ds_yaml) + f"\ngolden_dir: golden\nrounds: {rounds}\n")
    (root / "speechlab.yaml").write_text(text, encoding="utf-8")
    return root


def run_measured(cmd: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` under maxrss.py; returns rc, wall_s, peak_rss_mb and the output."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT")
    }
    env.update(extra_env or {})
    res = subprocess.run(
        [sys.executable, str(HERE / "maxrss.py"), *cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    stats = json.loads(res.stderr.strip().splitlines()[-1])
    return {**stats, "stdout": res.stdout, "stderr": res.stderr}


def session_cmd(*args: str) -> list[str]:
    """A pytest session command line (the plugin loads through its entry point)."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark", "-q", *args]


# A user's environment, where pytest-speechlab is the only pytest plugin: this repository's dev venv also
# auto-loads hypothesis, anyio, xdist and platformdirs, whose start-up (assertion-rewriting ~150 modules with
# no bytecode cache, hypothesis imported at the terminal summary) costs ~2 s a process and is not the plugin's.
ONLY_SPEECHLAB = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def only_speechlab_cmd(*args: str) -> list[str]:
    """:func:`session_cmd` with pytest-speechlab as the only plugin (use with ``ONLY_SPEECHLAB`` in the env)."""
    return [sys.executable, "-m", "pytest", "-p", "pytest_speechlab.plugin", "-p", "no:cacheprovider", "-q", *args]


def load_average() -> str:
    """The 1/5/15-minute load average, to judge how quiet the machine was."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"
