"""pytest-speechlab: the module pytest loads.  Options, markers, collection of the matrix, fixtures, hooks.

The work is done elsewhere (session.py, evaluation.py, golden.py, report.py); nothing heavy is imported here.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .config import ALL_DEVICES, GATES, ConfigError, SpeechlabConfig, load_config
from .gate import coverage, expected_skip, skipped_with_golden
from .records import FAILED_VERDICTS
from .running import _accept_command, _progress, get_session
from .session import CONFIG_ERROR_KEY, SESSION_KEY, Case, Options, SpeechlabSession
from .xdist_support import XdistHooks, failure_line, hand_over, plain, write_progress

# Per item: where its rows start in ``sess.results``, and why it failed (one line per failed phase).
_ROWS_START_KEY = pytest.StashKey[int]()
_FAILURES_KEY = pytest.StashKey[list[str]]()
_SKIP_KEY = pytest.StashKey[str]()
_UNEXPECTED_SKIP_KEY = pytest.StashKey[str]()  # a skipped case with a committed golden: a failure
_EXPECTED_SKIP_KEY = pytest.StashKey[str]()  # ... that --speechlab-expect-skip names: a skip

MARKERS = {
    "smoke": "the bundled regression suite: bundled model(s) on the bundled fixtures/smoke audio",
    "real_e2e": "needs weights or data that are not bundled; skips with a reason when they are absent",
    "cuda": "runs on an NVIDIA GPU (cuda); selected with -m cuda, skipped with a reason where none is present",
    "mps": "runs on an Apple GPU (mps); selected with -m mps, skipped with a reason off macOS",
    "cpu": "runs on the CPU",
    "remote": "runs against a deployed HTTP service",
    "speechlab(model=None, dataset=None, device=None)": "pick the model, dataset and device the speech_* fixtures use",
}


def _device_arg(value: str) -> str:
    choices = ("auto", "all", *ALL_DEVICES)
    if value not in choices:
        raise argparse.ArgumentTypeError(f"unknown device {value!r}; choose from {', '.join(choices)}")
    return value


def _shard_arg(value: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speechlab-shard wants I/N (e.g. 1/2), got {value!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"--speechlab-shard {value}: I must be between 1 and N")
    return i, n


def _rtf_gate_arg(value: str) -> str:
    if value not in ("auto", "on", "off"):
        raise argparse.ArgumentTypeError(f"--speechlab-rtf-gate wants auto, on or off, got {value!r}")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("speechlab", "speech model regression testing (pytest-speechlab)")
    group.addoption("--speechlab-config", metavar="PATH", default=None,
                    help="speechlab.yaml to use (default: ini speechlab_config, else speechlab.yaml in the rootdir)")
    group.addoption("--speechlab-device", action="append", type=_device_arg, default=None, metavar="DEV",
                    help="device(s) to run: auto|cpu|cuda|mps|remote|all; repeatable (default: each model's devices)")
    group.addoption("--speechlab-dataset", action="append", default=None, metavar="NAME|PATH",
                    help="dataset(s) to run: a configured name or a manifest/folder path; repeatable")
    group.addoption("--speechlab-model", action="append", default=None, metavar="NAME",
                    help="model(s) to run (configured names); repeatable")
    group.addoption("--speechlab-update-golden", action="store_true", default=False,
                    help="write/refresh the golden baselines of the cases that ran (atomic writes)")
    group.addoption("--speechlab-json", metavar="PATH", default=None, help="write the session's run record as JSON")
    group.addoption("--speechlab-save", action="store_true", default=False,
                    help="also save the run record under the history folder (history_dir in speechlab.yaml)")
    group.addoption("--speechlab-force-rtf", action="store_true", default=False,
                    help="gate absolute RTF against the golden even when it was measured on other hardware")
    group.addoption("--speechlab-rtf-gate", type=_rtf_gate_arg, default=None, metavar="auto|on|off",
                    help="gate RTF: auto = off when several xdist workers share the CPUs (default: ini or auto)")
    group.addoption("--speechlab-gate", choices=GATES, default=None,
                    help="override the config's gate policy (strict or statistical)")
    group.addoption("--speechlab-rounds", type=int, default=None, metavar="N",
                    help="timed passes over each dataset (default: rounds in speechlab.yaml, else adaptive: "
                         "passes until min_timed_audio_s (30 s) of audio is timed)")
    group.addoption(
        "--speechlab-abs-rtf",
        action="store_true",
        default=False,
        help="also gate absolute RTF (rtf_rel) when the golden was recorded on an identical machine "
        "(same CPU model, features, usable CPUs, threads); speed is always gated relative to the speed reference",
    )
    group.addoption(
        "--speechlab-xdist-group",
        choices=("auto", "model"),
        default=None,
        help="xdist grouping: model = one worker per model@device; auto = the same, but spread a model's "
        "cpu cases over idle workers when there are fewer models than workers (default: ini or auto)",
    )
    group.addoption(
        "--speechlab-shard",
        type=_shard_arg,
        default=None,
        metavar="I/N",
        help="run only slice I of N of the matrix (deterministic), for CI matrix jobs",
    )
    group.addoption(
        "--speechlab-allow-empty-shard",
        action="store_true",
        default=False,
        help="let a --speechlab-shard slice that gets no case pass (default: an error)",
    )
    group.addoption(
        "--speechlab-allow-download",
        action="store_true",
        default=False,
        help="let hf: weights and hf-dataset: datasets missing from the local Hugging Face cache be "
        "downloaded (never by default)",
    )
    group.addoption(
        "--speechlab-expect-skip",
        action="append",
        default=None,
        metavar="NAME",
        help="a case with a committed golden that skips fails the gate unless this job expects it: a device, "
        "model, MODEL/DEVICE or case id (shell patterns; repeatable), e.g. cuda on a machine without a GPU",
    )
    parser.addini(
        "speechlab_allow_download", "true: allow Hugging Face Hub downloads (hub.py)", type="bool", default=False
    )
    parser.addini("speechlab_expect_skip", "cases whose skip is expected although they have a golden "
                  "(devices, models, MODEL/DEVICE or case ids; shell patterns)", type="args", default=[])
    parser.addini("speechlab_config", "path of speechlab.yaml, relative to the rootdir", default=None)
    parser.addini("speechlab_devices", "default devices (auto|cpu|cuda|mps|remote|all)", type="args", default=[])
    parser.addini("speechlab_xdist_group", "auto|model: how matrix cases are grouped on xdist workers", default="auto")
    parser.addini("speechlab_rtf_gate", "auto|on|off: gate RTF (auto: off with several xdist workers)", default="auto")


def _config_path(config: pytest.Config) -> tuple[Path | None, bool]:
    opt = config.getoption("speechlab_config")
    if opt:
        path = Path(opt).expanduser().resolve()
        if path.is_dir():
            raise pytest.UsageError(
                f"--speechlab-config {opt}: is a folder; name the config file, "
                f"e.g. --speechlab-config {Path(opt) / 'speechlab.yaml'}"
            )
        return path, True
    ini = config.getini("speechlab_config")
    if ini:
        return (config.rootpath / str(ini)).resolve(), True
    default = config.rootpath / "speechlab.yaml"
    return (default.resolve() if default.exists() else None), False


def _n_workers(config: pytest.Config) -> int:
    if hasattr(config, "workerinput"):
        return int(config.workerinput.get("workercount", 1))
    n = getattr(config.option, "numprocesses", None)
    dist = getattr(config.option, "dist", "no")
    if isinstance(n, int) and dist != "no":
        return n
    return 0


@pytest.hookimpl(trylast=True)
def _checked_options(
    config: pytest.Config, cfg: SpeechlabConfig, path: Path
) -> tuple[list[str], list[str], int | None]:
    """The devices, models and rounds asked for, checked (UsageError naming the option otherwise)."""
    devices = config.getoption("speechlab_device") or list(config.getini("speechlab_devices"))
    for d in devices:
        _device_arg(d) if d in ("auto", "all", *ALL_DEVICES) else (_ for _ in ()).throw(
            pytest.UsageError(f"ini speechlab_devices: unknown device {d!r}")
        )
    models = config.getoption("speechlab_model") or []
    for m in models:
        if m not in cfg.models:
            raise pytest.UsageError(f"--speechlab-model {m}: no such model in {path} (known: {', '.join(cfg.models)})")
    json_opt = config.getoption("speechlab_json")
    if json_opt and Path(json_opt).is_dir():
        raise pytest.UsageError(
            f"--speechlab-json {json_opt}: is a folder; give the path of a file to write, e.g. "
            f"{Path(json_opt) / 'run.json'}"
        )
    rounds = config.getoption("speechlab_rounds")
    if rounds is not None and rounds < 1:
        raise pytest.UsageError("--speechlab-rounds must be >= 1")
    return devices, models, rounds


def pytest_configure(config: pytest.Config) -> None:
    for name, desc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {desc}")
    config.stash[SESSION_KEY] = None
    if config.getoption("speechlab_allow_download") or config.getini("speechlab_allow_download"):
        from .hub import set_allow_download

        set_allow_download(True)
    config.stash[CONFIG_ERROR_KEY] = None
    if config.pluginmanager.hasplugin("benchmark") and not config.pluginmanager.hasplugin("speechlab-benchmark-fail"):
        config.pluginmanager.register(_BenchmarkCompareFail(), "speechlab-benchmark-fail")
    path, explicit = _config_path(config)
    if path is None:
        return
    if not path.exists():
        if explicit:
            raise pytest.UsageError(
                f"speechlab config {path} does not exist; fix --speechlab-config or ini speechlab_config"
            )
        return
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        # Reported as a collection error of speechlab.yaml, so the message names the file and key.
        config.stash[CONFIG_ERROR_KEY] = str(exc)
        return
    for ds in cfg.datasets.values():
        for m in ds.markers:
            config.addinivalue_line("markers", f"{m}: dataset marker from {path.name}")
    devices, models, rounds = _checked_options(config, cfg, path)
    opts = Options(
        devices=devices,
        datasets=config.getoption("speechlab_dataset") or [],
        models=models,
        update=config.getoption("speechlab_update_golden"),
        json_path=Path(config.getoption("speechlab_json")).resolve() if config.getoption("speechlab_json") else None,
        save=config.getoption("speechlab_save"),
        force_rtf=config.getoption("speechlab_force_rtf"),
        abs_rtf=config.getoption("speechlab_abs_rtf"),
        rtf_gate=config.getoption("speechlab_rtf_gate") or str(config.getini("speechlab_rtf_gate") or "auto"),
        gate=config.getoption("speechlab_gate"),
        rounds=rounds,
        shard=config.getoption("speechlab_shard"),
        allow_empty_shard=config.getoption("speechlab_allow_empty_shard"),
        expect_skip=list(config.getoption("speechlab_expect_skip") or config.getini("speechlab_expect_skip") or []),
    )
    sess = SpeechlabSession(cfg, opts, config.rootpath, _n_workers(config))
    config.stash[SESSION_KEY] = sess
    if config.pluginmanager.hasplugin("xdist"):
        _configure_xdist(config, sess)
        config.pluginmanager.register(XdistHooks(config), "speechlab-xdist")


def _configure_xdist(config: pytest.Config, sess: SpeechlabSession) -> None:
    """xdist wiring on both sides: loadgroup by default, GPU pinning, grouping policy (see xdist_support)."""
    from . import xdist_support as xs

    info = sess.xdist
    info["group_policy"] = config.getoption("speechlab_xdist_group") or str(
        config.getini("speechlab_xdist_group") or "auto"
    )
    if info["group_policy"] not in xs.GROUP_POLICIES:
        raise pytest.UsageError(
            f"ini speechlab_xdist_group: {info['group_policy']!r} is not one of {', '.join(xs.GROUP_POLICIES)}"
        )
    wi = getattr(config, "workerinput", None)
    if wi is not None:
        # Worker: pin the GPU first, before anything can initialise CUDA in this process.
        info["worker"] = str(wi.get("workerid"))
        info["gpu_count"] = int(wi.get(xs.WI_GPU_COUNT) or 0)
        info["pinned_gpu"] = xs.pin_worker(wi)
        return
    if sess.n_workers < 1:
        return
    try:
        cases = sess.cases()
    except pytest.UsageError:
        return
    if xs.maybe_default_loadgroup(config, bool(cases)):
        info["dist_defaulted"] = True
    info["dist"] = str(getattr(config.option, "dist", "no"))
    # Probe the GPUs on the controller only (workers must not touch CUDA before they are pinned).
    info["gpu_count"] = xs.probe_gpu_count() if any(c.device == "cuda" for c in cases) else 0
    # The controller never collects; it computes the workers' grouping itself for the scheduler.
    groups = xs.group_names(cases, sess.n_workers, info["group_policy"], info["gpu_count"])
    info["groups"] = {c.id: g for c, g in groups.items()}
    if sess.rtf_gate_off is False and sess.n_workers > 1:
        sess.notes.append(
            f"RTF gated although {sess.n_workers} xdist workers share {os.cpu_count()} CPUs: "
            "timings are noisy (--speechlab-rtf-gate auto turns the RTF gate off under xdist)"
        )


# ---- collection ----------------------------------------------------------------------------------


class SpeechlabFile(pytest.Module):
    """speechlab.yaml collected as a module whose one test is parametrised over the matrix."""

    def _getobj(self) -> Any:
        from . import _matrix

        return _matrix

    def collect(self) -> Any:
        # An empty matrix is a collection error (never "got empty parameter set" and rc 0, which a
        # "no tests collected" guard does not see either).
        sess = get_session(self.config)
        if not sess.cases():
            reason = sess.empty_reason()
            if reason is not None:
                raise self.CollectError(reason)
        return super().collect()


class _ConfigErrorFile(pytest.File):
    """A speechlab.yaml that does not load: a collection error, so -m/-k cannot deselect it away."""

    def collect(self) -> Iterator[pytest.Item]:
        raise self.CollectError(self.config.stash[CONFIG_ERROR_KEY] or "invalid speechlab config")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    path, _ = _config_path(config)
    if path is None or file_path.resolve() != path:
        return None
    if config.stash.get(CONFIG_ERROR_KEY, None):
        return _ConfigErrorFile.from_parent(parent, path=file_path)
    return SpeechlabFile.from_parent(parent, path=file_path)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "speechlab_case" not in metafunc.fixturenames or metafunc.module.__name__ != "pytest_speechlab._matrix":
        return
    sess = get_session(metafunc.config)
    xdist = metafunc.config.pluginmanager.hasplugin("xdist")
    cases = sess.cases()
    groups: dict[Any, str] = {}
    if xdist:
        from .xdist_support import group_names

        groups = group_names(
            cases, sess.n_workers, sess.xdist.get("group_policy", "auto"), sess.xdist.get("gpu_count", 0)
        )
    params = []
    for case in cases:
        spec = sess.cfg.models[case.model]
        dspec = sess.dataset_spec(case.dataset)
        marks: list[Any] = [getattr(pytest.mark, m) for m in dspec.markers]
        if case.device in ("cuda", "mps", "cpu", "remote"):
            marks.append(getattr(pytest.mark, case.device))
        if spec.real_e2e or dspec.real_e2e:
            marks.append(pytest.mark.real_e2e)
        if xdist:  # keep a model's cases on one worker so it loads once per device
            marks.append(pytest.mark.xdist_group(name=groups[case]))
        if spec.stage == "experimental":
            marks.append(pytest.mark.xfail(strict=False, reason=f"{case.model} is experimental: reported, not gated"))
        params.append(pytest.param(case, id=case.id, marks=marks))
    metafunc.parametrize("speechlab_case", params)


# ---- every collected case ends up in the record --------------------------------------------------


def _matrix_case(item: pytest.Item) -> Case | None:
    """The matrix case an item runs, or None for any other test."""
    callspec = getattr(item, "callspec", None)
    if callspec is None or not isinstance(item.parent, SpeechlabFile):
        return None
    case = callspec.params.get("speechlab_case")
    return case if isinstance(case, Case) else None


def pytest_collection_finish(session: pytest.Session) -> None:
    sess = session.config.stash.get(SESSION_KEY, None)
    if sess is None or hasattr(session.config, "workerinput"):
        return
    for item in session.items:
        case = _matrix_case(item)
        if case is not None:
            sess.collected[case.id] = case


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    sess = item.config.stash.get(SESSION_KEY, None)
    if sess is not None:
        item.stash[_ROWS_START_KEY] = len(sess.results)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report: pytest.TestReport = yield
    sess = item.config.stash.get(SESSION_KEY, None)
    if sess is None:
        return report
    case = _matrix_case(item)
    if case is not None and report.skipped and not hasattr(report, "wasxfail") and isinstance(report.longrepr, tuple):
        # Green means compared: a case whose golden is committed and that did not run is not a pass (issue 24).
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        row = {**sess.base_record(case), "status": "skipped", "reason": reason}
        unexpected = skipped_with_golden(row, sess.golden_file(case), sess.opts.expect_skip)
        if unexpected:
            report.outcome = "failed"
            report.longrepr = unexpected
            item.stash[_UNEXPECTED_SKIP_KEY] = unexpected
        elif sess.golden_file(case).is_file():
            item.stash[_EXPECTED_SKIP_KEY] = expected_skip(row, sess.opts.expect_skip) or "expected"
    # An xfailed call (experimental stage) raised: that is a failure of the case, reported, not gated.  An
    # XPASS (``wasxfail`` on a passed report) is not.
    if report.failed or (report.when == "call" and report.skipped and hasattr(report, "wasxfail")):
        item.stash.setdefault(_FAILURES_KEY, []).append(
            ("" if report.when == "call" else f"{report.when}: ") + failure_line(report)
        )
    elif report.skipped and isinstance(report.longrepr, tuple):
        item.stash[_SKIP_KEY] = str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.when == "teardown":
        rows = sess.settle_item(
            _matrix_case(item),
            item.stash.get(_ROWS_START_KEY, len(sess.results)),
            item.stash.get(_FAILURES_KEY, []),
            item.stash.get(_SKIP_KEY, None),
            unexpected_skip=item.stash.get(_UNEXPECTED_SKIP_KEY, None),
            expected_skip=item.stash.get(_EXPECTED_SKIP_KEY, None),
        )
        if not hasattr(item.config, "workerinput"):
            for r in rows:
                write_progress(item.config, sess.progress_line(r))
        if rows and hasattr(item.config, "workerinput"):
            # Travels with the report to the xdist controller, so a worker that dies later does not take
            # the results of the cases it finished with it.
            report.speechlab_rows = plain(rows)  # type: ignore[attr-defined]
    return report


# ---- fixtures for users' own tests -----------------------------------------------------------------


def _marker_kwargs(request: pytest.FixtureRequest) -> dict[str, Any]:
    mark = request.node.get_closest_marker("speechlab")
    return dict(mark.kwargs) if mark else {}


@pytest.fixture
def speech_device(request: pytest.FixtureRequest) -> str:
    """The device a test runs on: ``@pytest.mark.speechlab(device=...)``, else the first of
    ``--speechlab-device`` (``auto`` resolves cuda -> mps -> cpu), else cpu.  Skips with the reason when
    the device is not on this machine."""
    from .devices import pick, unavailable_reason

    sess = get_session(request.config)
    dev = _marker_kwargs(request).get("device") or (sess.opts.devices[0] if sess.opts.devices else "cpu")
    dev = pick(dev, ("cuda", "mps", "cpu"))
    reason = unavailable_reason(dev)
    if reason:
        pytest.skip(reason)
    return str(dev)


@pytest.fixture
def speech_model(request: pytest.FixtureRequest, speech_device: str) -> Any:
    """The loaded model named by ``@pytest.mark.speechlab(model=...)`` (else the first configured model)
    on ``speech_device``.  Loaded once per model x device per process and reused across tests."""
    sess = get_session(request.config)
    name = _marker_kwargs(request).get("model") or next(iter(sess.cfg.models), None)
    if name is None or name not in sess.cfg.models:
        raise pytest.UsageError(f"speech_model: no model {name!r} in {sess.cfg.path}")
    spec = sess.cfg.models[name]
    from .backends import MissingExtraError, get_backend

    reason = get_backend(spec.backend).unsupported_reason(speech_device)
    if reason:
        pytest.skip(reason)
    try:
        return sess.model(spec, speech_device)
    except MissingExtraError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def speech_dataset(request: pytest.FixtureRequest) -> Any:
    """The dataset named by ``@pytest.mark.speechlab(dataset=...)`` (else the first configured one),
    as a :class:`pytest_speechlab.datasets.Dataset` of utterances (audio is read when used)."""
    sess = get_session(request.config)
    name = _marker_kwargs(request).get("dataset") or next(iter(sess.cfg.datasets), None)
    if name is None:
        raise pytest.UsageError(f"speech_dataset: no datasets in {sess.cfg.path}")
    return sess.dataset(name)


@pytest.fixture
def asr_eval(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """A function ``asr_eval(model=None, dataset=None, device=None)`` that runs a configured model over a
    dataset and returns a result with ``.metrics``, ``.record`` and ``.check_golden()`` (which fails the
    test with the obtained-vs-golden block when the case got worse)."""
    sess = get_session(request.config)

    def run(model: str | None = None, dataset: str | None = None, device: str | None = None) -> Any:
        __tracebackhide__ = True
        kw = _marker_kwargs(request)
        model = model or kw.get("model") or next(iter(sess.cfg.models))
        dataset = dataset or kw.get("dataset") or next(iter(sess.cfg.datasets))
        from .devices import pick

        device = pick(device or kw.get("device") or "cpu", sess.cfg.models[model].devices)
        case = Case(model, dataset, device)
        from .runners.asr import evaluate_case

        return evaluate_case(sess, case, progress=_progress(request, case.id), accept=_accept_command(request.node))

    return run


@pytest.fixture
def tts_eval(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """A function ``tts_eval(model=None, dataset=None, device=None)`` that synthesises a configured text
    dataset with a configured voice (``task: tts``), judges it by round-trip recognition and audio sanity,
    gates it against its golden (failing the test with the block when worse, missing or insane) and returns
    the result (``.metrics``, ``.record``).  Defaults: the marker ``speechlab(...)``, else the first TTS
    model and dataset in speechlab.yaml, on cpu."""
    sess = get_session(request.config)

    def run(model: str | None = None, dataset: str | None = None, device: str | None = None) -> Any:
        __tracebackhide__ = True
        from .runners.tts import run as run_tts
        from .running import case_context

        kw = _marker_kwargs(request)
        model = model or kw.get("model") or next((m for m, s in sess.cfg.models.items() if s.task == "tts"), None)
        dataset = (
            dataset or kw.get("dataset") or next((d for d, s in sess.cfg.datasets.items() if s.task == "tts"), None)
        )
        if model is None or dataset is None:
            raise pytest.UsageError(f"tts_eval: {sess.cfg.path} has no model and dataset with task: tts")
        from .devices import pick

        # "auto" resolves like asr_eval's (it was taken for a device name)
        case = Case(model, dataset, pick(device or kw.get("device") or "cpu", sess.cfg.models[model].devices))
        sess.skip_if_unrunnable(case)
        return run_tts(case_context(request, sess, case))

    return run


@pytest.fixture
def speech_properties() -> Callable[..., Any]:
    """Metamorphic checks of an ASR model: ``speech_properties(speech_model).check(speech_dataset)`` asserts
    (with hypothesis choosing clip and amount, deterministically) that the model's transcript does not change
    beyond a tolerance under gain within +-12 dB, up to 2 s of leading/trailing silence, resampling
    16 -> 44.1 -> 16 kHz and stereo duplication.  Returns the report (``.worst`` WER per property).  Needs
    hypothesis (extra ``properties``); see pytest_speechlab.properties."""
    from .properties import SpeechProperties

    return SpeechProperties


# ---- end of session ------------------------------------------------------------------------------


def _unfiltered(config: pytest.Config, sess: SpeechlabSession) -> bool:
    """A full run of the whole matrix (no -k, -m, shard, model/dataset/device filter, no update, every collected
    case its own): only such a run can tell which goldens nothing compares any more."""
    o = sess.opts
    return not (config.option.keyword or config.option.markexpr or o.shard or o.models or o.datasets or o.devices
                or o.update or config.args and any("::" in a for a in config.args)) and bool(sess.collected)


def _report_failed_corpora(session: pytest.Session, corpora: list[dict[str, Any]]) -> None:
    """A chunked corpus is judged after its chunk items have passed: report each failed corpus as a test of its
    own (``speechlab.yaml::corpus[CASE]``), so pytest's counts, ``-r`` summary and JUnit show the failure that
    the exit status already carries (they said "3 passed" and ``failures="0"``)."""
    sess = session.config.stash.get(SESSION_KEY, None)
    for r in corpora:
        if r.get("origin") != "corpus" or r.get("verdict") not in FAILED_VERDICTS or r.get("stage") == "experimental":
            continue
        name = f"corpus[{r['case']}]"
        fspath = sess.cfg.path.name if sess is not None else "speechlab.yaml"
        text = r.get("failure") or f"speechlab: {r['case']}: {r.get('verdict')}\n{r.get('reason') or ''}"
        report = pytest.TestReport(nodeid=f"{fspath}::{name}", location=(fspath, None, name), keywords={name: 1},
                                   outcome="failed", longrepr=str(text), when="call", sections=[], duration=0.0,
                                   user_properties=[("speechlab_case", r["case"])])
        session.config.hook.pytest_runtest_logreport(report=report)


@pytest.hookimpl(tryfirst=True)  # before junitxml writes its file
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    sess = config.stash.get(SESSION_KEY, None)
    if sess is None or config.option.collectonly:
        return  # --collect-only ran nothing: no record, no summary
    if hasattr(config, "workerinput"):
        # Workers hand their results to the controller, which alone writes files and prints the summary.
        hand_over(config, sess)
        return
    sess.complete_results()
    corpora = sess.settle_corpora()  # chunked cases: one corpus verdict each, now that every chunk is known
    _report_failed_corpora(session, corpora)
    gated = [r for r in corpora if r.get("stage") != "experimental"]  # experimental: reported, not gated
    if any(r.get("verdict") in FAILED_VERDICTS for r in gated) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    # Green means compared (gate/coverage.py): selected cases that compared nothing never make a green run.
    sess.coverage = coverage(sess.results, update=sess.opts.update, expected=sess.opts.expect_skip,
                             shard=sess.opts.shard is not None)
    if sess.coverage.problems and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if _unfiltered(config, sess):
        from .gate.stale import stale_goldens

        sess.stale = stale_goldens(sess.cfg.golden_dir, [(c.model, c.dataset, c.device) for c in sess.cases()])
    # The run record first: a golden folder that cannot be written must not lose the record too.
    sess.write_records()
    if sess.opts.update:
        sess.written = sess.write_goldens()  # failures go to sess.write_errors, one per file
    if sess.write_errors and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if os.environ.get("GITHUB_STEP_SUMMARY") and sess.results:
        from .report import append_step_summary

        append_step_summary(Path(os.environ["GITHUB_STEP_SUMMARY"]), sess.results, sess.notes)


def _benchmark_options_given(config: pytest.Config) -> bool:
    """Whether the user asked pytest-benchmark for something (on the command line, PYTEST_ADDOPTS or addopts)."""
    words = [
        *config.invocation_params.args,
        *os.environ.get("PYTEST_ADDOPTS", "").split(),
        *(config.getini("addopts") or []),
    ]
    return any(
        str(w).startswith("--benchmark") and str(w) not in ("--benchmark-disable", "--benchmark-skip") for w in words
    )


SESSION_OBJ_KEY = pytest.StashKey["pytest.Session"]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Quiet means quiet: in a speechlab session pytest-benchmark's wide table is shown only with -v or when a
    --benchmark-* option was given (the speechlab summary already has the figures)."""
    config = session.config
    config.stash[SESSION_OBJ_KEY] = session  # _BenchmarkCompareFail sets the exit status through it
    bench = getattr(config, "_benchmarksession", None)
    if config.stash.get(SESSION_KEY, None) is None or bench is None:
        return
    if config.get_verbosity() <= 0 and not _benchmark_options_given(config):
        bench.quiet = True


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    sess = config.stash.get(SESSION_KEY, None)
    if sess is None or not (sess.results or sess.write_errors):
        return
    if hasattr(config, "workerinput"):
        return
    from .report import quiet_lines, summary_lines

    terminalreporter.write_sep("=", "speechlab summary")
    quiet = config.get_verbosity() < 0
    for line in (quiet_lines if quiet else summary_lines)(sess.results, sess.notes):
        terminalreporter.write_line(line)
    for path in sess.written:
        terminalreporter.write_line(f"golden written: {path}")
    if sess.opts.json_path and not any(e.startswith("run record not written") for e in sess.write_errors):
        terminalreporter.write_line(f"run record: {sess.opts.json_path}")
    for err in sess.write_errors:
        terminalreporter.write_line(f"speechlab: error: {err}", red=True)
    for line in sess.stale:
        terminalreporter.write_line(f"speechlab: note: {line}", yellow=True)
    cov = sess.coverage
    if cov is not None and cov.selected:
        for problem in cov.problems:
            terminalreporter.write_line(f"speechlab: {problem}", red=True)
        terminalreporter.write_line(cov.line(), red=not cov.ok, green=cov.ok and not cov.failed)


class _BenchmarkCompareFail:
    """Registered when pytest-benchmark is active: its ``--benchmark-compare-fail`` raises out of the terminal
    summary (a traceback); this ends the run with one clean line and a failing exit status instead (the
    benchmarks that regressed, and by how much, are already listed above it by pytest-benchmark)."""

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> Any:
        try:
            return (yield)
        except Exception as exc:
            if type(exc).__name__ != "PerformanceRegression" or not type(exc).__module__.startswith("pytest_benchmark"):
                raise
            terminalreporter.write_line(
                "speechlab: pytest-benchmark --benchmark-compare-fail: performance regressed against the saved run "
                "(see the regressions listed above); the session fails",
                red=True,
            )
            session = config.stash.get(SESSION_OBJ_KEY, None)
            if session is not None and session.exitstatus == 0:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            return None
