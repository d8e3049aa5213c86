"""Robustness curves: perturbed copies of a dataset, derived on the fly and deterministic by seed.

A dataset entry with ``perturb:`` gets one derived dataset per level, each its own case and golden::

    datasets:
      smoke:
        manifest: fixtures/smoke/manifest.jsonl
        perturb: {snr_db: [20, 10, 5, 0], noise: white, seed: 0}

adds ``smoke+snr20`` ... ``smoke+snr0`` (case ids such as ``fw-tiny-en-cpu-smoke+snr10``, goldens in
``golden/fw-tiny-en/smoke+snr10/cpu.json``).  Noise is additive, scaled so that the clip's mean power over
the noise's mean power is the level (the power is the clip's own, pauses included), drawn with numpy from
``(seed, crc32(utterance id))`` so an utterance gets the same noise whatever the order or the shard.
``codec: [gsm, mp3]`` adds ``smoke+gsm`` (telephone band + GSM full rate) and ``smoke+mp3`` through pedalboard
(extra ``perturb``); ``noise: babble`` mixes other utterances of the dataset, and ``gain_db``, ``speed``,
``reverb``, ``clip_db`` add effect levels (effects.py).  The resolved spec (and numpy's or pedalboard's version) is
recorded with the case; a golden made with another spec fails the comparison instead of gating other audio.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import effects

NOISES = ("white", "pink")  # generated with numpy
NOISE_KINDS = (*NOISES, "babble")  # babble: other utterances of the dataset (effects.py)
# Channel codecs, through pedalboard (extra ``perturb``): the telephone band (300-3400 Hz) then GSM full rate
# (8 kHz, 13 kbit/s), or MP3 at VBR quality 9 (the lowest LAME offers).
CODECS = ("gsm", "mp3")
KEYS = ("snr_db", "noise", "seed", "codec", *effects.KEYS)


def problem(raw: Any) -> tuple[str, str] | None:
    """Why a ``perturb:`` mapping is invalid, as ``(key, message)``, or None."""
    if not isinstance(raw, dict):
        return "", f"must be a mapping such as {{snr_db: [20, 10, 5, 0], noise: white, seed: 0}}, got {raw!r}"
    unknown = sorted(str(k) for k in raw if k not in KEYS)
    if unknown:
        return unknown[0], f"unknown key; known: {', '.join(KEYS)}"
    codecs = raw.get("codec", [])
    if (
        not isinstance(codecs, list)
        or not all(isinstance(c, str) and c in CODECS for c in codecs)
        or len(set(codecs)) != len(codecs)
    ):
        return "codec", f"must be a list of distinct codecs from: {', '.join(CODECS)}; got {codecs!r}"
    bad = effects.problem(raw)  # gain_db, speed, reverb, clip_db, talkers
    if bad:
        return bad
    others = codecs or any(k in raw for k in effects.EFFECTS)
    levels = raw.get("snr_db", [] if others else None)
    if others and levels == []:
        return None if raw.get("noise", "white") in NOISE_KINDS else ("noise", f"unknown noise {raw.get('noise')!r}")
    if (
        not isinstance(levels, list)
        or not levels
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in levels)
    ):
        return "snr_db", (
            f"must be a non-empty list of SNR levels in dB (finite numbers), got {levels!r}; or give "
            f"another perturbation: codec, {', '.join(effects.EFFECTS)}"
        )
    if len(set(levels)) != len(levels):
        return "snr_db", f"lists a level twice: {levels!r}"
    if raw.get("noise", "white") not in NOISE_KINDS:
        return "noise", f"unknown noise {raw.get('noise')!r}; one of: {', '.join(NOISE_KINDS)}"
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        return "seed", f"must be an integer >= 0, got {seed!r}"
    return None


def level_name(snr_db: float) -> str:
    """The suffix of a level's dataset name: ``snr10``, ``snr-5``, ``snr7.5``."""
    return f"snr{int(snr_db) if float(snr_db).is_integer() else snr_db}"


def levels(raw: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``[(suffix, spec)]`` for each level of a validated ``perturb:`` mapping; spec is what a case records."""
    out = []
    for codec in raw.get("codec", []):
        out.append((codec, {"kind": "codec", "codec": codec, "pedalboard": _pedalboard_version()}))
    if any(k in raw for k in effects.EFFECTS):
        out += effects.levels(raw, _pedalboard_version())
    for snr in raw.get("snr_db", []):
        spec = {
            "kind": "additive-noise",
            "noise": raw.get("noise", "white"),
            "snr_db": float(snr),
            "seed": int(raw.get("seed", 0)),
            "rng": f"numpy=={np.__version__} default_rng",
        }
        if spec["noise"] == "babble":
            spec["talkers"] = int(raw.get("talkers", effects.DEFAULT_TALKERS))
        out.append((level_name(snr), spec))
    return out


def _pedalboard_version() -> str:
    import importlib.metadata

    try:
        return f"pedalboard=={importlib.metadata.version('pedalboard')}"
    except importlib.metadata.PackageNotFoundError:
        return "pedalboard missing"


def _codec(audio: np.ndarray, codec: str, sample_rate: int) -> np.ndarray:
    try:
        import pedalboard
    except ImportError:
        from .datasets import DatasetError

        raise DatasetError(
            f"perturb codec {codec!r} needs pedalboard: install the extra, uv add 'pytest-speechlab[perturb]'"
        ) from None
    chain: list[Any] = (
        [pedalboard.HighpassFilter(300.0), pedalboard.LowpassFilter(3400.0), pedalboard.GSMFullRateCompressor()]
        if codec == "gsm"
        else [pedalboard.MP3Compressor(vbr_quality=9.0)]
    )
    board = pedalboard.Pedalboard(chain)  # type: ignore[attr-defined]
    out = board(np.ascontiguousarray(audio, dtype=np.float32), float(sample_rate))
    return np.asarray(out, dtype=np.float32).reshape(-1)[: len(audio)]


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(freqs), n)


def apply(audio: np.ndarray, spec: dict[str, Any], utterance_id: str, sample_rate: int = 16000,
          others: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """``audio`` with the perturbation of ``spec`` (noise: deterministic per seed and utterance id; babble is made
    from ``others``, the dataset's clean utterances by id, at the same rate)."""
    if spec.get("kind") == "codec":
        return _codec(audio, str(spec["codec"]), sample_rate)
    if spec.get("kind") in effects.KINDS:
        return effects.apply(audio, spec, sample_rate)
    x = np.asarray(audio, dtype=np.float64)
    rng = np.random.default_rng([int(spec["seed"]), zlib.crc32(utterance_id.encode("utf-8"))])
    if spec["noise"] == "babble":
        talkers = int(spec.get("talkers", effects.DEFAULT_TALKERS))
        noise = effects.babble(len(x), rng, others or {}, utterance_id, talkers)
    else:
        noise = _noise(str(spec["noise"]), len(x), rng)
    p_signal, p_noise = float(np.mean(x**2)), float(np.mean(noise**2))
    if p_signal == 0.0 or p_noise == 0.0:
        return np.asarray(audio, dtype=np.float32)  # silence has no SNR: left as it is
    noise *= math.sqrt(p_signal / (p_noise * 10 ** (float(spec["snr_db"]) / 10)))
    out: np.ndarray = (x + noise).astype(np.float32)
    return out


def measured_snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """The SNR of ``noisy`` against ``clean`` in dB (for tests and the curious)."""
    c = np.asarray(clean, dtype=np.float64)
    n = np.asarray(noisy, dtype=np.float64) - c
    return 10 * math.log10(float(np.mean(c**2)) / float(np.mean(n**2)))


def spec_change(golden: dict[str, Any], obtained: dict[str, Any]) -> str | None:
    """Why a golden's perturbation differs from this run's (so the audio differs), or None."""
    g, o = golden.get("perturb"), obtained.get("perturb")
    if g == o:
        return None
    if g is not None and o is not None:
        g = {k: v for k, v in g.items() if k not in ("rng", "pedalboard")}
        o = {k: v for k, v in o.items() if k not in ("rng", "pedalboard")}
        if g == o:
            return None
    return (
        f"the perturbation differs from the golden's: golden {golden.get('perturb')!r}, this run "
        f"{obtained.get('perturb')!r}; the audio is not the same. If the change is intended, re-record the golden"
    )
