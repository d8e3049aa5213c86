"""The run's state, kept in ``config.stash``: resolved options, the case matrix, loaded models, results."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from .backends import BackendError, MissingExtraError, get_backend
from .backends.base import ModelSpec, import_runtime
from .config import DatasetSpec, SpeechlabConfig
from .datasets import Dataset, DatasetError, load_dataset
from .evaluation import (
    GateSettings,
    golden_payload,
)
from .gate import Coverage
from .golden import write_golden
from .records import FAILED_VERDICTS


@dataclass(frozen=True)
class Case:
    """One cell of the matrix: a model on a device over a dataset."""

    model: str
    dataset: str
    device: str
    # (index from 1, count) when the dataset is split into chunks (``chunks:`` in speechlab.yaml, chunks.py)
    chunk: tuple[int, int] | None = None

    @property
    def corpus_id(self) -> str:
        """The id of the whole model x device x dataset (the golden's case), chunk or not."""
        return f"{self.model}-{self.device}-{self.dataset}"

    @property
    def id(self) -> str:
        return self.corpus_id + (f"[{self.chunk[0]}/{self.chunk[1]}]" if self.chunk else "")

    @property
    def order(self) -> tuple[str, int]:
        """Sort key: by corpus, then chunk number (so ``[10/12]`` follows ``[9/12]``)."""
        return self.corpus_id, self.chunk[0] if self.chunk else 0


@dataclass
class Options:
    """Command-line/ini choices that shape the session."""

    devices: list[str] = field(default_factory=list)  # empty: each model's configured devices
    datasets: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    update: bool = False
    json_path: Path | None = None
    save: bool = False
    force_rtf: bool = False
    abs_rtf: bool = False
    rtf_gate: str = "auto"  # auto | on | off
    gate: str | None = None
    rounds: int | None = None
    shard: tuple[int, int] | None = None
    allow_empty_shard: bool = False
    expect_skip: list[str] = field(default_factory=list)  # skips of cases with a golden that this job expects


def _manifest_task(path: Path) -> str:
    """``tts`` for a text-only manifest (its first row has no ``audio_filepath``), else ``asr``."""
    import json

    if path.is_dir() or not path.is_file():
        return "asr"  # a FIFO is never opened here; the loader refuses it with the path
    try:
        with open(path, encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), "")
        row = json.loads(first) if first else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "asr"  # the loader reports the problem with file and line
    return "tts" if isinstance(row, dict) and "text" in row and "audio_filepath" not in row else "asr"


def _name_parts(path: Path, rootdir: Path) -> list[str]:
    """The parts of an ad hoc dataset's path that can name it, last one most specific: relative to
    ``rootdir``, a file's stem (a ``manifest`` file: its folder), each made legal in a name."""
    import re

    try:
        rel = path.relative_to(rootdir.resolve())
    except ValueError:
        rel = path
    out = [p for p in rel.parts if p not in ("/", "\\")]
    if path.is_file():
        out[-1] = Path(out[-1]).stem
        if out[-1] == "manifest" and len(out) > 1:
            out.pop()
    return [re.sub(r"[^A-Za-z0-9_.+@-]", "_", p).lstrip(".") or "_" for p in out]


class SpeechlabSession:
    """Owns everything a session knows: config, matrix, model cache, results, golden writes."""

    def __init__(self, cfg: SpeechlabConfig, opts: Options, rootdir: Path, n_workers: int = 0) -> None:
        self.cfg = cfg
        self.opts = opts
        self.rootdir = rootdir
        self.n_workers = n_workers
        self.results: list[dict[str, Any]] = []
        self.notes: list[str] = []
        #: What the session compared (gate/coverage.py), set at the end of the session.
        self.coverage: Coverage | None = None
        #: Golden files no case of the configured matrix compares (gate/stale.py), from a full unfiltered run.
        self.stale: list[str] = []
        self.load_counts: dict[str, int] = {}
        # xdist facts for the run record: dist mode, group policy, worker id, pinned GPU, loads per worker.
        self.xdist: dict[str, Any] = {}
        self._models: dict[tuple[str, str], Any] = {}
        self._datasets: dict[str, Dataset] = {}
        self._durations: dict[str, list[float]] = {}
        self._chunk_progress: Any = None
        self.started = time.monotonic()
        self._weights: dict[str, dict[str, Any]] = {}
        self.adhoc: dict[str, DatasetSpec] = {}
        # Every matrix case this session selected (id -> Case; on the xdist controller, from a worker's
        # collection).  Each of them ends up in the run record, whatever happened to it.
        self.collected: dict[str, Case | str] = {}
        # xdist controller: the rows each case's report carried, and why a case's worker crashed.
        self.reported: dict[str, list[dict[str, Any]]] = {}
        self.crashes: dict[str, str] = {}
        # End-of-session write failures (run record, goldens), reported as errors in the summary.
        self.write_errors: list[str] = []
        self.written: list[Path] = []
        self._resolve_adhoc()
        if self.rtf_gate_off and self.opts.rtf_gate == "off":
            self.notes.append("RTF gate off (--speechlab-rtf-gate off); RTF is still measured and recorded")
        elif self.rtf_gate_off:
            self.notes.append(
                f"RTF gate off: {n_workers} xdist workers share {os.cpu_count()} CPUs, so timings are noisy "
                "(--speechlab-rtf-gate on forces it); RTF is still measured and recorded"
            )

    # ---- options -------------------------------------------------------------------------------
    @property
    def rtf_gate_off(self) -> bool:
        if self.opts.rtf_gate == "on":
            return False
        if self.opts.rtf_gate == "off":
            return True
        return self.n_workers > 1

    def gate_settings(self) -> GateSettings:
        return GateSettings(
            gate=self.opts.gate or self.cfg.gate,
            rtf_gate=not self.rtf_gate_off,
            force_rtf=self.opts.force_rtf,
            abs_rtf=self.opts.abs_rtf,
            update=self.opts.update,
            bootstrap=self.cfg.bootstrap,
        )

    @property
    def rounds(self) -> int | None:
        """Timed passes: --speechlab-rounds, else ``rounds:`` in the config, else None (adaptive)."""
        return self.opts.rounds or self.cfg.rounds

    def speed_workload(self, case: Case) -> tuple[Any, str | None]:
        """(the case's speed-reference workload or None, why there is none when it could not be built)."""
        from .speed import SpeedReferenceError, workload_for

        spec = self.cfg.models[case.model]
        try:
            return workload_for(get_backend(spec.backend), spec, case.device), None
        except SpeedReferenceError as exc:
            return None, str(exc)

    def _resolve_adhoc(self) -> None:
        """Name the ad hoc datasets (--speechlab-dataset PATH).  A name comes from the path relative to the
        rootdir (stable across machines): its last part (the folder of a ``manifest.jsonl``, else the file
        stem), lengthened with parent folders until it is unique among them (``a.clips``, ``b.clips``); it is
        legal as a name (item 7).  A name that is a configured dataset's is an error, unless the path is that
        dataset's own manifest (then it is that dataset)."""
        from .config import name_problem

        paths: dict[str, Path] = {}
        for item in self.opts.datasets:
            if item in self.cfg.datasets:
                continue
            path = Path(item).expanduser()
            if not path.is_absolute():
                path = Path.cwd() / path
            if not path.exists():
                known = ", ".join(self.cfg.datasets) or "none"
                raise pytest.UsageError(
                    f"--speechlab-dataset {item}: no dataset of that name in {self.cfg.path} (known: {known}) "
                    "and no manifest or folder at that path"
                )
            path = path.resolve()
            same = [n for n, d in self.cfg.datasets.items() if d.manifest.resolve() == path]
            if same:
                self.opts.datasets = [same[0] if x == item else x for x in self.opts.datasets]
                continue
            paths[item] = path

        split = {item: _name_parts(p, self.rootdir) for item, p in paths.items()}
        depth = {item: 1 for item in split}
        while True:
            names = {item: ".".join(split[item][-depth[item]:]) for item in split}
            clash = {item for item in names if list(names.values()).count(names[item]) > 1
                     and depth[item] < len(split[item])}
            if not clash:
                break
            for item in clash:
                depth[item] += 1
        seen: dict[str, str] = {}
        for item, name in names.items():
            if name in self.cfg.datasets:
                raise pytest.UsageError(
                    f"--speechlab-dataset {item}: its name {name!r} (from the path) is the name of a configured "
                    f"dataset in {self.cfg.path}, whose manifest is {self.cfg.datasets[name].manifest}; pass the "
                    f"name {name} to run that one, or rename the folder or file of yours")
            if name in seen or name_problem(name):
                raise pytest.UsageError(f"--speechlab-dataset {item}: cannot derive a unique, legal dataset name "
                                        f"from the path (got {name!r}, also from {seen.get(name)}); rename it")
            seen[name] = item
            path = paths[item]
            self.adhoc[name] = DatasetSpec(
                name=name, manifest=path, allow_outside_paths=True, task=_manifest_task(path)
            )

    def dataset_spec(self, name: str) -> DatasetSpec:
        return self.cfg.datasets.get(name) or self.adhoc[name]

    def thresholds_for(self, model: str, dataset: str) -> dict[str, float]:
        """The case's effective tolerances (an ad hoc dataset has no thresholds of its own)."""
        return self.cfg.tolerances_for(model, dataset)[0]

    def tolerance_sources(self, model: str, dataset: str) -> dict[str, str]:
        """Where each of the case's tolerances came from (stage ceiling, global, model or dataset)."""
        return self.cfg.tolerances_for(model, dataset)[1]

    # ---- matrix --------------------------------------------------------------------------------
    def empty_reason(self) -> str | None:
        """Why the matrix holds no case (an error), or None when that is allowed (an empty shard under
        --speechlab-allow-empty-shard)."""
        path = self.cfg.path
        if self.opts.shard:
            i, n = self.opts.shard
            total = len(self._all_cases())
            if total:
                if self.opts.allow_empty_shard:
                    return None
                return (
                    f"--speechlab-shard {i}/{n}: this shard got no case (the matrix has {total} case(s) for {n} "
                    f"shards); "
                    "use fewer shards, or pass --speechlab-allow-empty-shard to let an empty shard pass"
                )
        models = self.opts.models or list(self.cfg.models)
        if not models:
            return f"{path}: models: no model configured, so the matrix is empty; add one under models:"
        names = (
            [d for d in self.opts.datasets if d in self.cfg.datasets] + list(self.adhoc)
            if self.opts.datasets
            else list(self.cfg.datasets)
        )
        if not names:
            return f"{path}: datasets: no dataset configured, so the matrix is empty; add one under datasets:"
        tasks_m = ", ".join(f"{m} ({self.cfg.models[m].task})" for m in models)
        tasks_d = ", ".join(f"{d} ({self.dataset_spec(d).task})" for d in names)
        return (
            f"{path}: the matrix is empty: no selected model's task matches a selected dataset's task "
            f"(models: {tasks_m}; datasets: {tasks_d}); give a dataset the task of a model (task: asr|tts), "
            "or select others with --speechlab-model/--speechlab-dataset"
        )

    def cases(self) -> list[Case]:
        """Every model x device x dataset the options select, in a stable order (skips included)."""
        out = self._all_cases()
        if self.opts.shard:
            i, n = self.opts.shard
            # Contiguous slices of the id-sorted matrix: a partition (every case in exactly one shard),
            # balanced to within one case, and a model@device's cases stay together (ids start with
            # model-device), so each CI job loads as few models as possible.
            ordered = sorted(out, key=lambda c: c.order)
            out = ordered[(i - 1) * len(ordered) // n : i * len(ordered) // n]
        return out

    def _all_cases(self) -> list[Case]:
        """The whole matrix the options select, before sharding."""
        from .devices import pick

        if self.opts.datasets:
            names = [d for d in self.opts.datasets if d in self.cfg.datasets] + list(self.adhoc)
        else:
            names = list(self.cfg.datasets)
        models = list(dict.fromkeys(self.opts.models)) or list(self.cfg.models)
        out: list[Case] = []
        for m in models:
            spec = self.cfg.models[m]
            devices: list[str] = []
            for d in self.opts.devices or ["<config>"]:
                if d == "<config>":
                    devices += list(spec.devices)
                elif d == "all":
                    devices += ["cpu", "cuda", "mps"] + (["remote"] if "remote" in spec.devices else [])
                elif d == "auto":
                    devices.append(pick(d, spec.devices))
                else:
                    devices.append(d)
            for dev in dict.fromkeys(devices):
                for ds in dict.fromkeys(names):  # a dataset given twice is one case
                    if self.dataset_spec(ds).task != spec.task and not (
                        spec.task == "chat" and self.dataset_spec(ds).task == "asr"
                    ):
                        continue
                    n = self.chunk_count(ds) if spec.task == "asr" else 0
                    if n:
                        out.extend(Case(m, ds, dev, (i, n)) for i in range(1, n + 1))
                    else:
                        out.append(Case(m, ds, dev))
        return out

    def chunk_count(self, name: str) -> int:
        """How many chunks dataset ``name`` is split into (0: not chunked); ``chunk_minutes`` reads the audio
        lengths (headers only) once per process."""
        opts = self.dataset_spec(name).options
        if "chunks" not in opts and "chunk_minutes" not in opts:
            return 0
        if "chunk_minutes" not in opts:
            return int(opts["chunks"])
        from .chunks import count
        from .datasets import DatasetError

        try:
            return count(self.durations(name), opts.get("chunks"), float(opts["chunk_minutes"]))
        except DatasetError as exc:
            raise pytest.UsageError(f"{self.cfg.path}: datasets.{name}.chunk_minutes: {exc}") from None

    def durations(self, name: str) -> list[float]:
        """Every utterance's audio length in seconds (from the file headers), once per process."""
        if name not in self._durations:
            from .chunks import durations

            self._durations[name] = durations(self.dataset(name))
        return self._durations[name]

    def case_dataset(self, case: Case) -> Dataset:
        """The utterances ``case`` scores: the whole dataset, or its chunk."""
        data = self.dataset(case.dataset)
        if case.chunk is None:
            return data
        from .chunks import subset

        return subset(data, case.chunk, self.durations(case.dataset), f"{self.cfg.path}: datasets.{case.dataset}")

    def skip_reason(self, case: Case) -> str | None:
        """Why a case cannot run here (device or backend support), or None."""
        from .backends import REGISTRY
        from .devices import resolve

        spec = self.cfg.models[case.model]
        if spec.stage == "deprecated":
            return f"{case.model} is deprecated (stage: deprecated in {self.cfg.path.name})"
        if spec.backend not in REGISTRY:
            return f"unknown backend {spec.backend!r}"
        backend = get_backend(spec.backend)
        reason = backend.unsupported_reason(case.device)
        if reason:
            return reason
        return resolve(case.device, (case.device,), getattr(backend, "runtime", None)).reason

    def base_record(self, case: Case) -> dict[str, Any]:
        """The identifying fields every case record starts with."""
        spec = self.cfg.models[case.model]
        return {
            "case": case.id,
            "model": case.model,
            "dataset": case.dataset,
            "device": case.device,
            "task": spec.task,
            "backend": spec.backend,
            "stage": spec.stage,
            **({"corpus": case.corpus_id, "chunk": list(case.chunk)} if case.chunk else {}),
        }

    def skip_if_unrunnable(self, case: Case) -> None:
        """Skip (and record why) a case whose device or backend cannot run here."""
        reason = self.skip_reason(case)
        if reason:
            self.results.append({**self.base_record(case), "status": "skipped", "reason": reason})
            pytest.skip(reason)

    def skip_case(self, case: Case, reason: str) -> NoReturn:
        """Record that ``case`` was skipped and why, then skip the test."""
        self.results.append({**self.base_record(case), "status": "skipped", "reason": reason})
        pytest.skip(reason)

    def fail_case(self, case: Case, reason: str) -> NoReturn:
        """Record that ``case`` could not run and why, then fail the test with the message alone."""
        self.results.append({**self.base_record(case), "status": "error", "reason": reason})
        # The message names the file and the fix; a traceback through the plugin's internals only hides it.
        pytest.fail(reason, pytrace=False)

    def load_case_model(self, case: Case) -> Any:
        """The case's loaded model.  A missing extra skips; a load error skips for real_e2e cases (their
        weights are allowed to be absent) and fails the others; both are recorded."""
        spec = self.cfg.models[case.model]
        dspec = self.dataset_spec(case.dataset)
        try:
            return self.model(spec, case.device)
        except MissingExtraError as exc:
            self.skip_case(case, str(exc))
        except BackendError as exc:
            if spec.real_e2e or dspec.real_e2e:
                self.skip_case(case, f"real_e2e: {exc}")
            self.fail_case(case, str(exc))

    # ---- resources ------------------------------------------------------------------------------
    def model(self, spec: ModelSpec, device: str) -> Any:
        """The loaded model for ``spec`` on ``device``, loaded once per process and reused."""
        key = (spec.name, device)
        if key not in self._models:
            from .metrics import rss_mb

            backend = get_backend(spec.backend)
            import_runtime(backend)
            before = rss_mb()
            t0 = time.perf_counter()
            loaded = backend.load(spec, device)
            self.load_counts[f"{spec.name}@{device}"] = self.load_counts.get(f"{spec.name}@{device}", 0) + 1
            loaded.load_seconds = time.perf_counter() - t0
            after = rss_mb()
            # What loading this model added to the process (the per-case memory gate builds on it).
            loaded.load_rss_mb = None if before is None or after is None else after - before
            self._models[key] = loaded
        return self._models[key]

    def weights_identity(self, spec: ModelSpec, loaded: Any = None) -> dict[str, Any]:
        """``{spec, source, sha256}`` of the weights ``spec`` loads (provenance.py), once per model per process."""
        if spec.name not in self._weights:
            from .provenance import weights_identity

            try:
                self._weights[spec.name] = weights_identity(spec, loaded, self.cfg.path.parent)
            except (OSError, BackendError) as exc:
                # The model loaded, so this is about reading its files again: say so rather than fail the case.
                self._weights[spec.name] = {"spec": spec.weights, "source": f"unknown ({exc})", "sha256": None}
        return self._weights[spec.name]

    def dataset(self, name: str) -> Dataset:
        """The dataset ``name`` (configured or ad hoc), read once per process."""
        if name not in self._datasets:
            spec = self.dataset_spec(name)
            self._datasets[name] = load_dataset(
                name,
                spec.manifest,
                allow_outside_paths=spec.allow_outside_paths,
                task=spec.task,
                options=spec.options,
            )
            if spec.options.get("longform"):  # long recordings built from the manifest (longform.py)
                from .longform import build

                self._datasets[name] = build(name, self._datasets[name], spec.options["longform"])
            if spec.options.get("perturb"):
                import dataclasses

                self._datasets[name] = dataclasses.replace(self._datasets[name], perturb=spec.options["perturb"])
        return self._datasets[name]

    # ---- every collected case in the record -----------------------------------------------------------
    def _error_row(self, case: Case | str, reason: str) -> dict[str, Any]:
        if isinstance(case, Case):
            base = self.base_record(case)
        else:  # only the id is known (the controller could not rebuild the case)
            base = {"case": case, "model": "unknown", "dataset": "unknown", "device": "unknown"}
        return {**base, "status": "error", "verdict": "error", "reason": reason, "origin": "matrix"}

    def golden_file(self, case: Case) -> Path:
        """Where the case's own golden is committed (a chunk's is its corpus's)."""
        from .golden import golden_path

        return golden_path(self.cfg.golden_dir, case.model, case.dataset, case.device)

    def settle_item(
        self, case: Case | None, start: int, failures: list[str], skip_reason: str | None,
        unexpected_skip: str | None = None, expected_skip: str | None = None,
    ) -> list[dict[str, Any]]:
        """After an item's teardown: make its rows say what happened to it, and return them.

        A matrix case that crashed before recording a row gets an ``error`` row with the exception; a row
        that reads as passed while the item failed (a crash after the row was written, a teardown error)
        gets the verdict ``error``.  Rows are tagged with their origin (``matrix`` or a user's ``test``).
        """
        rows = self.results[start:]
        cid = case.id if case is not None else None
        for r in rows:
            r.setdefault("origin", "matrix" if cid is not None and r.get("case") == cid else "test")
        if case is None:
            return rows
        mine = [r for r in rows if r.get("case") == cid]
        if unexpected_skip or expected_skip:
            # Skipped although its golden is committed (gate/coverage.py): a failure, or a skip this job expects.
            golden = {"golden_path": str(self.golden_file(case))}
            if unexpected_skip:
                why = unexpected_skip.removeprefix(f"speechlab: {cid} ").split("\n", 1)[0]
                error = {**self._error_row(case, why), **golden, "unexpected_skip": True}
                for r in mine:
                    r.update(error)
                if not mine:
                    self.results.append(error)
            else:
                for r in mine:
                    r.update({"expected_skip": expected_skip, **golden})
                if not mine and skip_reason is not None:
                    self.results.append({**self.base_record(case), "status": "skipped", "reason": skip_reason,
                                         "origin": "matrix", "expected_skip": expected_skip, **golden})
            return self.results[start:]
        if not mine:
            if failures:
                row = self._error_row(case, f"crashed before recording a result: {failures[0]}")
            elif skip_reason is not None:
                row = {**self.base_record(case), "status": "skipped", "reason": skip_reason, "origin": "matrix"}
            else:
                row = self._error_row(case, "the test passed without recording a result; nothing was compared")
            self.results.append(row)
            rows = self.results[start:]
        elif failures:
            for r in mine:
                if r.get("status") == "ran" and r.get("verdict") not in FAILED_VERDICTS:
                    r["verdict"] = "error"
                    r["reason"] = failures[0]
        return rows

    def complete_results(self) -> None:
        """On the controller, at the end: every collected case has a row.  Rows that a dead xdist worker
        sent with its reports are used; a case with none gets an ``error`` row saying why."""
        for r in self.results:
            r.setdefault("origin", "test")  # a row made outside any item (e.g. in a wide-scoped fixture)
        have = {r.get("case") for r in self.results if r.get("origin") == "matrix"}
        for cid, case in self.collected.items():
            if cid in have:
                continue
            if cid in self.reported:
                self.results.extend(self.reported[cid])
                continue
            reason = self.crashes.get(cid) or (
                "never ran to the end: its xdist worker died or the session stopped before it (-x, Ctrl-C); "
                "nothing was compared"
            )
            self.results.append(self._error_row(case, reason))

    def progress_line(self, row: dict[str, Any]) -> str | None:
        """The progress line of a finished chunk row (its worker, the chunks and audio done, an ETA), or None
        for any other row."""
        if not row.get("chunk") or row.get("origin", "matrix") != "matrix":
            return None
        if self._chunk_progress is None:
            from .chunks import ChunkProgress, split

            total, n = 0.0, 0
            for c in self.collected.values():
                if isinstance(c, Case) and c.chunk:
                    n += 1
                    try:
                        durs = self.durations(c.dataset)
                        start, stop = split(durs, c.chunk[1])[c.chunk[0] - 1]
                    except (DatasetError, ValueError):
                        continue  # that chunk's own item reports the problem
                    total += sum(durs[start:stop])
            self._chunk_progress = ChunkProgress(total, n, self.started)
        return str(self._chunk_progress.line(row))

    def settle_corpora(self) -> list[dict[str, Any]]:
        """At the end (plain run or xdist controller): one gated corpus row per chunked case whose chunks are
        in the results (chunks.py), appended to the results; chunks this run did not select make it partial."""
        from .chunks import gate_with, settle

        def gate(row: dict[str, Any]) -> None:
            model, dataset = str(row["model"]), str(row["dataset"])
            accept = (f"pytest {self.cfg.path.name} -k {row['case']} --speechlab-update-golden "
                      "(runs every chunk, then writes the corpus golden)")
            gate_with(self.cfg.golden_dir, self.thresholds_for(model, dataset), self.gate_settings(), accept)(row)

        rows = settle(self.results, gate, absent="partial")
        self.results.extend(rows)
        partial = [str(r["case"]) for r in rows if r.get("verdict") == "partial"]
        if partial:
            self.notes.append(
                f"{len(partial)} chunked case(s) only partly in this run ({', '.join(partial)}): no corpus verdict "
                "here (partial is never a pass); merge the shards' records with speechlab merge --gate to gate them"
            )
        return rows

    # ---- end of session -------------------------------------------------------------------------
    def write_records(self) -> None:
        """Write the run record (--speechlab-json) and keep it in the history folder (--speechlab-save)."""
        from .report import run_record, write_json

        if not (self.opts.json_path or self.opts.save):
            return
        settings = {
            "devices": self.opts.devices,
            "datasets": self.opts.datasets,
            "rounds": self.rounds,
            "gate": self.opts.gate or self.cfg.gate,
            "rtf_gate": not self.rtf_gate_off,
            "abs_rtf": self.opts.abs_rtf,
            "force_rtf": self.opts.force_rtf,
            "bootstrap": self.cfg.bootstrap,
            "xdist_workers": self.n_workers,
            "update_golden": self.opts.update,
            "shard": self.opts.shard,
            "expect_skip": self.opts.expect_skip,
            "config": str(self.cfg.path),
            "config_sha256": _file_sha256(self.cfg.path),
            "model_loads": self.load_counts,
            "notes": self.notes,
            "xdist": self.xdist,
        }
        record = run_record(self.results, self.rootdir, settings, collected=len(self.collected))
        targets: list[tuple[Path, str]] = []
        if self.opts.json_path:
            targets.append((self.opts.json_path, "fix --speechlab-json (the path of a writable file)"))
        if self.opts.save:
            hist = self.cfg.history_dir or (self.cfg.path.parent / ".speechlab" / "history")
            stamp = record["created"].replace(":", "").replace("-", "")
            targets.append((hist / f"run-{stamp}-{os.getpid()}.json", "make the history folder (history_dir) writable"))
        for path, fix in targets:
            try:
                write_json(path, record)
            except OSError as exc:
                self.write_errors.append(f"run record not written: {path}: {exc.strerror or exc}; {fix}")

    def write_goldens(self) -> list[Path]:
        """Write the goldens of every case that ran under --speechlab-update-golden (controller only)."""
        from .golden import GoldenError, saturated
        from .speed import recording_problem

        written: list[Path] = []
        marked: list[str] = []
        for r in self.results:
            if r.get("verdict") == "accepted" and r.get("golden_path"):
                path = Path(r["golden_path"])
                payload = golden_payload(r)
                problem = recording_problem(r.get("machine") or {}, r.get("metrics") or {})
                if problem and payload.get("speed_reference"):
                    # Never keep a speed baseline measured on a machine that could not measure speed: the
                    # golden says so, and the gate reports speed "not compared" until it is re-recorded.
                    payload["speed_reference"] = {
                        **payload["speed_reference"],
                        "usable": False,
                        "unusable_reason": problem,
                    }
                    self.notes.append(
                        f"{r.get('case')}: golden written, but its speed is marked unusable: {problem}; "
                        "re-record it on a quiet machine"
                    )
                machine = r.get("machine") or {}
                if self.n_workers > 1 or saturated(machine):
                    # A baseline timed while other work shared the CPUs would make every later quiet run look
                    # "improved" and a later busy run pass: it is kept, but marked and never gated.
                    payload["rtf_unreliable"] = (
                        f"recorded with {self.n_workers} xdist workers"
                        if self.n_workers > 1
                        else f"recorded under 1-minute load {machine.get('load_avg_1m')} on "
                             f"{machine.get('cpu_count')} CPUs"
                    )
                    marked.append(str(r.get("case")))
                try:
                    write_golden(self.cfg.golden_dir, path, payload)
                except GoldenError as exc:
                    self.write_errors.append(f"golden not written: {exc}")
                    continue
                except OSError as exc:
                    self.write_errors.append(
                        f"golden not written: {path}: {exc.strerror or exc}; make {self.cfg.golden_dir} writable "
                        "(with free space), then accept again"
                    )
                    continue
                written.append(path)
        if marked:
            self.notes.append(
                f"RTF of {len(marked)} golden(s) recorded on a busy machine ({', '.join(sorted(marked))}): marked "
                "rtf_unreliable, so RTF is not gated against them; re-record them without -n on a quiet "
                "machine to gate speed"
            )
        return written


def _file_sha256(path: Path) -> str | None:
    from .provenance import file_sha256

    try:
        return file_sha256(path)
    except OSError:
        return None


# Where the plugin keeps the run's session (None until configured) and, when speechlab.yaml is invalid, why.
SESSION_KEY = pytest.StashKey["SpeechlabSession | None"]()
CONFIG_ERROR_KEY = pytest.StashKey["str | None"]()
