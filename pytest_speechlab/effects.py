"""The effect levels of ``perturb:`` (gain, speed, reverb, clipping: pedalboard) and babble noise (numpy).

Each list entry is one derived dataset, case and golden::

    perturb: {gain_db: [-20, 12], speed: [0.8, 1.25], reverb: [0.3, 0.8], clip_db: [6, 12]}

adds ``NAME+gain-20``, ``NAME+gain12``, ``NAME+speed0.8``, ``NAME+speed1.25``, ``NAME+reverb0.3``,
``NAME+reverb0.8``, ``NAME+clip6`` and ``NAME+clip12``:

* ``gain_db``: the audio scaled by that many dB (``pedalboard.Gain``; float audio, so nothing clips).
* ``speed``: tempo by that factor with the pitch kept (``pedalboard.time_stretch``, Rubber Band): 1.25 = a
  quarter faster and shorter.  The case's RTF still divides by the original audio's length.
* ``reverb``: ``pedalboard.Reverb`` (Freeverb) with that room size (0..1), wet 0.33, dry 0.4, damping 0.5.
* ``clip_db``: hard clipping that many dB below the clip's own peak (``pedalboard.Clipping``): 6 flattens
  everything above half the peak.

Babble (``noise: babble`` with ``snr_db``): the sum of ``talkers`` (default 4) other utterances of the same
dataset, each looped to the clip's length from an offset, chosen and placed with numpy from ``(seed, crc32(id))``.
All effects are deterministic (none of them draws random numbers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

#: key -> (spec kind, suffix, allowed range (lo, hi, lo excluded), what one value means)
EFFECTS: dict[str, tuple[str, str, tuple[float, float, bool], str]] = {
    "gain_db": ("gain", "gain", (-60.0, 40.0, False), "gain in dB, -60..40"),
    "speed": ("speed", "speed", (0.25, 4.0, False), "tempo factor, 0.25..4 (1.25 = 25% faster)"),
    "reverb": ("reverb", "reverb", (0.0, 1.0, False), "room size, 0..1"),
    "clip_db": ("clipping", "clip", (0.0, 60.0, True), "dB below the clip's peak where it is clipped, > 0 and <= 60"),
}
KEYS = (*EFFECTS, "talkers")
KINDS = ("gain", "speed", "reverb", "clipping")
REVERB = {"wet_level": 0.33, "dry_level": 0.4, "damping": 0.5, "width": 1.0}
DEFAULT_TALKERS = 4


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def problem(raw: dict[str, Any]) -> tuple[str, str] | None:
    """Why the effect keys of a ``perturb:`` mapping are invalid, as ``(key, message)``, or None."""
    for key, (_, _, (lo, hi, lo_open), what) in EFFECTS.items():
        if key not in raw:
            continue
        values = raw[key]
        if (
            not isinstance(values, list)
            or not values
            or not all(_num(v) for v in values)
            or len(set(values)) != len(values)
        ):
            return key, f"must be a non-empty list of distinct numbers (each a {what}), got {values!r}"
        bad = [v for v in values if v < lo or v > hi or (lo_open and v == lo)]
        if bad:
            return key, f"{bad[0]!r} is out of range: each value is a {what}"
    talkers = raw.get("talkers", DEFAULT_TALKERS)
    if isinstance(talkers, bool) or not isinstance(talkers, int) or not 1 <= talkers <= 32:
        return "talkers", f"must be an integer 1..32 (other utterances summed into babble), got {talkers!r}"
    if "talkers" in raw and raw.get("noise") != "babble":
        return "talkers", "applies to noise: babble only; set noise: babble or remove talkers"
    return None


def number_name(x: float) -> str:
    """``12``, ``-20``, ``0.8``: a level as a dataset-name suffix shows it."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def levels(raw: dict[str, Any], pedalboard: str) -> list[tuple[str, dict[str, Any]]]:
    """``[(suffix, spec)]`` for each effect level of a validated ``perturb:`` mapping."""
    out = []
    for key, (kind, suffix, _, _) in EFFECTS.items():
        for v in raw.get(key, []):
            spec: dict[str, Any] = {"kind": kind, key: float(v), "pedalboard": pedalboard}
            if kind == "reverb":
                spec.update(REVERB)
            elif kind == "speed":
                spec["method"] = "pedalboard.time_stretch (tempo; pitch kept)"
            out.append((f"{suffix}{number_name(v)}", spec))
    return out


def apply(audio: np.ndarray, spec: dict[str, Any], sample_rate: int) -> np.ndarray:
    """``audio`` through the effect of ``spec`` (gain, speed, reverb or clipping), float32 mono."""
    try:
        import pedalboard
    except ImportError:
        from .datasets import DatasetError

        raise DatasetError(
            f"perturb {spec['kind']!r} needs pedalboard: install the extra, uv add 'pytest-speechlab[perturb]'"
        ) from None
    x = np.ascontiguousarray(audio, dtype=np.float32)
    kind = spec["kind"]
    if kind == "speed":
        out = pedalboard.time_stretch(x[None, :], float(sample_rate), stretch_factor=float(spec["speed"]))
        return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1))
    if kind == "gain":
        chain: list[Any] = [pedalboard.Gain(gain_db=float(spec["gain_db"]))]
    elif kind == "reverb":
        chain = [pedalboard.Reverb(room_size=float(spec["reverb"]), **{k: float(spec[k]) for k in REVERB})]
    elif kind == "clipping":
        peak = float(np.max(np.abs(x)))
        if peak == 0.0:
            return x  # silence has nothing to clip
        chain = [pedalboard.Clipping(threshold_db=20 * math.log10(peak) - float(spec["clip_db"]))]
    else:
        raise ValueError(f"unknown effect kind {kind!r}")
    out = pedalboard.Pedalboard(chain)(x, float(sample_rate))  # type: ignore[attr-defined]
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1)[: len(x)])


def babble(n: int, rng: np.random.Generator, others: Mapping[str, np.ndarray], own_id: str, talkers: int) -> np.ndarray:
    """``n`` samples of babble: ``talkers`` other utterances (not ``own_id``), each looped from a random offset."""
    pool = sorted(k for k in others if k != own_id and len(others[k]) and float(np.max(np.abs(others[k]))) > 0)
    if not pool:
        from .datasets import DatasetError

        raise DatasetError(
            f"perturb noise: babble is made from the other utterances of the dataset, and utterance "
            f"{own_id!r} has none with sound: add utterances, or use noise: white or pink"
        )
    picks = rng.choice(len(pool), size=min(talkers, len(pool)), replace=False)
    out = np.zeros(n, dtype=np.float64)
    for k in sorted(int(p) for p in picks):
        voice = np.asarray(others[pool[k]], dtype=np.float64)
        voice = voice / math.sqrt(float(np.mean(voice**2)))  # each talker at the same level
        out += np.resize(np.roll(voice, -int(rng.integers(len(voice)))), n)
    return out
