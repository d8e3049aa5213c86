"""``speechlab convert ct2-to-whisper``: the openai-whisper backend's converter
(:mod:`pytest_speechlab.backends.convert_ct2`) as a command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..backends.base import BackendError
from ..backends.convert_ct2 import convert_ct2_to_whisper_report, resolve_ct2_source


def _cmd_ct2_to_whisper(args: argparse.Namespace) -> int:
    try:
        src_dir = resolve_ct2_source(args.src)
        report = convert_ct2_to_whisper_report(src_dir, Path(args.out))
    except BackendError as exc:
        print(f"speechlab convert: error: {exc}", file=sys.stderr)
        return 1
    d = report.dims
    how = "dequantised with stored scales" if report.dequantized else f"cast {report.stored_dtype} -> float32"
    print(
        f"wrote {report.out} ({report.out.stat().st_size / 1e6:.1f} MB) in {report.seconds:.1f}s: "
        f"{d['n_audio_layer']}+{d['n_text_layer']} layers, width {d['n_audio_state']}, vocab {d['n_vocab']}, "
        f"{d['n_mels']} mels, weights {how}, {len(report.alignment_heads)} alignment heads"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add ``speechlab convert ct2-to-whisper SRC_DIR OUT.pt`` to the ``speechlab`` command."""
    convert = subparsers.add_parser("convert", help="convert model weights between formats")

    def _help(_: argparse.Namespace) -> int:
        convert.print_help()
        return 2

    convert.set_defaults(func=_help)
    sub = convert.add_subparsers(dest="convert_command", metavar="FORMAT")
    p = sub.add_parser(
        "ct2-to-whisper",
        help="CTranslate2 Whisper folder -> openai-whisper .pt checkpoint (offline)",
        description="Convert a CTranslate2 Whisper model folder (model.bin + config.json) into an openai-whisper "
        "checkpoint loadable with whisper.load_model(OUT.pt). SRC_DIR may be bundled:tiny.en or bundled:base.",
    )
    p.add_argument("src", metavar="SRC_DIR", help="CTranslate2 Whisper folder, or bundled:tiny.en / bundled:base")
    p.add_argument("out", metavar="OUT.pt", help="checkpoint to write (atomically)")
    p.set_defaults(func=_cmd_ct2_to_whisper)
