"""Effective tolerances of a case, and where each one comes from.

The rule (README, "Tolerances and stages"):

* A model's ``stage`` sets a **ceiling** for the quality tolerances ``wer_abs`` and ``cer_abs`` (production
  0.01; candidate and experimental 0.02).  The global ``thresholds:`` block can tighten
  a stage's tolerance but never loosen it: a global ``wer_abs: 0.02`` leaves a production model at 0.01.
* A model's own ``thresholds:`` and a dataset's ``thresholds:`` are deliberate, local decisions: they may
  loosen the ceiling, and the summary shows that they did ("loosens the production ceiling 0.01").
* Every other key (``rtf_rel``, whose default 0.5 is about machine noise rather than the model's promise,
  ``entity_abs``, ``confidence``, the TTS audio bands) takes the usual order: stage default < global <
  model < dataset, later wins.

Every case record keeps ``tolerance_sources`` (key -> where its value came from), printed in the summary and
by ``speechlab check``.
"""

from __future__ import annotations

from typing import Any

# Per-stage defaults (config.py reads them from here; a stage not listed takes candidate's).
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "production": {"wer_abs": 0.01, "cer_abs": 0.01, "rtf_rel": 0.5, "catastrophic_max": 0},
    "candidate": {"wer_abs": 0.02, "cer_abs": 0.02, "rtf_rel": 0.5},
}

CEILING_KEYS = ("wer_abs", "cer_abs")
SHOWN = (("wer_abs", "WER", "+{:.4f}"), ("cer_abs", "CER", "+{:.4f}"), ("rtf_rel", "RTF", "x{:.2f}"),
         ("entity_abs", "ENTITY", "-{:.4f}"))


def effective(stage: str, global_t: dict[str, float], model_name: str, model_t: dict[str, float],
              dataset_name: str | None, dataset_t: dict[str, float]) -> tuple[dict[str, float], dict[str, str]]:
    """The tolerances of one case and the source of each (see the module docstring for the rule)."""
    base_stage = stage if stage in DEFAULT_THRESHOLDS else "candidate"
    defaults = DEFAULT_THRESHOLDS[base_stage]
    # Quality tolerances are the stage's promise; speed tolerance is about the machines' noise, which a
    # project sets for all its cases, so rtf_rel stays an ordinary default the global block may replace.
    ceiling = {k: v for k, v in defaults.items() if k in CEILING_KEYS}
    stage_label = f"stage {stage}" + ("" if stage == base_stage else " (candidate defaults)")
    out: dict[str, float] = dict(defaults)
    src: dict[str, str] = {k: stage_label for k in defaults}
    for k, v in global_t.items():
        if k in ceiling and v > ceiling[k]:
            src[k] = f"{stage_label} ceiling; the global thresholds.{k} {v:g} cannot loosen it"
            continue
        out[k] = v
        src[k] = "global thresholds" + (
            f" (tighter than the {stage} ceiling {ceiling[k]:g})" if k in ceiling and v < ceiling[k] else ""
        )
    for where, values in (
        (f"models.{model_name}.thresholds", model_t),
        (f"datasets.{dataset_name}.thresholds" if dataset_name else "", dataset_t),
    ):
        for k, v in values.items():
            out[k] = v
            src[k] = where + (
                f" (loosens the {stage} ceiling {ceiling[k]:g})" if k in ceiling and v > ceiling[k] else ""
            )
    return out, src


def describe(
    thresholds: dict[str, Any], sources: dict[str, str], keys: tuple[str, ...] = ("wer_abs", "cer_abs", "rtf_rel")
) -> str:
    """``WER +0.0100 (stage production), CER +0.0100 (stage production), RTF x2.00 (datasets.smoke...)``."""
    parts = []
    for key, label, fmt in SHOWN:
        if key in keys and thresholds.get(key) is not None:
            value = 1 + float(thresholds[key]) if key == "rtf_rel" else float(thresholds[key])
            parts.append(f"{label} {fmt.format(value)} ({sources.get(key, 'default')})")
    return ", ".join(parts)


def summary_lines(results: list[dict[str, Any]]) -> list[str]:
    """One ``tolerance:`` line per distinct set of effective tolerances, naming the cases that use it."""
    groups: dict[str, list[str]] = {}
    for r in sorted(results, key=lambda r: r.get("case", "")):
        if r.get("status") != "ran" or not r.get("thresholds") or not r.get("tolerance_sources"):
            continue
        keys: tuple[str, ...] = ("wer_abs", "cer_abs", "rtf_rel")
        if (r.get("metrics") or {}).get("entity_acc") is not None:
            keys += ("entity_abs",)
        groups.setdefault(describe(r["thresholds"], r["tolerance_sources"], keys), []).append(str(r.get("case")))
    return [f"tolerance: {', '.join(cases)}: {text}" for text, cases in groups.items()]
