"""``speechlab scorecard RUN.json... [-o DIR]``: a page a team reads to pick a model.

Models side by side per task, dataset and device (WER, CER, entity accuracy, RTF, peak memory, deltas vs the
golden, gate verdict), a grade per model with its rule printed on the page, a recommendation per task, and two
PNG plots made with matplotlib's Agg backend (WER vs RTF, WER per model, and WER vs SNR when the records have
``perturb:`` noise levels: commands/robustness.py).  Writes ``scorecard.md``,
``scorecard.html`` (self-contained: the plots are embedded as base64) and the PNGs side by side.

Also home of the GitHub Actions step summary the plugin appends at the end of a session.
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..golden import atomic_write_text, read_golden
from ..records import FAILED_VERDICTS, RunRecordError, is_part, load_run
from .plots import save_png as _save

# ---- the grading rule (the page prints these numbers; change them here and the page follows) ----------
A_WER_MARGIN = 0.01  # A: WER within 1 point of the best model in the same task/dataset/device
A_RTF_MAX = 0.5  # ... and at least 2x faster than real time
C_WER_MARGIN = 0.05  # C: WER more than 5 points above the best
C_RTF_MIN = 1.0  # C: slower than real time
MEMORY_NOTE = ("Peak memory is the test process's peak resident memory when the case finished (plus CUDA's peak on "
               "cuda), so it includes models loaded earlier in the same run: compare it across runs of one model.")
STAGE_RANK = {"production": 0, "candidate": 1, "experimental": 2, "deprecated": 3}

GRADE_RULE = (
    f"A: passed its golden gate, WER within {A_WER_MARGIN:.2f} (absolute) of the best WER in the same task, dataset "
    f"and device, and RTF <= {A_RTF_MAX:g}. "
    f"C: failed its golden gate (a regression or no baseline), or RTF >= {C_RTF_MIN:g} (slower than real time), "
    f"or WER more than {C_WER_MARGIN:.2f} above the best. "
    "B: everything else. RTF measured while the CPU was saturated is shown greyed and not graded (only WER and the "
    "gate decide)."
)
RECOMMEND_RULE = (
    "Per task: the model with the best grade (its worst grade over the datasets and devices it ran), then the "
    "lowest mean WER, then the lowest mean RTF; at equal footing the production-stage model is preferred "
    "(production, then candidate). Per dataset and device the same order applies to that group alone. Never "
    "recommended: models at stage experimental or deprecated, and models whose weights are random or test weights "
    "(e.g. tiny-random): they are graded and listed, not picked."
)


@dataclass
class Entry:
    """One model's result on one task/dataset/device, taken from a run record."""

    model: str
    task: str
    dataset: str
    device: str
    stage: str
    backend: str
    metrics: dict[str, Any]
    golden: dict[str, Any]
    verdict: str
    decode: dict[str, Any]
    source: str
    grade: str = "?"
    notes: list[str] = field(default_factory=list)
    excluded: str | None = None  # why this model is never recommended (stage, random weights)
    rtf_ignored: str | None = None  # why its RTF is not graded (a saturated CPU)

    @property
    def wer(self) -> float:
        v = self.metrics.get("wer")
        return float(v) if v is not None else float("inf")

    @property
    def rtf(self) -> float:
        v = self.metrics.get("rtf")
        return float(v) if v is not None else float("inf")

    def delta(self, key: str) -> float | None:
        """Obtained minus golden for ``key`` (None when either is unknown)."""
        o, g = self.metrics.get(key), self.golden.get(key)
        return None if o is None or g is None else float(o) - float(g)


def _golden_metrics(case: dict[str, Any]) -> dict[str, Any]:
    if case.get("golden_metrics"):
        return dict(case["golden_metrics"])
    # A run made with --speechlab-update-golden compared with nothing; read the golden it points at.
    path = case.get("golden_path")
    if path:
        try:
            g = read_golden(Path(path))
        except Exception:  # noqa: BLE001 - an unreadable golden only costs the delta column
            g = None
        if g:
            return {k: g["metrics"].get(k) for k in ("wer", "cer", "rtf", "entity_acc")}
    return {}


def collect(records: list[dict[str, Any]]) -> tuple[list[Entry], list[str]]:
    """The entries (latest record wins per model/task/dataset/device) and notes about what was dropped."""
    notes: list[str] = []
    chosen: dict[tuple[str, str, str, str], tuple[str, Entry]] = {}
    for rec in records:
        created = str(rec.get("created", ""))
        for c in rec["cases"]:
            if c["status"] != "ran" or is_part(c):
                continue
            e = Entry(model=c["model"], task=c.get("task", "asr"), dataset=c["dataset"], device=c["device"],
                      stage=c.get("stage", "candidate"), backend=c.get("backend", "?"), metrics=c["metrics"],
                      golden=_golden_metrics(c), verdict=str(c.get("verdict") or "ran"), decode=c.get("decode") or {},
                      source=rec["_path"])
            e.excluded = not_recommendable(c)
            e.rtf_ignored = rtf_unusable(c)
            key = (e.model, e.task, e.dataset, e.device)
            if key in chosen:
                notes.append(
                    f"{'/'.join(key)} appears in several records; the newest ({max(created, chosen[key][0])}) is shown"
                )
                if created < chosen[key][0]:
                    continue
            chosen[key] = (created, e)
    entries = [e for _, e in chosen.values()]
    grade(entries)
    return entries, notes


_TEST_WEIGHTS = re.compile(r"random|dummy|(^|[^a-z])test([^a-z]|$)", re.IGNORECASE)


def not_recommendable(case: dict[str, Any]) -> str | None:
    """Why a case's model must never be recommended (stage or random/test weights), or None."""
    stage = case.get("stage", "candidate")
    if stage in ("experimental", "deprecated"):
        return f"stage {stage}"
    w = case.get("weights") or {}
    spec = str(w.get("spec") or (case.get("decode") or {}).get("weights") or "")
    if _TEST_WEIGHTS.search(spec) or str(w.get("source") or "").startswith("generated"):
        return f"random or test weights ({spec or w.get('source')})"
    return None


def rtf_unusable(case: dict[str, Any]) -> str | None:
    """Why a case's RTF says nothing about the model (measured on a saturated CPU), or None."""
    from ..golden import saturated

    m = case.get("machine") or {}
    if saturated(m):
        return f"saturated CPU: 1-minute load {m.get('load_avg_1m')} on {m.get('cpu_count')} CPUs"
    rtf = next((c for c in case.get("checks") or [] if c.get("metric") == "RTF"), None)
    if rtf and rtf.get("status") == "not-comparable" and "saturated" in str(rtf.get("note")):
        return "saturated CPU (the gate said so)"
    return None


def groups(entries: list[Entry]) -> dict[tuple[str, str, str], list[Entry]]:
    """Entries grouped by (task, dataset, device), each group sorted by model name."""
    out: dict[tuple[str, str, str], list[Entry]] = {}
    for e in sorted(entries, key=lambda e: (e.task, e.dataset, e.device, e.model)):
        out.setdefault((e.task, e.dataset, e.device), []).append(e)
    return out


def grade(entries: list[Entry]) -> None:
    """Set each entry's grade by :data:`GRADE_RULE` (relative to the best WER in its group)."""
    for group in groups(entries).values():
        best = min(e.wer for e in group)
        for e in group:
            slow = e.rtf_ignored is None and e.rtf >= C_RTF_MIN
            fast = e.rtf_ignored is not None or e.rtf <= A_RTF_MAX
            if e.verdict in FAILED_VERDICTS or slow or e.wer > best + C_WER_MARGIN + 1e-12:
                e.grade = "C"
            elif e.wer <= best + A_WER_MARGIN + 1e-12 and fast:
                e.grade = "A"
            else:
                e.grade = "B"


def _rank_key(grade_: str, wer: float, rtf: float, stage: str) -> tuple[str, float, float, int]:
    return grade_, round(wer, 6), round(rtf, 6), STAGE_RANK.get(stage, 9)


def _rtf_key(e: Entry) -> float:
    return float("inf") if e.rtf_ignored else e.rtf


def recommend_group(group: list[Entry]) -> Entry | None:
    """The recommended entry of one task/dataset/device group (None when every model there is excluded)."""
    eligible = [e for e in group if not e.excluded]
    return min(eligible, key=lambda e: _rank_key(e.grade, e.wer, _rtf_key(e), e.stage)) if eligible else None


def recommend_tasks(entries: list[Entry]) -> dict[str, dict[str, Any]]:
    """Per task: the recommended model with its worst grade, mean WER/RTF and how many groups it ran on."""
    out: dict[str, dict[str, Any]] = {}
    tasks = sorted({e.task for e in entries})
    for task in tasks:
        mine = [e for e in entries if e.task == task]
        n_groups = len({(e.dataset, e.device) for e in mine})
        per_model: dict[str, list[Entry]] = {}
        for e in mine:
            per_model.setdefault(e.model, []).append(e)
        rows: list[dict[str, Any]] = []
        for model, es in per_model.items():
            finite_w = [e.wer for e in es if e.wer != float("inf")]
            finite_r = [e.rtf for e in es if e.rtf != float("inf") and not e.rtf_ignored]
            rows.append(
                {
                    "model": model,
                    "grade": max(e.grade for e in es),  # the worst grade ("C" > "B" > "A")
                    "wer": statistics.fmean(finite_w) if finite_w else float("inf"),
                    "rtf": statistics.fmean(finite_r) if finite_r else float("inf"),
                    "stage": es[0].stage,
                    "groups": len(es),
                    "of": n_groups,
                    "excluded": next((e.excluded for e in es if e.excluded), None),
                }
            )
        rows.sort(key=lambda r: _rank_key(r["grade"], r["wer"], r["rtf"], r["stage"]))
        pick = next((r for r in rows if not r["excluded"]), None)
        out[task] = {"pick": pick, "ranking": rows}
    return out


# ---- plots -------------------------------------------------------------------------------------------


def _label(e: Entry) -> str:
    return f"{e.model} ({e.dataset}/{e.device})"


def make_plots(entries: list[Entry], out_dir: Path) -> list[tuple[str, Path]]:
    """Write ``wer_vs_rtf.png`` and ``wer_by_model.png``; returns (title, path) pairs."""
    # Figure + FigureCanvasAgg directly: no pyplot global state, no GUI backend, safe inside pytest.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    plotted = [e for e in entries if e.wer != float("inf") and e.rtf != float("inf")]
    models = sorted({e.model for e in entries})
    colours = {m: f"C{i % 10}" for i, m in enumerate(models)}
    written: list[tuple[str, Path]] = []

    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for m in models:
        pts = [e for e in plotted if e.model == m]
        if pts:
            ax.scatter([e.rtf for e in pts], [e.wer for e in pts], s=60, color=colours[m], label=m)
            for e in pts:
                ax.annotate(
                    f"{e.dataset}/{e.device}", (e.rtf, e.wer), textcoords="offset points", xytext=(5, 4), fontsize=8
                )
    ax.set_xlabel("RTF (inference s / audio s, lower is faster)")
    ax.set_ylabel("WER (lower is better)")
    ax.set_title("WER vs RTF per model, dataset and device")
    ax.grid(True, alpha=0.3)
    if plotted:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "wer_vs_rtf.png"
    _save(fig, path)
    written.append(("WER vs RTF", path))

    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    grouped = groups(entries)
    gkeys = list(grouped)
    width = 0.8 / max(len(models), 1)
    for i, m in enumerate(models):
        xs, ys = [], []
        for j, key in enumerate(gkeys):
            hit = next((x for x in grouped[key] if x.model == m and x.wer != float("inf")), None)
            if hit is not None:
                xs.append(j + (i - (len(models) - 1) / 2) * width)
                ys.append(hit.wer)
        bars = ax.bar(xs, ys, width=width, color=colours[m], label=m)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)  # a WER of 0 has no bar to see: its label shows it
    ax.set_xticks(range(len(gkeys)), [f"{d}\n{dev}" for _, d, dev in gkeys], fontsize=8)
    ax.set_ylabel("WER")
    ax.set_ylim(0, max([e.wer for e in plotted] + [0.01]) * 1.15)
    ax.set_title("WER per model (grouped by dataset and device)")
    ax.grid(True, axis="y", alpha=0.3)
    if models:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "wer_by_model.png"
    _save(fig, path)
    written.append(("WER per model", path))
    return written


# ---- rendering ---------------------------------------------------------------------------------------


def _f(x: Any, digits: int = 4) -> str:
    return "-" if x is None or x == float("inf") else f"{float(x):.{digits}f}"


def _d(x: float | None) -> str:
    return "-" if x is None else f"{x:+.4f}"


def _mem(e: Entry) -> str:
    rss, cuda = e.metrics.get("peak_rss_mb"), e.metrics.get("cuda_peak_mb")
    out = "-" if rss is None else f"{rss:.0f} MiB"
    return out + (f" (CUDA {cuda:.0f} MiB)" if cuda is not None else "")


def _decode(e: Entry) -> str:
    keys = ("compute_type", "beam_size", "batch_size", "fp16", "temperature")
    return ", ".join(f"{k}={e.decode[k]}" for k in keys if e.decode.get(k) is not None) or "-"


HEADER = (
    "model",
    "stage",
    "decode",
    "WER",
    "CER",
    "entity acc",
    "RTF",
    "peak memory",
    "ΔWER",
    "ΔCER",
    "RTF vs golden",
    "gate",
    "grade",
)


def _row(e: Entry) -> list[str]:
    ratio = "-"
    if e.golden.get("rtf") and e.metrics.get("rtf") is not None:
        ratio = f"x{float(e.metrics['rtf']) / float(e.golden['rtf']):.2f}"
    rtf = _f(e.metrics.get("rtf"))
    if e.rtf_ignored:
        rtf += f" (not graded: {e.rtf_ignored})"
    grade_ = e.grade + (f" (never recommended: {e.excluded})" if e.excluded else "")
    return [
        e.model,
        e.stage,
        _decode(e),
        _f(e.metrics.get("wer")),
        _f(e.metrics.get("cer")),
        _f(e.metrics.get("entity_acc")),
        rtf,
        _mem(e),
        _d(e.delta("wer")),
        _d(e.delta("cer")),
        ratio,
        e.verdict,
        grade_,
    ]


def _task_pick(task: str, rec: dict[str, Any], md: bool) -> str:
    b = "**" if md else ""
    p = rec["pick"]
    if p is None:
        why = "; ".join(f"{r['model']}: {r['excluded']}" for r in rec["ranking"])
        return f"{b}{task}{b}: none recommended (every model is excluded: {why})"
    return (
        f"{b}{task}{b}: {b}{p['model']}{b} (grade {p['grade']}, mean WER {_f(p['wer'])}, mean RTF {_f(p['rtf'])}, "
        f"{p['stage']}, ran on {p['groups']} of {p['of']} dataset/device groups)"
    )


def _group_pick(best: Entry | None, md: bool, group: list[Entry] | None = None) -> str:
    b = "**" if md else ""
    if best is None:
        why = "; ".join(f"{e.model}: {e.excluded}" for e in group or [])
        return f"Recommended here: none (every model here is excluded from recommendation: {why})."
    if best.grade == "C":  # a C is never recommended: say so, and name the least bad
        return f"Recommended here: none (every model is graded C); least bad: {b}{best.model}{b}."
    return f"Recommended here: {b}{best.model}{b} (grade {best.grade})."


def render_markdown(
    entries: list[Entry], records: list[dict[str, Any]], notes: list[str], plots: list[tuple[str, Path]]
) -> str:
    """The scorecard as Markdown (plots referenced by file name, side by side)."""
    lines = ["# Speech model scorecard", ""]
    for rec in records:
        prov = rec.get("provenance") or {}
        lines.append(
            f"- run record `{rec['_path']}` ({rec.get('created', '?')}, git {str(prov.get('git_commit') or '-')[:10]}, "
            f"CPU {prov.get('cpu_model', '?')})"
        )
    lines += ["", MEMORY_NOTE, "", "## Grades", "", GRADE_RULE, "", "## Recommendation", "", RECOMMEND_RULE, ""]
    for task, rec in recommend_tasks(entries).items():
        lines.append(f"- {_task_pick(task, rec, md=True)}")
    for (task, ds, dev), group in groups(entries).items():
        best = recommend_group(group)
        lines += ["", f"## {task}: {ds} on {dev}", "", _group_pick(best, md=True, group=group), ""]
        lines.append("| " + " | ".join(HEADER) + " |")
        lines.append("|" + "---|" * len(HEADER))
        for e in group:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _row(e)) + " |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{t}]({p.name})" for t, p in plots]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}\n"
    "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}"
    "td:first-child,td:nth-child(2),\n"
    "td:nth-child(3){text-align:left}.A{background:#d9f2d9}.B{background:#fff3cd}.C{background:#f8d7da}.rule{background:#f7f7f7;\n"
    "padding:.6em 1em;border-left:4px solid #888}.grey{color:#999}img{max-width:48%;margin-right:1%}"
)


def render_html(
    entries: list[Entry], records: list[dict[str, Any]], notes: list[str], plots: list[tuple[str, Path]]
) -> str:
    """The scorecard as one self-contained HTML page (plots embedded as base64 PNG)."""
    esc = html.escape
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Speech model scorecard</title>",
        f"<style>{CSS}</style></head><body><h1>Speech model scorecard</h1><ul>",
    ]
    for rec in records:
        prov = rec.get("provenance") or {}
        out.append(
            f"<li>run record <code>{esc(rec['_path'])}</code> ({esc(str(rec.get('created', '?')))}, git "
            f"{esc(str(prov.get('git_commit') or '-')[:10])}, CPU {esc(str(prov.get('cpu_model', '?')))})</li>"
        )
    out.append(f"</ul><p>{esc(MEMORY_NOTE)}</p><h2>Grades</h2>")
    out.append(
        f"<p class='rule'>{esc(GRADE_RULE)}</p><h2>Recommendation</h2><p class='rule'>{esc(RECOMMEND_RULE)}</p><ul>"
    )
    for task, rec in recommend_tasks(entries).items():
        out.append(f"<li>{esc(_task_pick(task, rec, md=False))}</li>")
    out.append("</ul>")
    for (task, ds, dev), group in groups(entries).items():
        best = recommend_group(group)
        out.append(
            f"<h2>{esc(task)}: {esc(ds)} on {esc(dev)}</h2><p>{esc(_group_pick(best, md=False, group=group))}</p>"
            "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in HEADER) + "</tr>"
        )
        for e in group:
            cells = _row(e)
            # RTF (column 7) greyed when it was not graded.
            out.append(
                "<tr>"
                + "".join(
                    f"<td{' class=grey' if i == 6 and e.rtf_ignored else ''}>{esc(c)}</td>"
                    for i, c in enumerate(cells[:-1])
                )
                + f"<td class='{e.grade}'>{esc(cells[-1])}</td></tr>"
            )
        out.append("</table>")
    if plots:
        out.append("<h2>Plots</h2><div>")
        for title, path in plots:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            out.append(f"<img alt='{esc(title)}' title='{esc(title)}' src='data:image/png;base64,{data}'>")
        out.append("</div>")
    if notes:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def build_scorecard(run_paths: list[Path], out_dir: Path) -> dict[str, Path]:
    """Read the run records and write scorecard.md, scorecard.html and the PNG plots into ``out_dir``."""
    records = [load_run(p) for p in run_paths]
    entries, notes = collect(records)
    if not entries:
        raise RunRecordError(f"{', '.join(map(str, run_paths))}: no case ran in these records, nothing to score")
    out_dir.mkdir(parents=True, exist_ok=True)
    from .robustness import snr_plot

    plots = make_plots(entries, out_dir) + snr_plot(records, out_dir)  # WER vs SNR: only with +snrN cases
    md, page = out_dir / "scorecard.md", out_dir / "scorecard.html"
    atomic_write_text(md, render_markdown(entries, records, notes, plots))
    atomic_write_text(page, render_html(entries, records, notes, plots))
    return {"markdown": md, "html": page, **{p.stem: p for _, p in plots}}


def register(subparsers: Any) -> None:
    """Add the ``scorecard`` subcommand."""
    p = subparsers.add_parser(
        "scorecard",
        help="write a Markdown + HTML scorecard with plots from run records",
        description="Compare models side by side from run records (pytest --speechlab-json), grade them and "
        "recommend one per task. Writes scorecard.md, scorecard.html and PNG plots into -o DIR.",
    )
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN.json", help="run records to compare")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("scorecard"),
        metavar="DIR",
        help="output folder (default: ./scorecard)",
    )
    p.set_defaults(func=run_scorecard)


def run_scorecard(args: argparse.Namespace) -> int:
    """CLI entry: build the scorecard, print where it went and the recommendation."""
    try:
        written = build_scorecard(list(args.runs), args.output)
    except RunRecordError as exc:
        print(f"speechlab scorecard: {exc}")
        return 2
    entries, _ = collect([load_run(p) for p in args.runs])
    for task, rec in recommend_tasks(entries).items():
        p = rec["pick"]
        if p is None:
            print(f"recommended for {task}: none ({_task_pick(task, rec, md=False).split(': ', 1)[1]})")
            continue
        print(
            f"recommended for {task}: {p['model']} (grade {p['grade']}, mean WER {_f(p['wer'])}, mean RTF "
            f"{_f(p['rtf'])})"
        )
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0

