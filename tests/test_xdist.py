"""pytest-xdist done right: same records with and without xdist, one model load per worker and device,
goldens written once by the controller, loadgroup by default, RTF gate off under several workers, and the
grouping / GPU-pinning logic (unit tests with a fake GPU count: this machine has no GPU).

The sessions are real pytest processes (plain, ``-n 0``, ``-n 2``) on a small project made in a tmp folder
(2 models x 2 datasets of 2 bundled smoke clips, 1 timed round) whose models run on the fake backend of
tests/_fake.py: what is judged here is the plugin's process layout (records, loads per worker, who writes
goldens), not a model, so no worker spends seconds loading one (issue 26). Real models under ``-n 2`` are
covered by test_plugin_core's golden lifecycle and test_shard_merge.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _fake import install_fake_backend
from _support import inner_env

from pytest_speechlab.golden import read_golden
from pytest_speechlab.session import Case
from pytest_speechlab.xdist_support import (
    case_scope,
    dist_given_explicitly,
    gpu_for_worker,
    group_names,
    pin_worker,
    visible_gpu_ids,
    worker_index,
)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "fixtures" / "smoke"
CLIPS = ("smoke-02", "smoke-04")  # the two shortest bundled clips (about 2 s each)

try:
    import xdist  # noqa: F401

    HAVE_XDIST = True
except ImportError:  # pragma: no cover - xdist is in the dev group
    HAVE_XDIST = False

needs_xdist = pytest.mark.skipif(
    not HAVE_XDIST, reason="pytest-xdist is not installed (uv sync installs the dev group)"
)

# Fields that legitimately differ between two runs of the same cases: timings, memory, where it ran.
TIMING_METRICS = (
    "rtf",
    "rtf_rounds",
    "latency_p50_s",
    "latency_p95_s",
    "peak_rss_mb",
    "cuda_peak_mb",
    "load_seconds",
    "speed_rel",
    "speed_rel_band",
    "case_peak_rss_mb",
)
VOLATILE_CASE_KEYS = ("provenance", "xdist_worker", "gpu", "speed_reference")


CONFIG = (
    "models:\n"
    "  fw-a: {backend: fake, say: the birds sing at dawn, devices: [cpu]}\n"
    "  fw-b: {backend: fake, say: the sun is up, beam_size: 1, devices: [cpu]}\n"
    + """\
datasets:
  one: {manifest: data/one/manifest.jsonl, normalizer: whisper-en}
  two: {manifest: data/two/manifest.jsonl, normalizer: whisper-en}
golden_dir: golden
rounds: 1
"""
)

# Logs every golden write with the process that did it (controller or xdist worker).
SPY_CONFTEST = """\
import os
import pytest_speechlab.session as _s

_orig = _s.write_golden

def _spy(golden_dir, path, data):
    with open(os.environ["SPEECHLAB_WRITE_LOG"], "a", encoding="utf-8") as fh:
        fh.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'controller')}\\t{os.getpid()}\\t{path}\\n")
    return _orig(golden_dir, path, data)

_s.write_golden = _spy
"""


def make_project(root: Path, config: str = CONFIG, datasets: tuple[str, ...] = ("one", "two")) -> Path:
    """A user project: speechlab.yaml + datasets of bundled clips (copied, so paths stay inside)."""
    rows = {json.loads(line)["id"]: json.loads(line) for line in (SMOKE / "manifest.jsonl").read_text().splitlines()}
    for ds in datasets:
        d = root / "data" / ds
        d.mkdir(parents=True)
        with open(d / "manifest.jsonl", "w", encoding="utf-8") as fh:
            for cid in CLIPS:
                row = rows[cid]
                shutil.copy(SMOKE / row["audio_filepath"], d / row["audio_filepath"])
                fh.write(json.dumps(row) + "\n")
    (root / "speechlab.yaml").write_text(config, encoding="utf-8")
    install_fake_backend(root)
    return root


def run_pytest(
    project: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """pytest in a subprocess in ``project`` (the plugin loads through its entry point)."""
    full_env = inner_env(**(env or {}))  # without the outer session's PYTEST_ADDOPTS / xdist worker variables
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", *args],
        cwd=project,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def comparable(case: dict[str, Any]) -> dict[str, Any]:
    """A case record without what may differ between runs of the same code on the same machine."""
    c = {k: v for k, v in case.items() if k not in VOLATILE_CASE_KEYS}
    c["metrics"] = {k: v for k, v in (c.get("metrics") or {}).items() if k not in TIMING_METRICS}
    # the machine is the same; its load at the moment the case ran is not
    c["machine"] = {k: v for k, v in (c.get("machine") or {}).items() if k != "load_avg_1m"}
    c["utterances"] = [{k: v for k, v in u.items() if k != "seconds"} for u in c.get("utterances") or []]
    c["checks"] = [
        ch if ch["metric"] not in ("RTF", "SPEED", "RSS_MB", "GPU_MB") else {**ch, "obtained": None, "note": None}
        for ch in c.get("checks") or []
    ]
    c["golden_metrics"] = {k: v for k, v in (c.get("golden_metrics") or {}).items() if k not in TIMING_METRICS}
    return c


# The three ways every behaviour below is run: plain pytest (xdist not loaded), -n 0, -n 2.
MODES = {"no-xdist": ["-p", "no:xdist"], "n0": ["-n", "0"], "n2": ["-n", "2"]}


@pytest.fixture(params=list(MODES), ids=list(MODES))
def plugin_args(request: pytest.FixtureRequest) -> list[str]:
    """Extra pytest arguments for one of the three ways a session runs: no xdist, ``-n 0``, ``-n 2``."""
    if request.param != "no-xdist" and not HAVE_XDIST:
        pytest.skip("pytest-xdist is not installed (uv sync installs the dev group)")
    return list(MODES[request.param])


@pytest.fixture(scope="module")
def blessed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A project whose goldens were written by one ``-n 2 --speechlab-update-golden`` session (RTF gate auto),
    with every golden write logged by process."""
    if not HAVE_XDIST:
        pytest.skip("pytest-xdist is not installed (uv sync installs the dev group)")
    project = make_project(tmp_path_factory.mktemp("xdist-project"))
    install_fake_backend(project, SPY_CONFTEST)
    log = project / "writes.log"
    res = run_pytest(
        project,
        "-n",
        "2",
        "--speechlab-update-golden",
        "--speechlab-json",
        "update.json",
        env={"SPEECHLAB_WRITE_LOG": str(log)},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return {
        "project": project,
        "stdout": res.stdout,
        "log": log,
        "record": json.loads((project / "update.json").read_text(encoding="utf-8")),
    }


@pytest.fixture(scope="module")
def mode_records(blessed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The run record of the same gated session in each of the three modes (RTF gate off in all, so that
    the verdicts depend on accuracy only and must agree)."""
    out = {}
    for mode, args in MODES.items():
        res = run_pytest(blessed["project"], *args, "--speechlab-rtf-gate", "off", "--speechlab-json", f"{mode}.json")
        assert res.returncode == 0, f"{mode}:\n{res.stdout}{res.stderr}"
        out[mode] = json.loads((blessed["project"] / f"{mode}.json").read_text(encoding="utf-8"))
    return out


EXPECTED_CASES = ["fw-a-cpu-one", "fw-a-cpu-two", "fw-b-cpu-one", "fw-b-cpu-two"]


@pytest.mark.slow
@needs_xdist
def test_records_identical_in_all_modes_apart_from_timings(mode_records: dict[str, dict[str, Any]]) -> None:
    base = mode_records["no-xdist"]
    assert [c["case"] for c in base["cases"]] == EXPECTED_CASES
    assert all(c["verdict"] == "pass" for c in base["cases"]), [c.get("verdict") for c in base["cases"]]
    for mode in ("n0", "n2"):
        other = mode_records[mode]
        assert [comparable(c) for c in other["cases"]] == [comparable(c) for c in base["cases"]], mode
    # the records really come from different process layouts
    assert {c.get("xdist_worker") for c in mode_records["n2"]["cases"]} <= {"gw0", "gw1"}
    assert all(c.get("xdist_worker") is None for c in mode_records["n0"]["cases"])


@pytest.mark.slow
@needs_xdist
def test_each_worker_loads_a_model_once_per_device(mode_records: dict[str, dict[str, Any]]) -> None:
    for mode in ("no-xdist", "n0"):
        assert mode_records[mode]["settings"]["model_loads"] == {"fw-a@cpu": 1, "fw-b@cpu": 1}, mode
    xd = mode_records["n2"]["settings"]["xdist"]
    per_worker = xd["loads_by_worker"]
    assert set(per_worker) == {"gw0", "gw1"}
    for worker, loads in per_worker.items():
        assert all(n == 1 for n in loads.values()), (worker, loads)
    # two models, two workers: loadgroup keeps each model on one worker, so each is loaded once in all
    assert mode_records["n2"]["settings"]["model_loads"] == {"fw-a@cpu": 1, "fw-b@cpu": 1}
    by_model: dict[str, set[str]] = {}
    for c in mode_records["n2"]["cases"]:
        by_model.setdefault(c["model"], set()).add(c["xdist_worker"])
    assert all(len(ws) == 1 for ws in by_model.values()), by_model


@pytest.mark.slow
@needs_xdist
def test_loadgroup_is_the_default_under_n(mode_records: dict[str, dict[str, Any]]) -> None:
    xd = mode_records["n2"]["settings"]["xdist"]
    assert xd["dist"] == "loadgroup" and xd.get("dist_defaulted") is True
    assert xd["groups"] == {
        "fw-a-cpu-one": "fw-a:cpu",
        "fw-a-cpu-two": "fw-a:cpu",
        "fw-b-cpu-one": "fw-b:cpu",
        "fw-b-cpu-two": "fw-b:cpu",
    }
    assert mode_records["n2"]["settings"]["xdist_workers"] == 2
    assert mode_records["no-xdist"]["settings"]["xdist"] == {}


@pytest.mark.slow
@needs_xdist
def test_goldens_written_once_by_the_controller_and_valid(blessed: dict[str, Any]) -> None:
    project: Path = blessed["project"]
    writes = [line.split("\t") for line in blessed["log"].read_text(encoding="utf-8").splitlines()]
    paths = [w[2] for w in writes]
    assert sorted(paths) == sorted(
        str(project / "golden" / m / d / "cpu.json") for m in ("fw-a", "fw-b") for d in ("one", "two")
    )
    assert len(set(paths)) == len(paths), "a golden was written twice"
    assert {w[0] for w in writes} == {"controller"}, "an xdist worker wrote a golden"
    assert len({w[1] for w in writes}) == 1
    for p in paths:
        g = read_golden(Path(p))
        assert g is not None and g["metrics"]["wer"] >= 0 and len(g["utterances"]) == 2
    leftovers = [
        p
        for p in (project / "golden").rglob("*")
        if p.is_file() and p.suffix != ".json" and p.name != ".speechlab.lock"
    ]
    assert leftovers == []
    assert blessed["stdout"].count("golden written:") == 4
    # the workers' results reached the controller: every case is in the record, written once
    assert [c["case"] for c in blessed["record"]["cases"]] == EXPECTED_CASES
    assert all(c["verdict"] == "accepted" for c in blessed["record"]["cases"])


@pytest.mark.slow
@needs_xdist
def test_rtf_gate_auto_off_with_two_workers_recorded_and_said(blessed: dict[str, Any]) -> None:
    settings = blessed["record"]["settings"]
    assert settings["rtf_gate"] is False and settings["xdist_workers"] == 2
    assert any("RTF gate off: 2 xdist workers" in n for n in settings["notes"])
    assert "note: RTF gate off: 2 xdist workers" in blessed["stdout"]


@pytest.mark.slow
@needs_xdist
def test_rtf_gate_forced_on_under_xdist_is_said_noisy(blessed: dict[str, Any]) -> None:
    # -k deselects every case: the session still starts both workers and writes its settings
    res = run_pytest(
        blessed["project"],
        "-n",
        "2",
        "-k",
        "no_such_case",
        "--speechlab-rtf-gate",
        "on",
        "--speechlab-json",
        "forced.json",
    )
    assert res.returncode == 5, res.stdout + res.stderr
    settings = json.loads((blessed["project"] / "forced.json").read_text(encoding="utf-8"))["settings"]
    assert settings["rtf_gate"] is True
    assert any("timings are noisy" in n for n in settings["notes"])


@pytest.mark.slow
@needs_xdist
def test_explicit_dist_is_respected(blessed: dict[str, Any]) -> None:
    res = run_pytest(
        blessed["project"], "-n", "2", "--dist", "load", "-k", "no_such_case", "--speechlab-json", "load.json"
    )
    assert res.returncode == 5, res.stdout + res.stderr
    xd = json.loads((blessed["project"] / "load.json").read_text(encoding="utf-8"))["settings"]["xdist"]
    assert xd["dist"] == "load" and "dist_defaulted" not in xd


@pytest.mark.slow
def test_every_behaviour_mode_runs_the_matrix(plugin_args: list[str], blessed: dict[str, Any]) -> None:
    """The plugin_args fixture: a gated session selected with -k passes in each of the three modes."""
    res = run_pytest(blessed["project"], *plugin_args, "-k", "fw-b-cpu-one", "--speechlab-rtf-gate", "off")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 passed" in res.stdout
    assert "fw-b-cpu-one" in res.stdout.split("speechlab summary", 1)[1]


# ---- unit tests of the grouping and pinning logic ---------------------------------------------------


def _cases(spec: dict[str, list[str]], datasets: int) -> list[Case]:
    return [Case(m, f"d{i}", dev) for m, devs in spec.items() for dev in devs for i in range(datasets)]


def test_groups_one_per_model_and_device_when_enough_models() -> None:
    cases = _cases({"a": ["cpu"], "b": ["cpu"], "c": ["cpu"]}, 3)
    g = group_names(cases, n_workers=2)
    assert set(g.values()) == {"a:cpu", "b:cpu", "c:cpu"}
    assert all(g[c] == f"{c.model}:cpu" for c in cases)
    assert "@" not in "".join(g.values())  # xdist's suffix parser splits on the last '@'


def test_groups_split_a_lone_cpu_model_over_idle_workers_contiguously() -> None:
    cases = _cases({"a": ["cpu"]}, 4)
    g = group_names(cases, n_workers=2)
    assert [g[c] for c in cases] == ["a:cpu:1of2", "a:cpu:1of2", "a:cpu:2of2", "a:cpu:2of2"]
    assert set(group_names(cases, n_workers=2, policy="model").values()) == {"a:cpu"}
    assert set(group_names(cases, n_workers=8).values()) == {f"a:cpu:{i}of4" for i in range(1, 5)}  # <= cases
    assert set(group_names(cases, n_workers=1).values()) == {"a:cpu"}


def test_groups_never_split_a_model_over_one_shared_gpu() -> None:
    cases = _cases({"a": ["cuda"]}, 4)
    assert set(group_names(cases, n_workers=2, gpu_count=1).values()) == {"a:cuda"}
    # one GPU per worker: spreading is safe, each worker loads its copy on its own GPU
    assert set(group_names(cases, n_workers=2, gpu_count=2).values()) == {"a:cuda:1of2", "a:cuda:2of2"}
    # cases that will skip (no GPU) do not count as work: the cpu group is split instead
    mixed = _cases({"a": ["cpu", "cuda"]}, 2)
    g = group_names(mixed, n_workers=2, gpu_count=0)
    assert {g[c] for c in mixed if c.device == "cpu"} == {"a:cpu:1of2", "a:cpu:2of2"}
    assert {g[c] for c in mixed if c.device == "cuda"} == {"a:cuda"}


def test_gpu_mapping_with_a_fake_gpu_count() -> None:
    assert worker_index("gw0") == 0 and worker_index("gw13") == 13 and worker_index(None) is None
    assert worker_index("master") is None
    assert [gpu_for_worker(f"gw{i}", 4) for i in range(4)] == ["0", "1", "2", "3"]
    assert [gpu_for_worker(f"gw{i}", 2) for i in range(4)] == ["0", "1", "0", "1"]  # round-robin
    assert [gpu_for_worker(f"gw{i}", 2, visible="5,7") for i in range(3)] == ["5", "7", "5"]
    assert visible_gpu_ids(2, "5,7,9") == ["5", "7"]
    assert gpu_for_worker("gw0", 0) is None  # no GPU: nothing to pin
    assert gpu_for_worker(None, 4) is None  # not a worker
    assert gpu_for_worker("gw1", 1) == "0"


def test_pin_worker_sets_cuda_visible_devices_before_cuda_init() -> None:
    env: dict[str, str] = {}
    assert pin_worker({"workerid": "gw1", "speechlab_gpu_count": 2, "speechlab_visible_devices": None}, env) == "1"
    assert env == {"CUDA_VISIBLE_DEVICES": "1"}
    env = {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert pin_worker({"workerid": "gw0", "speechlab_gpu_count": 2, "speechlab_visible_devices": "2,3"}, env) == "2"
    assert env["CUDA_VISIBLE_DEVICES"] == "2"
    env = {}
    assert pin_worker({"workerid": "gw0", "speechlab_gpu_count": 0}, env) is None and env == {}


def test_explicit_dist_detection() -> None:
    assert not dist_given_explicitly(["-n", "2", "-m", "smoke"])
    assert dist_given_explicitly(["-n", "2", "--dist", "load"])
    assert dist_given_explicitly(["-n2", "--dist=loadfile"])
    assert dist_given_explicitly(["-d"]) and dist_given_explicitly(["--distload"])
    assert dist_given_explicitly([], addopts=["--dist", "load"])
    assert dist_given_explicitly([], env_addopts="-n 2 --dist=worksteal")


def test_scheduler_scope_of_matrix_items() -> None:
    groups = {"fw-cpu-one": "fw:cpu:1of2"}
    assert case_scope("speechlab.yaml::test_speech[fw-cpu-one]", "speechlab.yaml", groups) == "speechlab:fw:cpu:1of2"
    # older pytest: xdist's worker appended the group to the node id
    assert (
        case_scope("speechlab.yaml::test_speech[fw-cpu-one]@fw:cpu:1of2", "speechlab.yaml", groups)
        == "speechlab:fw:cpu:1of2"
    )
    assert (
        case_scope("sub/speechlab.yaml::test_speech[fw-cpu-one]", "speechlab.yaml", groups) == "speechlab:fw:cpu:1of2"
    )
    assert case_scope("tests/test_x.py::test_speech[fw-cpu-one]", "speechlab.yaml", groups) is None
    assert case_scope("speechlab.yaml::test_speech[other]", "speechlab.yaml", groups) is None
