"""``speechlab merge``: join the run records of CI shards into one (:mod:`pytest_speechlab.records`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..records import MergeError, failed_cases, load_record, merge_records
from ..report import summary_lines, write_json


def _cmd_merge(args: argparse.Namespace) -> int:
    try:
        records = [load_record(Path(p)) for p in args.records]
        merged = merge_records(records, [str(p) for p in args.records], allow_mixed_configs=args.allow_mixed_configs)
        corpus_rows(merged, args.config)
    except MergeError as exc:
        print(f"speechlab merge: {exc}", file=sys.stderr)
        return 2
    write_json(Path(args.output), merged)
    for line in summary_lines(merged["cases"], merged["settings"]["notes"]):
        print(line)
    print(f"merged {len(args.records)} run records, {len(merged['cases'])} cases -> {args.output}")
    if not args.gate:
        return 0
    from ..records import record_problems
    from .check import run_check

    refused = [p for rec, src in zip(records, args.records, strict=True) for p in record_problems(rec, str(src))]
    refused += shard_gaps(records, [str(p) for p in args.records])
    for line in refused:
        print(f"gate: {line}", file=sys.stderr)
    failed = failed_cases(merged)
    if failed:
        print(f"gate: {len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
    # Then the very judgement of speechlab check on the merged record (goldens re-read, the same rules, the same
    # "compared nothing" and closing count): merge --gate never trusts a verdict that check would not give.
    check = argparse.Namespace(run=Path(args.output), golden=None, gate=None, force_rtf=False, rtf_gate="recorded",
                               expect_skip=None, require_device=None)
    rc = run_check(check)
    return 1 if failed or refused or rc else 0


def shard_gaps(records: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Why a set of shard records does not cover the matrix: a shard I/N missing, shards of different N, or
    sharded and unsharded records mixed.  Empty when it is complete (or no record is a shard)."""
    shards: dict[int, set[int]] = {}
    whole = []
    for rec, name in zip(records, names, strict=True):
        shard = (rec.get("settings") or {}).get("shard")
        if isinstance(shard, (list, tuple)) and len(shard) == 2:
            shards.setdefault(int(shard[1]), set()).add(int(shard[0]))
        else:
            whole.append(name)
    if not shards:
        return []
    out = []
    if len(shards) > 1:
        out.append(f"the records are shards of different splits ({', '.join(f'N={n}' for n in sorted(shards))}); "
                   "merge the shards of one --speechlab-shard I/N split")
    for n, have in sorted(shards.items()):
        missing = [f"{i}/{n}" for i in range(1, n + 1) if i not in have]
        if missing:
            out.append(f"shard(s) {', '.join(missing)} missing: the merged record does not cover the matrix, so the "
                       "cases of the missing shard(s) were never compared; pass every shard's record")
    if whole:
        out.append(f"{', '.join(whole)}: not a shard, merged with shards; gate a whole run or one complete split")
    return out


def corpus_rows(merged: dict[str, Any], config: str | None) -> None:
    """Chunked cases (chunks.py): join the shards' chunk rows into one corpus row each, gated against the
    case's golden with the tolerances of the config the shards ran (its sha256 must match their records')."""
    from ..chunks import chunk_rows_by_corpus, gate_with, settle

    if not chunk_rows_by_corpus(merged["cases"]):
        return
    from ..config import ConfigError, load_config
    from ..evaluation import GateSettings
    from ..provenance import file_sha256

    settings = merged["settings"]
    path = Path(config or settings.get("config") or "speechlab.yaml")
    if not path.is_file() and config is None and Path("speechlab.yaml").is_file():
        path = Path("speechlab.yaml")
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        raise MergeError(
            f"the records hold chunked cases, whose corpus verdict needs their goldens and tolerances from the "
            f"config the shards ran: {exc}; pass --config speechlab.yaml (run merge in the project's checkout)"
        ) from None
    want = settings.get("config_sha256")
    have = file_sha256(cfg.path)
    if want and have != want:
        raise MergeError(
            f"{cfg.path} (sha256 {have[:12]}) is not the config the shards ran (sha256 {str(want)[:12]}); the "
            "corpus verdicts would use other tolerances. Merge in the checkout the shards ran, or pass its config "
            "with --config"
        )
    gate = GateSettings(
        gate=str(settings.get("gate") or cfg.gate),
        rtf_gate=bool(settings.get("rtf_gate", True)),
        abs_rtf=bool(settings.get("abs_rtf", False)),
        bootstrap=cfg.bootstrap,
    )

    def gate_row(row: dict[str, Any]) -> None:
        model, dataset = str(row["model"]), str(row["dataset"])
        thresholds = cfg.tolerances_for(model, dataset)[0]
        accept = (f"pytest {cfg.path.name} -k {row['case']} --speechlab-update-golden (one run of every chunk, "
                  "e.g. with -n N; shards do not write goldens)")
        import dataclasses

        gate_with(cfg.golden_dir, thresholds, dataclasses.replace(gate), accept)(row)

    rows = settle(merged["cases"], gate_row, absent="error")
    merged["cases"] = sorted([*merged["cases"], *rows], key=lambda c: c["case"])
    for r in rows:
        if r.get("failure"):
            print(r["failure"], file=sys.stderr)


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
        "--config",
        default=None,
        metavar="PATH",
        help="speechlab.yaml the shards ran (default: the records' config path, else ./speechlab.yaml); needed "
        "only for chunked datasets, whose corpus verdict is gated here against the golden",
    )
    p.add_argument(
        "--allow-mixed-configs",
        action="store_true",
        help="merge records run with different speechlab configs (refused by default)",
    )
    p.set_defaults(func=_cmd_merge)
