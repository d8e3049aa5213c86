"""``speechlab validate``: check speechlab.yaml and every dataset it names (manifests and audio) without a model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def validate(config_path: Path) -> list[str]:
    """Problems found in the config and its datasets (empty when everything loads)."""
    from ..config import ConfigError, load_config
    from ..datasets import DatasetError, load_audio, load_dataset

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        return [str(exc)]
    problems: list[str] = []
    for name, spec in cfg.datasets.items():
        try:
            data = load_dataset(name, spec.manifest, allow_outside_paths=spec.allow_outside_paths, task=spec.task,
                                options=spec.options)
        except DatasetError as exc:
            if spec.real_e2e and not spec.manifest.exists():
                continue  # not bundled: absent is allowed, the cases skip
            problems.append(str(exc))
            continue
        for u in data.utterances:
            if u.audio_path is None:
                continue
            try:
                _, dur = load_audio(u.audio_path, 16000, reference=u.text)
            except DatasetError as exc:
                problems.append(str(exc))
                continue
            if u.duration is not None and abs(dur - u.duration) > 0.1:
                problems.append(
                    f"{u.audio_path}: manifest says duration {u.duration:.3f} s, the file holds {dur:.3f} s"
                )
    return problems


def _run(args: argparse.Namespace) -> int:
    problems = validate(Path(args.config))
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {args.config}")
        return 1
    print(f"{args.config}: config and datasets OK")
    return 0


def register(subparsers: Any) -> None:
    """Add ``speechlab validate``."""
    p = subparsers.add_parser("validate", help="check speechlab.yaml and its datasets' manifests and audio")
    p.add_argument("--config", default="speechlab.yaml", help="config file (default: speechlab.yaml)")
    p.set_defaults(func=_run)
