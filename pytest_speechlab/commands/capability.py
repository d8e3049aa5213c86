"""``speechlab matrix RUN.json...``: the capability matrix model x device, built only from run records.

Each cell says what really happened there: ``ran`` (every dataset ran and passed its gate), ``failed``
(an error or a gate that did not pass) or ``skipped``; every cell that is not a plain ``ran`` has a
footnote saying why, per dataset.  Nothing is inferred from the config: a pair that no record mentions
shows ``-``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..records import RunRecordError, case_state, failure_reason, is_part, load_run

DEVICE_ORDER = ("cpu", "cuda", "mps", "remote")


def build_matrix(records: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[tuple[str, str], str], list[str]]:
    """(models, devices, cell text per (model, device), footnotes).  Later records override earlier ones."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for rec in sorted(records, key=lambda r: str(r.get("created", ""))):
        for c in rec["cases"]:
            if not is_part(c):  # a chunk row is not the case's result: its corpus row is
                latest[(c["model"], c["device"], c["dataset"])] = c
    models = sorted({k[0] for k in latest})
    devices = sorted({k[1] for k in latest}, key=lambda d: (DEVICE_ORDER.index(d) if d in DEVICE_ORDER else 99, d))
    cells: dict[tuple[str, str], str] = {}
    notes: list[str] = []
    for m in models:
        for d in devices:
            cases = [c for (cm, cd, _), c in sorted(latest.items()) if cm == m and cd == d]
            if not cases:
                cells[(m, d)] = "-"
                continue
            states = [case_state(c) for c in cases]
            counts = {s: states.count(s) for s in ("ran", "failed", "skipped") if s in states}
            text = ", ".join(s if n == len(states) else f"{s} {n}/{len(states)}" for s, n in counts.items())
            why = [(c, s) for c, s in zip(cases, states, strict=True) if s != "ran"]
            if why:
                first = len(notes) + 1
                notes.extend([f"[{first + i}] {m} on {d}, {c['dataset']}: {s}: {failure_reason(c)}"
                              for i, (c, s) in enumerate(why)])
                text += " [" + ",".join(str(first + i) for i in range(len(why))) + "]"
            cells[(m, d)] = text
    return models, devices, cells, notes


def render_matrix(records: list[dict[str, Any]]) -> str:
    """The matrix as an aligned text table followed by the footnotes."""
    models, devices, cells, notes = build_matrix(records)
    rows = [["model", *devices]] + [[m, *(cells[(m, d)] for d in devices)] for m in models]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    sources = ", ".join(r["_path"] for r in records)
    return "\n".join([f"capability matrix from {sources}", "", *lines, "", *notes]).rstrip() + "\n"


def register(subparsers: Any) -> None:
    """Add the ``matrix`` subcommand."""
    p = subparsers.add_parser(
        "matrix",
        help="print the capability matrix model x device (ran / failed / skipped and why) from run records",
        description="Print what ran, failed or was skipped (and why) per model and device, from run records "
                    "written by pytest --speechlab-json. Later records override earlier ones.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN.json", help="run records")
    p.set_defaults(func=run_matrix)


def run_matrix(args: argparse.Namespace) -> int:
    """CLI entry: print the matrix; exit 2 when a record cannot be read."""
    try:
        records = [load_run(p) for p in args.runs]
    except RunRecordError as exc:
        print(f"speechlab matrix: {exc}")
        return 2
    print(render_matrix(records), end="")
    return 0
