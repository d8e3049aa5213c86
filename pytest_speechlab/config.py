"""speechlab.yaml: load, validate (every message names the file and the key), and expose typed specs."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .backends.base import DEVICES, TASKS, ModelSpec, Opt, option_problem
from .tolerances import DEFAULT_THRESHOLDS as DEFAULT_THRESHOLDS  # per-stage defaults live with the rule

STAGES = ("experimental", "candidate", "production", "deprecated")
ALL_DEVICES = (*DEVICES, "remote")
GATES = ("strict", "statistical")

# Tolerances used when speechlab.yaml sets none.  Production gates tighter than candidate: a model that
# ships is held to its baseline more strictly than one still being evaluated.
THRESHOLD_KEYS = {
    "wer_abs": "WER may exceed the golden by this much (absolute)",
    "cer_abs": "CER may exceed the golden by this much (absolute)",
    "rtf_rel": "absolute RTF may exceed the golden by this fraction (gated only with --speechlab-abs-rtf)",
    "speed_rel": "relative speed (vs the speed reference) may exceed the golden by at most this fraction (default 0.2)",
    "speed_rel_min": "the relative-speed tolerance never goes below this, however quiet the reference (default 0.15)",
    "rss_rel": "per-case peak RSS may exceed the golden by this fraction (default 0.25)",
    "cross_device_abs": "extra WER/CER allowance when a device without its own golden is compared with the cpu "
                        "golden (default 0.02)",
    "cross_machine_abs": "extra WER/CER allowance when the golden was recorded on other hardware of the same device "
                         "(another CPU model or CPU features; default 0.02, 0 turns it off)",
    "entity_abs": "entity accuracy may fall below the golden by this much",
    "confidence": "confidence level of the statistical gate's bootstrap interval",
    # TTS audio sanity (checked against absolute bands, not the golden)
    "clipping_max": "largest share of clipped samples",
    "silence_max_s": "longest leading or trailing silence in seconds",
    "rms_min_dbfs": "quietest RMS level in dBFS",
    "sec_per_char_min": "shortest plausible duration per input character",
    "sec_per_char_max": "longest plausible duration per input character",
    "rms_max_dbfs": "loudest RMS level in dBFS (TTS audio sanity)",
    "roundtrip_wer_max": "highest pooled round-trip WER of a TTS voice through its judge, golden or not",
    "catastrophic_max": "most utterances allowed a catastrophic output (hypothesis > 3x the reference, or "
    "compression ratio > 2.4); unset: the golden's count (production: 0)",
    "hallucination_wpm_abs": "words per minute of non-speech may exceed the golden by this much (default 5)",
    "hallucination_rate_abs": "share of non-speech clips with any output may exceed the golden by this much (default "
                              "0)",
    "ts_start_ms_abs": "long-form start error (median and p95, ms) may exceed the golden by this much (default 100)",
    "ts_pr_abs": "long-form start precision/recall may fall below the golden by this much (default 0.05)",
    "vad_words_abs": "long-form words in segments over VAD non-speech may exceed the golden's count by this many "
    "(default 0)",
    "dnsmos_abs": "TTS pooled DNSMOS SIG/BAK/OVRL may fall below the golden by this much (MOS points, default 0.1)",
    "dnsmos_sentence_abs": "TTS DNSMOS OVRL of any one sentence may fall below the golden by this much (default 0.3)",
}
MODEL_KEYS = {
    "backend",
    "weights",
    "devices",
    "stage",
    "task",
    "thresholds",
    "real_e2e",
    "description",
    "golden_from",
    "speed_reference",
}
DATASET_KEYS = {
    "manifest",
    "chunks",
    "chunk_minutes",
    "normalizer",
    "markers",
    "thresholds",
    "task",
    "real_e2e",
    "allow_outside_paths",
    "description",
    "language",
    "entities",
    "perturb",
    "longform",
    "dnsmos",
    # tables and Hugging Face datasets (tabular.py)
    "columns",
    "hf-dataset",
    "config",
    "split",
    "slice",
}
TOP_KEYS = {
    "models",
    "datasets",
    "thresholds",
    "golden_dir",
    "gate",
    "rounds",
    "bootstrap",
    "judge",
    "history_dir",
    "speed_reference",
    "min_timed_audio_s",
}


# A model or dataset name becomes a test id and a folder under golden_dir: letters, digits and -_.+@,
# never starting with a dot (so never '.' or '..') and never holding a slash.
NAME_RE = re.compile(r"[A-Za-z0-9_+@-][A-Za-z0-9_.+@-]*")


def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a model or dataset name (it becomes a path), or None when it can."""
    if isinstance(name, str) and NAME_RE.fullmatch(name):
        return None
    return (
        f"name {name!r} is not allowed: use letters, digits and - _ . + @ only, not starting with a dot "
        "(names become test ids and folders under golden_dir)"
    )


class ConfigError(Exception):
    """speechlab.yaml is invalid; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of ``datasets:``: where the data is and how to score it."""

    name: str
    manifest: Path
    normalizer: str = "whisper-en"
    markers: tuple[str, ...] = ()
    task: str = "asr"
    thresholds: dict[str, float] = field(default_factory=dict)
    real_e2e: bool = False
    allow_outside_paths: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpeechlabConfig:
    """The whole validated config."""

    path: Path
    models: dict[str, ModelSpec]
    datasets: dict[str, DatasetSpec]
    thresholds: dict[str, float]
    golden_dir: Path
    gate: str = "strict"
    rounds: int | None = None  # None: adaptive (timed passes until min_timed_audio_s of audio)
    bootstrap: int = 2000
    judge: str | None = None
    history_dir: Path | None = None
    speed_reference_runs: int = 5
    min_timed_audio_s: float = 30.0

    def thresholds_for(self, model: str, dataset: str) -> dict[str, float]:
        """Tolerances for one case (the stage is a ceiling the global block cannot loosen: tolerances.py)."""
        return self.tolerances_for(model, dataset)[0]

    def tolerances_for(self, model: str, dataset: str | None) -> tuple[dict[str, float], dict[str, str]]:
        """Tolerances for one case and, per key, where the value came from (see tolerances.py)."""
        from .tolerances import effective

        spec = self.models[model]
        ds = self.datasets.get(dataset) if dataset else None
        return effective(
            spec.stage, self.thresholds, model, spec.thresholds, dataset if ds else None, ds.thresholds if ds else {}
        )


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (YAML itself keeps the last, silently:
    a second ``models:`` block, or a model listed twice with a looser tolerance, would win unseen)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: let SafeLoader report it
                break
            if first is not None:
                raise _DuplicateKey(key, first, key_node.start_mark.line + 1)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, again: int) -> None:
        super().__init__(key, first, again)
        self.key, self.first, self.again = key, first, again


def _err(path: Path, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {key}: {msg}")


def _flag(path: Path, key: str, raw: Any) -> bool:
    """A yes/no key: a YAML boolean only ("false" in quotes is a string, and a non-empty string is true to
    Python: ``real_e2e: "false"`` would have switched the case *on*)."""
    if raw is None:
        return False
    if not isinstance(raw, bool):
        raise _err(path, key, f"must be true or false (a YAML boolean, without quotes), got {raw!r}")
    return raw


def _thresholds(path: Path, key: str, raw: Any) -> dict[str, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _err(path, key, f"must be a mapping of tolerances, got {type(raw).__name__}")
    out: dict[str, float] = {}
    for k, v in raw.items():
        if k not in THRESHOLD_KEYS:
            raise _err(path, f"{key}.{k}", f"unknown tolerance; known: {', '.join(sorted(THRESHOLD_KEYS))}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _err(path, f"{key}.{k}", f"must be a finite number, got {v!r}")
        if k not in ("rms_min_dbfs", "rms_max_dbfs") and v < 0:
            raise _err(path, f"{key}.{k}", f"must be >= 0, got {v!r}")
        if k == "confidence" and not 0 < v < 1:
            raise _err(path, f"{key}.{k}", f"must be between 0 and 1 exclusive (e.g. 0.95), got {v!r}")
        if k in ("catastrophic_max", "vad_words_abs") and not float(v).is_integer():
            what = "utterances" if k == "catastrophic_max" else "words"
            raise _err(path, f"{key}.{k}", f"is a count of {what}: must be a whole number >= 0, got {v!r}")
        if k in ("clipping_max", "hallucination_rate_abs", "ts_pr_abs") and v > 1:
            raise _err(path, f"{key}.{k}", f"is a share of samples: must be <= 1, got {v!r}")
        out[str(k)] = float(v)
    return out


def _str_list(path: Path, key: str, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise _err(path, key, f"must be a list of strings, got {raw!r}")
    return tuple(raw)


def _backend_declarations(backend: str) -> tuple[tuple[str, ...] | None, dict[str, Opt]]:
    """The model keys a backend declares it reads (None: not declared, or the backend cannot be imported) and
    the value checks it declares for them (empty when none): one backend instance for both."""
    from .backends import get_backend

    try:
        instance = get_backend(backend)
    except ImportError:
        return None, {}
    return getattr(instance, "options", None), dict(getattr(instance, "option_types", {}) or {})


def _model(path: Path, name: str, raw: Any) -> ModelSpec:
    key = f"models.{name}"
    if not isinstance(raw, dict):
        raise _err(path, key, "must be a mapping with at least 'backend:'")
    from .backends import REGISTRY

    backend = raw.get("backend")
    if not isinstance(backend, str):
        raise _err(path, f"{key}.backend", f"is required; one of: {', '.join(sorted(REGISTRY))}")
    if backend not in REGISTRY:
        raise _err(path, f"{key}.backend", f"unknown backend {backend!r}; known: {', '.join(sorted(REGISTRY))}")
    devices = _str_list(path, f"{key}.devices", raw.get("devices", ["cpu"]))
    for d in devices:
        if d not in ALL_DEVICES:
            raise _err(path, f"{key}.devices", f"unknown device {d!r}; known: {', '.join(ALL_DEVICES)}")
    stage = raw.get("stage", "candidate")
    if stage not in STAGES:
        raise _err(path, f"{key}.stage", f"unknown stage {stage!r}; one of: {', '.join(STAGES)}")
    task = raw.get("task", "asr")
    if task not in TASKS:
        raise _err(path, f"{key}.task", f"unknown task {task!r}; one of: {', '.join(TASKS)}")
    weights = raw.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise _err(path, f"{key}.weights", f"must be a string (a path or bundled:NAME), got {weights!r}")
    options = {k: v for k, v in raw.items() if k not in MODEL_KEYS}
    known, option_types = _backend_declarations(backend)
    problem = option_problem(option_types, options)
    if problem:
        raise _err(path, f"{key}.{problem[0]}", problem[1])
    if known is not None:
        unknown = sorted(str(k) for k in options if k not in known)
        if unknown:
            raise _err(
                path,
                f"{key}.{unknown[0]}",
                f"unknown key for backend {backend!r}; known: {', '.join(sorted(MODEL_KEYS | set(known)))}",
            )
    return ModelSpec(
        name=name,
        backend=backend,
        weights=weights,
        devices=devices,
        stage=stage,
        task=task,
        options=options,
        thresholds=_thresholds(path, f"{key}.thresholds", raw.get("thresholds")),
        config_path=path,
        real_e2e=_flag(path, f"{key}.real_e2e", raw.get("real_e2e")),
        golden_from=_golden_from(path, f"{key}.golden_from", raw.get("golden_from")),
        speed_reference=_speed_reference(path, f"{key}.speed_reference", raw.get("speed_reference")),
    )


def _speed_reference(path: Path, key: str, raw: Any) -> str | None:
    from .speed import WORKLOADS

    if raw is None:
        return None
    if raw not in (*WORKLOADS, "none"):
        raise _err(path, key, f"unknown speed reference {raw!r}; one of: {', '.join(WORKLOADS)}, none")
    return str(raw)


def _golden_from(path: Path, key: str, raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or raw.count("/") != 1 or raw.split("/")[1] not in ALL_DEVICES:
        raise _err(path, key, f"must be MODEL/DEVICE (e.g. fw-tiny-en/cpu), got {raw!r}")
    return raw


def _dataset(path: Path, name: str, raw: Any) -> DatasetSpec:
    from .metrics import NORMALIZERS

    key = f"datasets.{name}"
    if not isinstance(raw, dict):
        raise _err(path, key, "must be a mapping with at least 'manifest:'")
    unknown = set(raw) - DATASET_KEYS
    if unknown:
        raise _err(path, f"{key}.{min(unknown)}", f"unknown key; known: {', '.join(sorted(DATASET_KEYS))}")
    from .tabular import HF_KEYS, source_problem

    problem = source_problem(raw)
    if problem:
        raise _err(path, f"{key}.{problem[0]}", problem[1])
    manifest = raw.get("manifest")
    if "hf-dataset" in raw:  # read from the Hugging Face cache: no manifest path (a label stands in for one)
        manifest = f"hf-dataset:{raw['hf-dataset']}"
    if not isinstance(manifest, str):
        raise _err(
            path,
            f"{key}.manifest",
            "is required: a JSONL manifest, a Parquet/Arrow file or a folder of audio + .txt files, relative to "
            "this file (or hf-dataset: NAME)",
        )
    mpath = Path(manifest).expanduser()
    if not mpath.is_absolute() and "hf-dataset" not in raw:
        mpath = path.parent / mpath
    normalizer = raw.get("normalizer", "whisper-en")
    if normalizer not in NORMALIZERS:
        raise _err(path, f"{key}.normalizer", f"unknown normaliser {normalizer!r}; one of: {', '.join(NORMALIZERS)}")
    task = raw.get("task", "asr")
    if task not in TASKS:
        raise _err(path, f"{key}.task", f"unknown task {task!r}; one of: {', '.join(TASKS)}")
    if "longform" in raw:
        from .longform import problem as longform_problem

        bad = longform_problem(raw["longform"])
        if bad:
            raise _err(path, f"{key}.longform.{bad[0]}" if bad[0] else f"{key}.longform", bad[1])
        if task != "asr":
            raise _err(path, f"{key}.longform",
                       f"builds long recordings: only an asr dataset can have it ({name} is {task})")
    if "dnsmos" in raw and (not isinstance(raw["dnsmos"], bool) or (raw["dnsmos"] and task != "tts")):
        raise _err(path, f"{key}.dnsmos", f"got {raw['dnsmos']!r}; true or false, and true only on a task: tts dataset "
                   "(DNSMOS scores synthesised speech)")
    _chunking(path, key, name, raw, task)
    markers = _str_list(path, f"{key}.markers", raw.get("markers", []))
    for m in markers:
        if not m.isidentifier():
            raise _err(path, f"{key}.markers", f"{m!r} is not a valid marker name (letters, digits, _)")
    return DatasetSpec(
        name=name,
        manifest=mpath,
        normalizer=normalizer,
        markers=markers,
        task=task,
        thresholds=_thresholds(path, f"{key}.thresholds", raw.get("thresholds")),
        real_e2e=_flag(path, f"{key}.real_e2e", raw.get("real_e2e")),
        allow_outside_paths=_flag(path, f"{key}.allow_outside_paths", raw.get("allow_outside_paths")),
        options={
            **{
                k: raw[k]
                for k in ("language", "entities", "description", "longform", "dnsmos", "columns", "chunks",
                          "chunk_minutes", *HF_KEYS)
                if k in raw
            },
            # a save_to_disk folder is relative to this file, as a manifest is
            **(
                {"hf-dataset": str(path.parent / raw["hf-dataset"])}
                if "hf-dataset" in raw and (path.parent / raw["hf-dataset"]).is_dir()
                else {}
            ),
        },
    )


_CHUNK_OPTS = {"chunks": Opt("int", lo=1), "chunk_minutes": Opt("number", lo=0, lo_open=True)}


def _chunking(path: Path, key: str, name: str, raw: dict[str, Any], task: str) -> None:
    """``chunks: N`` / ``chunk_minutes: M`` (chunks.py): positive, on a plain asr dataset only."""
    if "chunks" in raw and not _CHUNK_OPTS["chunks"].accepts(raw["chunks"]):
        raise _err(path, f"{key}.chunks",
                   f"got {raw['chunks']!r}; a whole number >= 1 (how many chunks to split {name} into)")
    if "chunk_minutes" in raw and not _CHUNK_OPTS["chunk_minutes"].accepts(raw["chunk_minutes"]):
        raise _err(path, f"{key}.chunk_minutes", f"got {raw['chunk_minutes']!r}; a number of minutes > 0 (e.g. 10)")
    if "chunks" not in raw and "chunk_minutes" not in raw:
        return
    which = "chunks" if "chunks" in raw else "chunk_minutes"
    if task != "asr":
        raise _err(path, f"{key}.{which}", f"splits an asr dataset into chunks; {name} is {task}")
    for other in ("longform", "perturb"):
        if other in raw:
            raise _err(path, f"{key}.{which}", f"cannot be combined with {other}: ({other} builds its audio from "
                       f"the whole dataset, so a chunk would not score what the whole run scores); remove one")


def _perturbed(path: Path, spec: DatasetSpec, raw: Any) -> dict[str, DatasetSpec]:
    """The derived datasets of a ``perturb:`` entry (one per level: ``NAME+snr10``), validated."""
    import dataclasses

    from . import perturb

    key = f"datasets.{spec.name}.perturb"
    problem = perturb.problem(raw)
    if problem:
        raise _err(path, f"{key}.{problem[0]}" if problem[0] else key, problem[1])
    if spec.task != "asr":
        raise _err(path, key, f"perturbs audio: only an asr dataset can have it ({spec.name} is {spec.task})")
    out = {}
    for suffix, level in perturb.levels(raw):
        name = f"{spec.name}+{suffix}"
        out[name] = dataclasses.replace(spec, name=name, options={**spec.options, "perturb": level})
    return out


def _read_yaml(path: Path) -> Any:
    """The parsed YAML of ``path``; :class:`ConfigError` when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; create it or pass --speechlab-config PATH") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file; name the speechlab.yaml inside it") from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the config ({exc.strerror or exc}); check the path and its permissions"
        ) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except _DuplicateKey as exc:
        raise ConfigError(
            f"{path}: duplicate key {exc.key!r} at line {exc.again} (first at line {exc.first}); YAML would "
            "silently keep only the last one: remove or merge one of them"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{path}: malformed YAML{where}: {problem}; fix the syntax (yaml.safe_load must parse it)"
        ) from None


def _models_and_datasets(path: Path, raw: dict[str, Any]) -> tuple[dict[str, ModelSpec], dict[str, DatasetSpec]]:
    """The ``models:`` and ``datasets:`` sections, perturbed dataset copies included, validated."""
    models_raw = raw.get("models") or {}
    datasets_raw = raw.get("datasets") or {}
    if not isinstance(models_raw, dict):
        raise _err(path, "models", "must be a mapping of model name -> settings")
    if not isinstance(datasets_raw, dict):
        raise _err(path, "datasets", "must be a mapping of dataset name -> settings")
    for section, names in (("models", models_raw), ("datasets", datasets_raw)):
        for name in names:
            problem = name_problem(name)
            if problem:
                raise _err(path, f"{section}.{name}", problem)
    models = {str(k): _model(path, str(k), v) for k, v in models_raw.items()}
    datasets = {str(k): _dataset(path, str(k), v) for k, v in datasets_raw.items()}
    for k, v in datasets_raw.items():  # perturbed copies: one dataset (and case, and golden) per level
        if isinstance(v, dict) and "perturb" in v:
            for name, derived in _perturbed(path, datasets[str(k)], v["perturb"]).items():
                if name in datasets:
                    raise _err(
                        path, f"datasets.{k}.perturb", f"derives {name!r}, which is already a dataset; rename one"
                    )
                datasets[name] = derived
    for m in models.values():
        if m.golden_from and m.golden_from.split("/")[0] not in models:
            raise _err(path, f"models.{m.name}.golden_from", f"names no model in models: ({m.golden_from!r})")
    return models, datasets


def _run_settings(path: Path, raw: dict[str, Any]) -> tuple[str, str, int | None, int | float, int, int]:
    """golden_dir, gate, rounds, min_timed_audio_s, speed_reference.runs and bootstrap, validated."""
    golden = raw.get("golden_dir", "golden")
    if not isinstance(golden, str):
        raise _err(path, "golden_dir", f"must be a path string, got {golden!r}")
    gate = raw.get("gate", "strict")
    if gate not in GATES:
        raise _err(path, "gate", f"unknown gate {gate!r}; one of: {', '.join(GATES)}")
    rounds = raw.get("rounds")
    if rounds is not None and (isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1):
        raise _err(
            path,
            "rounds",
            f"must be an integer >= 1 (timed passes over each dataset), got {rounds!r}; "
            "leave it out for adaptive rounds (min_timed_audio_s)",
        )
    min_audio = raw.get("min_timed_audio_s", 30.0)
    if isinstance(min_audio, bool) or not isinstance(min_audio, (int, float)) or not 0 <= min_audio < math.inf:
        raise _err(path, "min_timed_audio_s", f"must be a number of seconds >= 0, got {min_audio!r}")
    sref = raw.get("speed_reference") or {}
    if not isinstance(sref, dict) or set(sref) - {"runs"}:
        raise _err(
            path,
            "speed_reference",
            f"must be a mapping with 'runs: N' (N >= 5), got {sref!r}; "
            "choose a model's workload with speed_reference: NAME under the model",
        )
    ref_runs = sref.get("runs", 5)
    if isinstance(ref_runs, bool) or not isinstance(ref_runs, int) or ref_runs < 5:
        raise _err(path, "speed_reference.runs", f"must be an integer >= 5 (reference runs per case), got {ref_runs!r}")
    bootstrap = raw.get("bootstrap", 2000)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 100:
        raise _err(path, "bootstrap", f"must be an integer >= 100 (bootstrap resamples), got {bootstrap!r}")
    return golden, gate, rounds, min_audio, ref_runs, bootstrap


def _check_speed_bounds(cfg: SpeechlabConfig) -> None:
    """Refuse a speed_rel_min above speed_rel for any model x dataset pair."""
    from .golden import SPEED_REL_MAX

    for model in cfg.models:
        for dataset in cfg.datasets:
            t = cfg.thresholds_for(model, dataset)
            hi = t.get("speed_rel", SPEED_REL_MAX)
            if t.get("speed_rel_min", 0.0) > hi:
                raise _err(
                    cfg.path,
                    "thresholds.speed_rel_min",
                    f"{t['speed_rel_min']} is above speed_rel {hi} for {model} on {dataset}: the "
                    "relative-speed tolerance lies between them; lower speed_rel_min or raise speed_rel",
                )


def load_config(path: Path) -> SpeechlabConfig:
    """Read and validate ``path``; raise :class:`ConfigError` naming the file and key on any problem."""
    path = Path(path).resolve()
    raw = _read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with 'models:' and 'datasets:'")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise _err(path, min(unknown), f"unknown top-level key; known: {', '.join(sorted(TOP_KEYS))}")
    models, datasets = _models_and_datasets(path, raw)
    golden, gate, rounds, min_audio, ref_runs, bootstrap = _run_settings(path, raw)
    judge = raw.get("judge")
    if judge is not None and judge not in models:
        raise _err(
            path, "judge", f"names no model in models: ({judge!r}); the TTS judge must be a configured ASR model"
        )
    history = raw.get("history_dir")
    cfg = SpeechlabConfig(
        path=path,
        models=models,
        datasets=datasets,
        thresholds=_thresholds(path, "thresholds", raw.get("thresholds")),
        golden_dir=(path.parent / golden).resolve(),
        gate=gate,
        rounds=rounds,
        bootstrap=bootstrap,
        judge=judge,
        history_dir=(path.parent / history).resolve() if isinstance(history, str) else None,
        speed_reference_runs=ref_runs,
        min_timed_audio_s=float(min_audio),
    )
    _check_speed_bounds(cfg)
    return cfg
