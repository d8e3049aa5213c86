"""The scorecard's robustness plot: WER vs SNR per model, from the ``+snrN`` cases of ``perturb:`` datasets.

One figure, one panel per model side by side (same WER axis): a line per base dataset, noise and device, from
the clean dataset on the left to the lowest SNR on the right, every point labelled with its WER.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..records import is_part

NOISE_WORDS = {"white": "white noise", "pink": "pink noise", "babble": "babble"}


def snr_series(records: list[dict[str, Any]]) -> dict[str, dict[tuple[str, str, str], dict[float, float]]]:
    """``{model: {(base dataset, noise, device): {snr_db or inf (clean): wer}}}`` from run records' cases
    (a later record's case replaces an earlier one's)."""
    wer: dict[tuple[str, str, str], float] = {}
    noisy: dict[tuple[str, str, str], tuple[str, float]] = {}
    for record in records:
        for case in record.get("cases") or []:
            if is_part(case):  # a chunk row is not the case's result: its corpus row is
                continue
            m = case.get("metrics") or {}
            value = m.get("wer")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                continue
            key = (str(case.get("model")), str(case.get("dataset")), str(case.get("device")))
            wer[key] = float(value)
            spec = case.get("perturb") or {}
            if spec.get("kind") == "additive-noise" and isinstance(spec.get("snr_db"), (int, float)):
                noisy[key] = (str(spec.get("noise", "white")), float(spec["snr_db"]))
    out: dict[str, dict[tuple[str, str, str], dict[float, float]]] = {}
    for (model, dataset, device), (noise, snr) in noisy.items():
        base = dataset.split("+", 1)[0]
        line = out.setdefault(model, {}).setdefault((base, noise, device), {})
        line[snr] = wer[(model, dataset, device)]
        if (model, base, device) in wer:
            line[math.inf] = wer[(model, base, device)]
    return out


def snr_plot(records: list[dict[str, Any]], out_dir: Path) -> list[tuple[str, Path]]:
    """Write ``wer_vs_snr.png`` when the records hold ``+snrN`` cases; returns ``[(title, path)]`` (or [])."""
    series = snr_series(records)
    if not series:
        return []
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .plots import save_png as _save

    models = sorted(series)
    levels = sorted({s for lines in series.values() for line in lines.values() for s in line if s != math.inf})
    step = (levels[-1] - levels[0]) / max(len(levels) - 1, 1) if len(levels) > 1 else 10.0
    clean_x = levels[-1] + max(step, 5.0)  # the clean dataset sits left of the highest SNR (axis inverted)
    top = max(w for lines in series.values() for line in lines.values() for w in line.values())
    fig = Figure(figsize=(1.5 + 4.2 * len(models), 4.6), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
    keys = sorted({k for lines in series.values() for k in lines})
    colours = {k: f"C{i % 10}" for i, k in enumerate(keys)}
    y_top = max(5.0, 100 * top * 1.2)
    for ax, model in zip(axes, models, strict=True):
        points: list[tuple[float, float, str]] = []
        for key, line in sorted(series[model].items()):
            xs = sorted(line, reverse=True)
            px = [clean_x if x == math.inf else x for x in xs]
            py = [100 * line[x] for x in xs]
            base, noise, device = key
            ax.plot(
                px,
                py,
                marker="o",
                linewidth=2,
                color=colours[key],
                label=f"{NOISE_WORDS.get(noise, noise)} on {base} ({device})",
            )
            points += [(x, y, colours[key]) for x, y in zip(px, py, strict=True)]
        # Each point's WER above it; points close together at one SNR stack their labels instead of overlapping.
        placed: list[tuple[float, float]] = []
        for x, y, colour in sorted(points, key=lambda p: (p[0], p[1])):
            k = sum(1 for px_, py_ in placed if px_ == x and abs(py_ - y) < 0.06 * y_top)
            placed.append((x, y))
            ax.annotate(
                f"{y:.0f}%" if y >= 10 else f"{y:.1f}%",
                (x, y),
                textcoords="offset points",
                xytext=(0, 7 + 11 * k),
                ha="center",
                fontsize=8,
                color=colour,
            )
        ax.set_title(model, fontsize=12, fontweight="bold")
        ax.set_xticks([clean_x, *levels], ["clean", *[f"{s:g}" for s in levels]])
        ax.set_xlim(clean_x + step * 0.5, levels[0] - step * 0.5)  # inverted: noisier to the right
        ax.set_xlabel("SNR (dB)  \u2192 noisier")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("WER (%)  lower is better")
    axes[0].set_ylim(0, y_top)
    fig.suptitle("WER vs SNR per model: how fast accuracy falls as noise rises", fontsize=12)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "wer_vs_snr.png"
    _save(fig, path)
    return [("WER vs SNR", path)]
