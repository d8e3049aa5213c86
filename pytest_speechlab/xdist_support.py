"""pytest-xdist support: ``--dist loadgroup`` by default, per-model worker groups, and one GPU per worker.

pytest-xdist is the engine (no home-made scheduler); this module only decides

* the ``xdist_group`` of each matrix case, so that a worker keeps its model (``model:device``), split into
  chunks only when there are fewer groups than workers and splitting is cheap and safe (see
  :func:`group_names`);
* that ``-n N`` without ``--dist`` means ``--dist loadgroup`` when the session has speechlab cases (with
  plain ``load`` every worker would load every model);
* the scheduler for ``loadgroup`` (:func:`make_scheduler`): xdist's own ``LoadGroupScheduling`` learns a test's
  group from an ``@group`` suffix that the worker appends to ``item._nodeid``; pytest 9.2 keeps node ids in
  ``item._id`` so that suffix silently never appears (pytest-xdist issue #1386) and grouping is lost.  The
  controller computes the same groups from the matrix, so our subclass maps ``test_speech[<case id>]`` to
  its group directly, and works with or without the suffix;
* which GPU each worker is pinned to when several are present (:func:`gpu_for_worker`), set as
  ``CUDA_VISIBLE_DEVICES`` in the worker before anything initialises CUDA.

Nothing heavy is imported at module level; the GPU count is probed on the controller only, and only when a
cuda case is in the matrix.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from .session import SESSION_KEY, SpeechlabSession

GROUP_POLICIES = ("auto", "model")

# Keys the controller puts into each worker's ``workerinput`` (pytest_configure_node).
WI_GPU_COUNT = "speechlab_gpu_count"
WI_VISIBLE = "speechlab_visible_devices"


def worker_index(worker_id: str | None) -> int | None:
    """The index of an xdist worker id (``gw3`` -> 3), None for the controller or a plain run."""
    if not worker_id:
        return None
    m = re.fullmatch(r"gw(\d+)", worker_id)
    return int(m.group(1)) if m else None


def visible_gpu_ids(gpu_count: int, visible: str | None) -> list[str]:
    """The GPU ids a process may use: those in ``CUDA_VISIBLE_DEVICES`` when it is set, else 0..count-1."""
    if visible is not None and visible.strip() != "":
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        return ids[:gpu_count] if gpu_count else ids
    return [str(i) for i in range(gpu_count)]


def gpu_for_worker(worker_id: str | None, gpu_count: int, visible: str | None = None) -> str | None:
    """The GPU id (a ``CUDA_VISIBLE_DEVICES`` value) that xdist worker ``worker_id`` is pinned to.

    Worker ``gwK`` gets the K-th visible GPU, round-robin when there are more workers than GPUs (then several
    workers share a GPU).  None when there is nothing to pin: not an xdist worker, or no GPU.
    ``visible`` is the controller's ``CUDA_VISIBLE_DEVICES`` (so ``2,3`` pins gw0 to 2 and gw1 to 3).
    """
    idx = worker_index(worker_id)
    ids = visible_gpu_ids(gpu_count, visible)
    if idx is None or not ids:
        return None
    return ids[idx % len(ids)]


def probe_gpu_count() -> int:
    """How many CUDA devices this process sees (torch if installed, else CTranslate2; 0 when none)."""
    from .devices import _ct2_cuda_count, _torch_probe

    probe = _torch_probe()
    if probe is not None and probe.get("cuda"):
        return int(str(probe.get("cuda_count") or 0))
    return int(_ct2_cuda_count() or 0)


def pin_worker(workerinput: dict[str, Any], environ: dict[str, str] | None = None) -> str | None:
    """In a worker, before any CUDA initialisation: export ``CUDA_VISIBLE_DEVICES`` for this worker's GPU.

    Returns the pinned id (or None).  ``environ`` defaults to ``os.environ`` (tests pass a dict).
    """
    env = os.environ if environ is None else environ
    count = int(workerinput.get(WI_GPU_COUNT) or 0)
    gpu = gpu_for_worker(str(workerinput.get("workerid") or ""), count, workerinput.get(WI_VISIBLE))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return gpu


def _cheap_runnable(device: str, gpu_count: int) -> bool:
    """Whether a case on ``device`` will probably run (used only to balance groups; never to skip)."""
    if device == "cuda":
        return gpu_count > 0
    if device == "mps":
        return platform.system() == "Darwin"
    return True


def _splittable(device: str, gpu_count: int, n_workers: int) -> bool:
    """Whether a model@device group may be spread over several workers.

    cpu and remote: yes (each worker loads its own copy once).  cuda: only when every worker has a GPU of its
    own, so that two copies of a model never share one GPU's memory.  mps: never (one GPU).
    """
    if device in ("cpu", "remote"):
        return True
    if device == "cuda":
        return gpu_count >= n_workers > 1
    return False


def group_names(cases: Sequence[Any], n_workers: int, policy: str = "auto", gpu_count: int = 0) -> dict[Any, str]:
    """The ``xdist_group`` name of every case (each has ``.model`` and ``.device``).

    ``model`` policy: one group per ``model:device``, so a model is loaded once per device in the whole
    session.  ``auto`` (default): the same, except that when there are fewer runnable groups than workers
    the largest splittable groups are cut into contiguous chunks (``model:device:2of3``) so every worker has
    work; a worker still loads a model at most once per device.  Deterministic: every worker computes the
    same names from the same matrix.
    """
    groups: dict[str, list[Any]] = {}
    for c in cases:
        # no '@' in names: xdist's suffix parser splits on the last '@'
        groups.setdefault(f"{c.model}:{c.device}", []).append(c)
    chunks = {g: 1 for g in groups}
    if policy == "auto" and n_workers > 1:
        runnable = {g: cs for g, cs in groups.items() if _cheap_runnable(cs[0].device, gpu_count)}
        while sum(chunks[g] for g in runnable) < n_workers:
            candidates = [g for g, cs in runnable.items()
                          if chunks[g] < len(cs) and _splittable(cs[0].device, gpu_count, n_workers)]
            if not candidates:
                break
            # the group with the most cases per chunk gets one more chunk (ties: first in matrix order)
            best = max(candidates, key=lambda g: len(runnable[g]) / chunks[g])
            chunks[best] += 1
    out: dict[Any, str] = {}
    for g, cs in groups.items():
        k = chunks[g]
        for pos, c in enumerate(cs):
            out[c] = g if k == 1 else f"{g}:{pos * k // len(cs) + 1}of{k}"
    return out


def dist_given_explicitly(args: Iterable[str], addopts: Iterable[str] = (), env_addopts: str = "") -> bool:
    """Whether the user chose a distribution mode (``--dist``, ``--dist=X``, ``-d``/``--distload``) anywhere:
    the command line, the ini ``addopts`` or ``PYTEST_ADDOPTS``."""
    tokens = [*args, *addopts, *shlex.split(env_addopts or "")]
    return any(t in ("--dist", "-d", "--distload") or t.startswith("--dist=") for t in tokens)


def maybe_default_loadgroup(config: Any, has_cases: bool) -> bool:
    """On the controller: turn xdist's implicit ``--dist load`` (from ``-n N``) into ``loadgroup``.

    Returns True when it did.  An explicit ``--dist`` is respected (a warning-free no-op).
    """
    opt = config.option
    if not has_cases or hasattr(config, "workerinput"):
        return False
    if getattr(opt, "dist", "no") != "load" or not getattr(opt, "tx", None):
        return False
    if dist_given_explicitly(
        config.invocation_params.args, config.getini("addopts"), os.environ.get("PYTEST_ADDOPTS", "")
    ):
        return False
    opt.dist = "loadgroup"
    return True


_SPEECH_ITEM = re.compile(r"^(?P<file>[^:]+)::test_speech\[(?P<case>.+)\](?:@[^\]]*)?$")


def case_scope(nodeid: str, config_name: str, case_groups: dict[str, str]) -> str | None:
    """The scheduling scope of a matrix item's node id (``speechlab.yaml::test_speech[<case id>]``, with or
    without xdist's ``@group`` suffix), or None for any other test."""
    m = _SPEECH_ITEM.match(nodeid)
    if not m or m.group("file").rsplit("/", 1)[-1] != config_name:
        return None
    group = case_groups.get(m.group("case"))
    return None if group is None else f"speechlab:{group}"


def case_id_of(nodeid: str, config_name: str) -> str | None:
    """The case id of a matrix item's node id (with or without xdist's ``@group`` suffix), else None."""
    m = _SPEECH_ITEM.match(nodeid)
    if not m or m.group("file").rsplit("/", 1)[-1] != config_name:
        return None
    return m.group("case")


def make_scheduler(config: Any, log: Any, config_name: str, case_groups: dict[str, str]) -> Any:
    """A ``LoadGroupScheduling`` that groups the matrix by :func:`group_names` (see the module docstring)."""
    from xdist.scheduler import LoadGroupScheduling

    class SpeechlabGroupScheduling(LoadGroupScheduling):  # type: ignore[misc]
        """loadgroup, with matrix cases grouped per model and device by the plugin."""

        def _split_scope(self, nodeid: str) -> str:
            scope = case_scope(nodeid, config_name, case_groups)
            return scope if scope is not None else str(super()._split_scope(nodeid))

    return SpeechlabGroupScheduling(config, log)


# ---- the controller's hooks (registered by the plugin only when pytest-xdist is active) ----------------


def failure_line(report: pytest.TestReport) -> str:
    """One readable line (or block) saying why a phase failed: the exception, not the whole traceback."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(crash.message) if crash is not None else report.longreprtext
    # xdist heads a worker's report with "[gw0] linux -- Python ..."; the reason is what follows.
    lines = [ln for ln in text.strip().splitlines() if not re.match(r"\[gw\d+\] \S+ -- Python ", ln)]
    text = "\n".join(lines).strip() or f"{report.when} failed"
    return text if len(text) <= 2000 else text[:2000] + " ..."


def hand_over(config: pytest.Config, sess: SpeechlabSession) -> None:
    """On a worker at the end: put its results (plain Python: execnet sends only that), model loads and
    GPU pinning into ``workeroutput`` for the controller, which merges them in ``pytest_testnodedown``."""
    worker = sess.xdist.get("worker")
    pinned = sess.xdist.get("pinned_gpu")
    for r in sess.results:
        r["xdist_worker"] = worker
        if pinned is not None and r.get("device") == "cuda":
            r["gpu"] = {"cuda_visible_devices": pinned, "worker": worker}
    config.workeroutput["speechlab_results"] = plain(sess.results)  # type: ignore[attr-defined]
    config.workeroutput["speechlab_loads"] = dict(sess.load_counts)  # type: ignore[attr-defined]
    config.workeroutput["speechlab_worker"] = {"id": worker, "pinned_gpu": pinned}  # type: ignore[attr-defined]


class XdistHooks:
    """Registered only when pytest-xdist is active: merge workers' results on the controller."""

    def __init__(self, config: pytest.Config | None = None) -> None:
        self._config = config

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        """Tell each worker (before it starts) how many GPUs there are to pin to, and which are visible."""
        sess = node.config.stash.get(SESSION_KEY, None)
        if sess is None:
            return
        node.workerinput[WI_GPU_COUNT] = int(sess.xdist.get("gpu_count") or 0)
        node.workerinput[WI_VISIBLE] = os.environ.get("CUDA_VISIBLE_DEVICES")

    @pytest.hookimpl
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """Under loadgroup (the default for the matrix), schedule the matrix by model and device."""
        sess = config.stash.get(SESSION_KEY, None)
        if sess is None or config.getvalue("dist") != "loadgroup" or not sess.xdist.get("groups"):
            return None
        return make_scheduler(config, log, sess.cfg.path.name, sess.xdist["groups"])

    @pytest.hookimpl
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """The controller never collects: it learns the selected matrix cases from a worker's collection."""
        sess = node.config.stash.get(SESSION_KEY, None)
        if sess is None or sess.collected:
            return
        by_id = {c.id: c for c in sess.cases()}
        for nodeid in ids:
            cid = case_id_of(nodeid, sess.cfg.path.name)
            if cid is not None:
                sess.collected[cid] = by_id.get(cid) or cid

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """On the controller: keep each case's rows as they arrive, and why a case's worker crashed."""
        config = self._config
        if config is None or hasattr(config, "workerinput"):
            return
        sess = config.stash.get(SESSION_KEY, None)
        if sess is None:
            return
        cid = case_id_of(report.nodeid, sess.cfg.path.name)
        if cid is None:
            return
        rows = getattr(report, "speechlab_rows", None)
        if rows:
            sess.reported[cid] = list(rows)
            worker = getattr(getattr(getattr(report, "node", None), "gateway", None), "id", None)
            for r in rows:  # a chunk finished on a worker: its progress line, with the run's ETA
                write_progress(config, sess.progress_line({"xdist_worker": worker, **r}))
        elif report.failed:
            sess.crashes.setdefault(cid, failure_line(report))

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        sess = node.config.stash.get(SESSION_KEY, None)
        out = getattr(node, "workeroutput", None) or {}
        if sess is None:
            return
        sess.results.extend(out.get("speechlab_results", []))
        loads = out.get("speechlab_loads") or {}
        for k, v in loads.items():
            sess.load_counts[k] = sess.load_counts.get(k, 0) + v
        worker = (out.get("speechlab_worker") or {}).get("id") or getattr(getattr(node, "gateway", None), "id", "?")
        sess.xdist.setdefault("loads_by_worker", {})[worker] = dict(loads)
        pinned = (out.get("speechlab_worker") or {}).get("pinned_gpu")
        if pinned is not None:
            sess.xdist.setdefault("gpu_pinning", {})[worker] = pinned


def write_progress(config: pytest.Config, line: str | None) -> None:
    """Write a progress line (chunks.py) on the terminal, through output capture; not under ``-q``."""
    if not line or config.get_verbosity() < 0:
        return
    tr = config.pluginmanager.getplugin("terminalreporter")
    if tr is None:
        return
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            tr.write_line(line)
    else:
        tr.write_line(line)


def plain(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays and tuples turned into plain Python (execnet sends only those)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    tolist = getattr(obj, "tolist", None)  # numpy scalar or array
    if callable(tolist):
        return plain(tolist())
    return str(obj)
