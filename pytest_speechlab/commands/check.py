"""``speechlab check RUN.json``: apply the golden gate to a saved run record, outside pytest.

A CI job can gate from an artifact: the run happens once (``pytest --speechlab-json run.json``) and any later
step re-judges it against the goldens with the same rules (``golden.compare``) and the same failure block.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from ..checks import Verdict
from ..config import GATES
from ..gate import coverage, skipped_with_golden
from ..golden import GoldenError, golden_path, read_golden
from ..records import (
    RunRecordError,
    case_problem,
    load_run,
    record_problems,
)
from ..tolerances import DEFAULT_THRESHOLDS
from ..verdicts import judge, render_failure


def register(subparsers: Any) -> None:
    """Add the ``check`` subcommand."""
    p = subparsers.add_parser(
        "check",
        help="gate a saved run record against the golden baselines (exit 1 on regression)",
        description="Apply the golden gate to every case that ran in a run record written by "
                    "pytest --speechlab-json. Exit status: 0 all pass, 1 a regression (or a missing golden or an "
                    "errored case), 2 the record cannot be read.",
    )
    p.add_argument("run", type=Path, metavar="RUN.json", help="run record written by pytest --speechlab-json")
    p.add_argument("--golden", type=Path, default=None, metavar="DIR",
                   help="golden folder (default: the golden path each case recorded)")
    p.add_argument("--gate", choices=GATES, default=None, help="gate policy (default: the one the run used)")
    p.add_argument("--force-rtf", action="store_true", help="compare RTF even when measured on other hardware")
    p.add_argument("--rtf-gate", choices=("recorded", "on", "off"), default="recorded",
                   help="gate RTF: as the run did (default), always, or never")
    p.add_argument("--expect-skip", action="append", default=None, metavar="NAME",
                   help="a skipped case with a committed golden fails unless named here (device, model, MODEL/DEVICE "
                        "or case id; shell patterns; repeatable); default: what the run expected")
    p.add_argument("--require-device", action="append", default=None, metavar="DEV",
                   help="fail unless at least one case on DEV was compared with a golden (repeatable): a GPU job "
                        "whose device did not run is not green")
    p.add_argument("--stale", action="store_true",
                   help="also list golden files that no case of the config's matrix compares any more (a model, "
                        "dataset or device removed from speechlab.yaml); the config is the one the run recorded")
    p.set_defaults(func=run_check)


def _accept(record: dict[str, Any], case: dict[str, Any]) -> str:
    cfg = (record.get("settings") or {}).get("config") or "speechlab.yaml"
    return (f"pytest {shlex.quote(str(cfg))} --speechlab-model {shlex.quote(case['model'])} "
            f"--speechlab-dataset {shlex.quote(case['dataset'])} --speechlab-device {shlex.quote(case['device'])} "
            "--speechlab-update-golden")


def _golden_file(args: argparse.Namespace, case: dict[str, Any]) -> Path:
    if args.golden is not None:
        return golden_path(args.golden, case["model"], case["dataset"], case["device"])
    if case.get("golden_path"):
        return Path(case["golden_path"])
    return golden_path(Path("golden"), case["model"], case["dataset"], case["device"])


def check_case(record: dict[str, Any], case: dict[str, Any], golden_file: Path, gate: str,
               force_rtf: bool = False, rtf_gate: bool | None = None) -> tuple[Verdict, str]:
    """Judge one ran case of ``record`` against ``golden_file``; returns the verdict and its printable block."""
    from ..evaluation import changed_utterances

    settings = record.get("settings") or {}
    thresholds = case.get("thresholds") or dict(DEFAULT_THRESHOLDS.get(case.get("stage", "candidate"),
                                                                       DEFAULT_THRESHOLDS["candidate"]))
    golden = read_golden(golden_file)
    if golden is None:
        verdict = Verdict("missing")
        return verdict, render_failure(case["case"], verdict, golden_file, [], _accept(record, case))
    if rtf_gate is None:
        # As the run judged this case: a case compared with another device's golden had its speed gate off.
        rtf_gate = bool(case["rtf_gate"]) if isinstance(case.get("rtf_gate"), bool) else bool(
            settings.get("rtf_gate", True))
    verdict = judge(golden, case, thresholds, gate=gate, rtf_gate=rtf_gate,
                    force_rtf=force_rtf or bool(settings.get("force_rtf", False)),
                    abs_rtf=bool(settings.get("abs_rtf", False)),
                    bootstrap=int(settings.get("bootstrap") or 2000))
    from ..tolerances import describe

    tol = describe(thresholds, case.get("tolerance_sources") or {k: "as recorded" for k in thresholds})
    if verdict.failed:
        block = render_failure(
            case["case"], verdict, golden_file, changed_utterances(golden, case), _accept(record, case)
        )
        return verdict, f"{block}\n  tolerances: {tol}"
    lines = [f"{c.metric} {c.status}" + (f" ({c.note})" if c.note else "") for c in verdict.checks]
    notes = "".join(f"\n  note: {n}" for n in verdict.notes)
    return verdict, f"{case['case']}: {verdict.status}: " + "; ".join(lines) + f"\n  tolerances: {tol}{notes}"


def _refusals(args: argparse.Namespace, record: dict[str, Any]) -> tuple[list[str], Any, list[str]]:
    """Why the whole record cannot pass (lost cases, accepted goldens, nothing compared, a required device that
    compared nothing), what it compared (gate/coverage.py) and the skips the job expects."""
    refused = record_problems(record, str(args.run))
    settings = record.get("settings") or {}
    expected = list(args.expect_skip or settings.get("expect_skip") or [])
    # The same count and the same "compared nothing" rule as pytest's closing line (gate/coverage.py).
    cov = coverage(record["cases"], update=bool(settings.get("update_golden")), where=str(args.run),
                   expected=expected, shard=bool(settings.get("shard")))
    refused.extend(p for p in cov.problems if " compared nothing: " in p)
    for dev in args.require_device or []:
        on_dev = [c for c in record["cases"] if c.get("device") == dev]
        if not coverage(on_dev).compared:
            why = "; ".join(f"{c['case']}: {c.get('reason') or c.get('verdict') or c['status']}" for c in on_dev[:3])
            refused.append(f"{args.run}: no case on {dev} was compared (--require-device {dev})"
                           + (f": {why}" if why else ": the record holds no case on that device"))
    return refused, cov, expected


def _stale(record: dict[str, Any]) -> list[str]:
    """Stale goldens of the config the run recorded (gate/stale.py), or why they cannot be listed."""
    from ..config import ConfigError, load_config
    from ..gate.stale import stale_goldens
    from ..session import Options, SpeechlabSession

    path = Path((record.get("settings") or {}).get("config") or "speechlab.yaml")
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return [f"stale goldens not listed: {exc}"]
    sess = SpeechlabSession(cfg, Options(), path.parent)
    lines = stale_goldens(cfg.golden_dir, [(c.model, c.dataset, c.device) for c in sess.cases()])
    return lines or [f"no stale golden under {cfg.golden_dir}"]


def _judge_row(args: argparse.Namespace, record: dict[str, Any], case: dict[str, Any], gate: str,
               expected: list[str]) -> str:
    """Judge one row of the record, print its block; returns passed | failed | skipped | reported (a chunk, judged
    by its corpus row; an experimental case, not gated)."""
    cid = case["case"]
    experimental = case.get("stage") == "experimental"
    if case["status"] == "skipped":
        unexpected = skipped_with_golden(case, _golden_file(args, case), expected)
        if unexpected:
            print(unexpected)
            return "failed"
        print(f"{cid}: skipped: {case.get('reason', '')}" + (" (expected)" if case.get("expected_skip") else ""))
        return "skipped"
    if case.get("verdict") == "chunk" and case["status"] == "ran":
        print(f"{cid}: a chunk of {case.get('corpus')}: judged by its corpus row")
        return "reported"
    if case.get("verdict") == "partial":
        print(f"{cid}: {case.get('reason') or 'partial'}")
        return "failed"  # a shard's part of a chunked case never passes a gate on its own
    problem = case_problem(case)
    if case["status"] != "ran" or problem:
        print(f"{cid}: {problem or case['status'] + ': ' + str(case.get('reason', ''))}")
        return "reported" if experimental else "failed"
    if case.get("verdict") == "accepted":
        print(f"{cid}: accepted (a new golden was written; nothing was compared)")
        return "failed"
    if case.get("task", "asr") not in ("asr", "tts"):
        # Tasks without a golden baseline (the chat smoke) carry their own verdict: report it as recorded.
        verdict_text = str(case.get("verdict") or "ran")
        print(f"{cid}: {verdict_text} (as recorded; this task has no golden baseline)")
        return "failed" if verdict_text.startswith("fail") and not experimental else "passed"
    try:
        rtf_gate = None if args.rtf_gate == "recorded" else args.rtf_gate == "on"
        verdict, block = check_case(record, case, _golden_file(args, case), gate, args.force_rtf, rtf_gate)
    except GoldenError as exc:
        print(f"{cid}: {exc}")
        return "failed"
    if verdict.failed and experimental:
        print(block + f"\n  ({cid} is experimental: reported, not gated)")
        return "reported"
    print(block)
    return "failed" if verdict.failed else "passed"


def run_check(args: argparse.Namespace) -> int:
    """Gate every ran case of the record; print one block per failing case and a closing count."""
    try:
        record = load_run(args.run, gate=True)
    except RunRecordError as exc:
        print(f"speechlab check: {exc}")
        return 2
    gate = args.gate or (record.get("settings") or {}).get("gate") or "strict"
    refused, cov, expected = _refusals(args, record)
    for line in refused:
        print(f"speechlab check: {line}")
    outcome = {case["case"]: _judge_row(args, record, case, gate, expected) for case in record["cases"]}
    failed = [cid for cid, o in outcome.items() if o == "failed"]
    passed = sum(o == "passed" for o in outcome.values())
    skipped = sum(o == "skipped" for o in outcome.values())
    if getattr(args, "stale", False):
        for line in _stale(record):
            print(f"speechlab check: note: {line}")
    print(f"speechlab check: {passed} passed, {len(failed)} failed, {skipped} skipped ({gate} gate, {args.run})")
    print(cov.line())
    return 1 if failed or refused else 0
