"""``speechlab ab --base REV -- PYTEST_ARGS``: time the base revision's cases and this tree's in one job.

The golden's speed was measured by another job, often on another VM; the paired speed reference cancels
most of that, not all of it (faster-whisper's reference slows more than the model on a busy 2-vCPU runner,
benchmarks/README.md).  What works elsewhere is comparing like with like inside one job: this command checks
out the base revision in a temporary git worktree (or takes a checkout you made, ``--base-dir``), then runs
the same pytest command in both trees, alternating A B B A ... for ``--pairs`` pairs, every run a fresh
process on the same machine minutes apart, and compares each case's absolute RTF: the median over the pairs
of (this tree's RTF / the base's RTF in the same pair).  Exit status: 0 nothing slower, 1 a case slower than
the tolerance (or one that ran on the base and errored here), 2 the comparison could not be made (not a git
repository, unknown revision, a run that crashed, no case timed in both trees).

Each tree's own code is imported first (its root and ``src/`` go first on ``PYTHONPATH``: your conftest,
your backend package, and for this repository the plugin itself); what is installed in the environment
is shared.  Accuracy is not compared here: each run is gated against its own tree's goldens as usual, and
this command reads only the speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text

DEFAULT_PAIRS = 3
DEFAULT_TOLERANCE = 0.15


class AbError(Exception):
    """The comparison cannot be made (exit status 2); the message says why and what to do."""


def register(subparsers: Any) -> None:
    """Add the ``ab`` subcommand."""
    p = subparsers.add_parser(
        "ab",
        help="time the base revision's cases and this tree's alternately in one job (exit 1 when slower)",
        description="Run the same pytest command on a base revision (a temporary git worktree) and on this "
                    "working tree, alternating A B B A for --pairs pairs, and compare each case's RTF run by run. "
                    "Exit status: 0 nothing slower, 1 a case slower than the tolerance (or errored here only), "
                    "2 the comparison could not be made.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--base", metavar="REV", help="git revision to compare against (e.g. origin/main)")
    where.add_argument("--base-dir", type=Path, metavar="DIR",
                       help="an existing checkout of the base revision (instead of --base)")
    p.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, metavar="N",
                   help=f"base/head run pairs, at least 2 (default {DEFAULT_PAIRS})")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="REL",
                   help=f"fail when a case is slower than (1 + REL) x the base (default {DEFAULT_TOLERANCE})")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the comparison as JSON")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="-- PYTEST_ARGS",
                   help="the pytest command line for both trees (e.g. -- speechlab.yaml -m smoke)")
    p.set_defaults(func=run_ab)


def _git(*args: str, cwd: Path) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise AbError("git is not installed: install git, or pass --base-dir with a checkout of the base") from None
    if proc.returncode != 0:
        raise AbError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def _toplevel(here: Path) -> Path | None:
    """The root of the git working tree holding ``here``, or None outside git."""
    try:
        return Path(_git("rev-parse", "--show-toplevel", cwd=here)).resolve()
    except AbError:
        return None


def _pythonpath(root: Path) -> str:
    """``PYTHONPATH`` for a run in ``root``: the tree's own code first, then whatever was set."""
    parts = [str(root)] + ([str(root / "src")] if (root / "src").is_dir() else [])
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


def _one_run(label: str, root: Path, workdir: Path, pytest_args: Sequence[str], out: Path) -> list[dict[str, Any]]:
    """One pytest session in ``workdir``; the cases of its run record.  0 and 1 (a gated failure) are runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env["PYTHONPATH"] = _pythonpath(root)
    cmd = [sys.executable, "-m", "pytest", *pytest_args, "-p", "no:cacheprovider", "--speechlab-json", str(out)]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1) or not out.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise AbError(f"the {label} run exited {proc.returncode} in {workdir} "
                      f"({shlex.join(cmd[1:])}) without a run record; its last lines:\n{tail}")
    cases: list[dict[str, Any]] = json.loads(out.read_text(encoding="utf-8")).get("cases") or []
    return cases


def _rtf(case: dict[str, Any] | None) -> float | None:
    if case is None or case.get("status") != "ran":
        return None
    x = (case.get("metrics") or {}).get("rtf")
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 else None


def compare(runs: list[tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]],
            tolerance: float) -> list[dict[str, Any]]:
    """Per case: the pairs' RTFs, head/base ratios, their median and the verdict.  ``runs`` holds one
    ``(base cases, head cases)`` per pair, each keyed by case id."""
    ids = sorted({cid for base, head in runs for cid in (*base, *head)})
    rows = []
    for cid in ids:
        base_rtf = [_rtf(base.get(cid)) for base, _ in runs]
        head_rtf = [_rtf(head.get(cid)) for _, head in runs]
        ratios = [h / b for b, h in zip(base_rtf, head_rtf, strict=True) if b and h]
        row: dict[str, Any] = {"case": cid, "base_rtf": base_rtf, "head_rtf": head_rtf,
                               "ratios": [round(r, 4) for r in ratios]}
        head_status = {str((head.get(cid) or {}).get("status", "absent")) for _, head in runs}
        base_status = {str((base.get(cid) or {}).get("status", "absent")) for base, _ in runs}
        if len(ratios) == len(runs):
            ratio = statistics.median(ratios)
            row["ratio"] = round(ratio, 4)
            row["verdict"] = ("fail" if ratio > 1 + tolerance
                              else "improved" if ratio * (1 + tolerance) < 1 else "pass")
        elif "ran" in base_status and "error" in head_status:
            row["verdict"] = "fail"
            row["note"] = f"ran on the base, {'/'.join(sorted(head_status))} here"
        else:
            row["verdict"] = "not compared"
            row["note"] = f"base {'/'.join(sorted(base_status))}, here {'/'.join(sorted(head_status))}"
        rows.append(row)
    return rows


def _render(rows: list[dict[str, Any]], header: str) -> str:
    def med(xs: list[float | None]) -> str:
        vals = [x for x in xs if x]
        return f"{statistics.median(vals):.4f}" if vals else "-"

    table = [("case", "base RTF", "RTF here", "here/base", "pairs", "verdict")]
    for r in rows:
        table.append((r["case"], med(r["base_rtf"]), med(r["head_rtf"]),
                      f"x{r['ratio']:.2f}" if "ratio" in r else "-",
                      " ".join(f"{x:.2f}" for x in r["ratios"]) or "-",
                      (r["verdict"].upper() if r["verdict"] == "fail" else r["verdict"])
                      + (f" ({r['note']})" if r.get("note") else "")))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    lines = [header]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in table]
    return "\n".join(lines)


def _prepare_base(args: argparse.Namespace, here: Path, scratch: Path) -> tuple[Path, Path, str]:
    """(base root, base working directory, label) for ``--base`` (a new worktree) or ``--base-dir``."""
    if args.base_dir is not None:
        base = args.base_dir.resolve()
        if not base.is_dir():
            raise AbError(f"--base-dir {args.base_dir}: no such directory")
        return base, base, str(args.base_dir)
    top = _toplevel(here)
    if top is None:
        raise AbError(f"{here} is not in a git repository: run it in your project's checkout, or pass --base-dir "
                      "with a checkout of the base revision")
    try:
        sha = _git("rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}", cwd=here)
    except AbError:
        raise AbError(f"--base {args.base}: no such commit in {top} (fetch it first, e.g. "
                      f"git fetch origin {args.base.split('/', 1)[-1]})") from None
    tree = scratch / "base"
    _git("worktree", "add", "--detach", str(tree), sha, cwd=here)
    return tree, tree / here.resolve().relative_to(top), f"{args.base} ({sha[:10]})"


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM handler: unwind through the ``finally`` that removes the worktree (the run in flight is killed)."""
    raise KeyboardInterrupt


def run_ab(args: argparse.Namespace) -> int:
    """The ``ab`` subcommand; returns the exit status."""
    pytest_args = list(args.pytest_args)
    if pytest_args[:1] == ["--"]:
        pytest_args = pytest_args[1:]
    try:
        if args.pairs < 2:
            raise AbError(f"--pairs {args.pairs}: at least 2 pairs (one pair cannot tell noise from a change)")
        if not 0 < args.tolerance < 10:
            raise AbError(f"--tolerance {args.tolerance}: a relative tolerance above 0 (0.15 = 15% slower fails)")
        if args.json is not None and not args.json.resolve().parent.is_dir():
            raise AbError(f"--json {args.json}: the folder {args.json.parent} does not exist")
        previous = signal.signal(signal.SIGTERM, _stop)  # a cancelled CI job: clean up like Ctrl-C does
        try:
            return _run(args, pytest_args)
        finally:
            signal.signal(signal.SIGTERM, previous)
    except KeyboardInterrupt:
        print("speechlab ab: interrupted; the base worktree and the runs' records were removed", file=sys.stderr)
        return 130
    except AbError as exc:
        print(f"speechlab ab: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, pytest_args: list[str]) -> int:
    here = Path.cwd()
    scratch = Path(tempfile.mkdtemp(prefix="speechlab-ab-"))
    worktree = False
    try:
        base_root, base_dir, label = _prepare_base(args, here, scratch)
        worktree = args.base_dir is None
        if not base_dir.is_dir():
            raise AbError(f"{base_dir.relative_to(base_root)} does not exist at {label}")
        head_root = _toplevel(here) or here
        runs = []
        for k in range(args.pairs):
            # A B, B A, A B ...: a machine drifting faster or slower over the job favours neither side.
            order = ("base", "head") if k % 2 == 0 else ("head", "base")
            got: dict[str, dict[str, dict[str, Any]]] = {}
            for side in order:
                root, wd = (base_root, base_dir) if side == "base" else (head_root, here)
                t0 = time.perf_counter()
                cases = _one_run(side if side == "base" else "this tree's", root, wd, pytest_args,
                                 scratch / f"{side}-{k}.json")
                got[side] = {str(c.get("case")): c for c in cases}
                print(f"speechlab ab: pair {k + 1}/{args.pairs}, {'base' if side == 'base' else 'this tree'}: "
                      f"{len(cases)} cases in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            runs.append((got["base"], got["head"]))
        rows = compare(runs, args.tolerance)
    finally:
        if worktree:
            subprocess.run(["git", "worktree", "remove", "--force", str(scratch / "base")], cwd=here,
                           capture_output=True, check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    failed = any(r["verdict"] == "fail" for r in rows)
    if not failed and not any("ratio" in r for r in rows):
        raise AbError("no case was timed in both trees (see the verdicts below): this comparison compares "
                      "nothing\n" + _render(rows, ""))
    header = (f"speechlab ab: base {label} vs this tree, {args.pairs} pairs (A B, B A, ...), a case fails above "
              f"x{1 + args.tolerance:.2f}")
    print(_render(rows, header))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({"base": label, "pairs": args.pairs, "tolerance": args.tolerance,
                                                 "pytest_args": pytest_args, "cases": rows}, indent=2) + "\n")
    return 1 if failed else 0
