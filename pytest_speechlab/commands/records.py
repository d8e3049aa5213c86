"""``speechlab merge``: join the run records of CI shards into one (:mod:`pytest_speechlab.records`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..records import MergeError, failed_cases, load_record, merge_records
from ..report import summary_lines, write_json


def _cmd_merge(args: argparse.Namespace) -> int:
    try:
        records = [load_record(Path(p)) for p in args.records]
        merged = merge_records(records, [str(p) for p in args.records], allow_mixed_configs=args.allow_mixed_configs)
    except MergeError as exc:
        print(f"speechlab merge: {exc}", file=sys.stderr)
        return 2
    write_json(Path(args.output), merged)
    for line in summary_lines(merged["cases"], merged["settings"]["notes"]):
        print(line)
    print(f"merged {len(args.records)} run records, {len(merged['cases'])} cases -> {args.output}")
    if not args.gate:
        return 0
    from ..records import compared_nothing, record_problems

    refused = [p for rec, src in zip(records, args.records, strict=True) for p in record_problems(rec, str(src))]
    refused += record_problems(merged, str(args.output))
    nothing = compared_nothing(merged, str(args.output))
    if nothing:
        refused.append(nothing)
    for line in refused:
        print(f"gate: {line}", file=sys.stderr)
    failed = failed_cases(merged)
    if failed:
        print(f"gate: {len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or refused else 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``speechlab merge`` to the ``speechlab`` command."""
    p = subparsers.add_parser(
        "merge",
        help="join the run records of several shards into one",
        description="Join run records (pytest --speechlab-json) of CI shards into one record.",
    )
    p.add_argument("records", nargs="+", metavar="RUN.json", help="run records to merge")
    p.add_argument("-o", "--output", required=True, metavar="MERGED.json", help="where to write the merged record")
    p.add_argument(
        "--gate", action="store_true", help="exit 1 when a merged case failed its gate (fail, missing golden, error)"
    )
    p.add_argument(
        "--allow-mixed-configs",
        action="store_true",
        help="merge records run with different speechlab configs (refused by default)",
    )
    p.set_defaults(func=_cmd_merge)
