"""TTS cases in the speechlab.yaml matrix, in real pytest sessions (pytester): golden gating, sanity, skips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_speechlab.backends import MissingExtraError, get_backend

ROOT = Path(__file__).resolve().parents[1]


def _reason() -> str | None:
    for name in ("piper", "faster-whisper"):
        try:
            get_backend(name).check_installed()
        except MissingExtraError as exc:
            return f"the TTS matrix needs the real voice and judge: {exc}"
    return None


pytestmark = [pytest.mark.real_model, pytest.mark.skipif(_reason() is not None, reason=str(_reason()))]


@pytest.fixture(autouse=True, scope="module")
def _native_modules_loaded_once() -> None:
    """Import the native libraries before pytester snapshots sys.modules.

    In-process pytester runs drop the modules a run imported; re-importing a native extension (soxr's
    nanobind module aborts the process; onnxruntime and CTranslate2 are no safer) then fails.  Imported here,
    they survive every inner run.
    """
    import soxr  # noqa: F401

    if _reason() is None:
        import faster_whisper  # noqa: F401
        import piper  # noqa: F401

CONFIG = """
models:
  piper-joe:
    backend: {backend}
    task: tts
    weights: bundled:joe
    devices: [cpu, mps]
    stage: production
{extra_models}
datasets:
  tts_smoke:
    manifest: texts/manifest.jsonl
    task: tts
    markers: [smoke]
thresholds:
  wer_abs: 0.02
  cer_abs: 0.02
  rtf_rel: 0.5
  speed_rel: 100.0      # this machine is shared: speed is not what these tests judge (tests/test_speed.py does)
  speed_rel_min: 100.0
  rss_rel: 100.0        # nor memory: in-process sessions share one process's allocator
rounds: 1
golden_dir: golden
{extra}
"""

# A test backend: the real Piper voice, with its audio degraded as DEGRADE says (the gate must bite).
DEGRADED_BACKEND = '''
import os
import numpy as np
from pytest_speechlab.backends import register
from pytest_speechlab.backends.piper import PiperBackend


class DegradedVoice:
    def __init__(self, inner):
        self.inner = inner
        self.sample_rate = inner.sample_rate
        self.decode_settings = dict(inner.decode_settings)

    def synthesize(self, text):
        audio, sr = self.inner.synthesize(text)
        mode = os.environ.get("DEGRADE", "")
        if mode == "truncate":
            audio = audio[: audio.size // 5]
        elif mode == "noise":
            audio = np.clip(audio + np.random.default_rng(0).normal(0, 0.5, audio.size), -1, 1).astype(np.float32)
        return audio, sr


class DegradedPiper(PiperBackend):
    name = "degraded-piper"

    def load(self, spec, device):
        return DegradedVoice(super().load(spec, device))


register("degraded-piper", "conftest:DegradedPiper")
'''


def _project(pytester: pytest.Pytester, backend: str = "piper", extra: str = "", extra_models: str = "",
             rows: int = 3) -> Path:
    texts = pytester.path / "texts"
    texts.mkdir()
    lines = (ROOT / "fixtures" / "tts_smoke" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    (texts / "manifest.jsonl").write_text("\n".join(lines[:rows]) + "\n", encoding="utf-8")
    (pytester.path / "speechlab.yaml").write_text(
        CONFIG.format(backend=backend, extra=extra, extra_models=extra_models), encoding="utf-8")
    if backend == "degraded-piper":
        (pytester.path / "conftest.py").write_text(DEGRADED_BACKEND, encoding="utf-8")
    return pytester.path / "golden" / "piper-joe" / "tts_smoke" / "cpu.json"


def test_tts_case_is_gated_against_its_golden(pytester: pytest.Pytester) -> None:
    golden = _project(pytester)
    # No golden yet: the case fails and says how to accept; mps is collected and skipped with the reason.
    r = pytester.runpytest("-m", "smoke", "-rs", "-p", "no:cacheprovider")
    r.assert_outcomes(failed=1, skipped=1)
    r.stdout.fnmatch_lines(["*piper-joe-cpu-tts_smoke has no golden baseline*", "*--speechlab-update-golden*",
                            "*piper has no MPS support*"])
    r = pytester.runpytest("-m", "smoke", "--speechlab-update-golden", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, skipped=1)
    data = json.loads(golden.read_text(encoding="utf-8"))
    assert data["task"] == "tts" and data["decode"]["judge"]["weights"] == "bundled:tiny.en"
    assert data["decode"]["noise_scale"] == 0.0 and data["normalizer"]["name"] == "whisper-en"
    assert len(data["utterances"]) == 3 and all(u["hypothesis"] for u in data["utterances"])
    assert "audio" not in data["utterances"][0]  # temp WAV paths stay out of the committed golden
    assert data["metrics"]["wer"] < 0.3 and data["metrics"]["ttfa_s"] > 0
    r = pytester.runpytest("-m", "smoke", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, skipped=1)
    r.stdout.fnmatch_lines(["*speechlab summary*", "piper-joe-cpu-tts_smoke *", "*WER/CER are round-trip*"])

    # A golden that claims a better voice: the run fails listing the sentences that got worse.
    data["metrics"]["wer"] = 0.0
    data["metrics"]["cer"] = 0.0
    data["utterances"][0]["hypothesis"] = data["utterances"][0]["reference"]
    data["utterances"][0]["hyp_norm"] = data["utterances"][0]["ref_norm"]
    data["utterances"][0]["wer"] = 0.0
    golden.write_text(json.dumps(data), encoding="utf-8")
    first = data["utterances"][0]
    r = pytester.runpytest("-m", "smoke", "-p", "no:cacheprovider")
    r.assert_outcomes(failed=1, skipped=1)
    r.stdout.fnmatch_lines([
        "*piper-joe-cpu-tts_smoke is worse than its golden baseline*",
        "*WER*FAIL*",
        "*sentences that got worse*input vs what the judge heard*",
        f"*[[]{first['id']}] INPUT:*{first['reference']}*",
        "*NOW HEARD:*",
        "*listen:*.wav",
        "*pytest*--speechlab-update-golden*",
    ])


def test_degraded_voice_fails_sanity_and_is_never_blessed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    golden = _project(pytester, backend="degraded-piper", rows=2)
    monkeypatch.setenv("DEGRADE", "truncate")
    r = pytester.runpytest("-m", "smoke", "--speechlab-update-golden", "-p", "no:cacheprovider")
    r.assert_outcomes(failed=1, skipped=1)
    r.stdout.fnmatch_lines(
        ["*audio sanity failed, golden NOT updated*", "*s/char < min 0.03 (sec_per_char_min)*listen:*.wav*"]
    )
    assert not golden.exists()
    # A clean golden, then noise: the round-trip WER ceiling and the golden both catch it.
    monkeypatch.setenv("DEGRADE", "")
    pytester.runpytest("-m", "smoke", "--speechlab-update-golden", "-p", "no:cacheprovider").assert_outcomes(
        passed=1, skipped=1
    )
    monkeypatch.setenv("DEGRADE", "noise")
    r = pytester.runpytest("-m", "smoke", "-p", "no:cacheprovider")
    r.assert_outcomes(failed=1, skipped=1)
    r.stdout.fnmatch_lines(
        [
            "*worse than its golden baseline*",
            "*sentences that got worse*",
            "*audio sanity failed*",
            "*round-trip WER*> max 0.5 (roundtrip_wer_max)*",
        ]
    )


def test_judge_that_is_not_installed_skips_with_the_reason(pytester: pytest.Pytester) -> None:
    _project(
        pytester,
        extra="judge: ghost-asr",
        extra_models="""  ghost-asr:
    backend: ghost
    devices: [cpu]
""",
    )
    (pytester.path / "conftest.py").write_text(
        """
from pytest_speechlab.backends import register
from pytest_speechlab.backends.base import BaseBackend


class Ghost(BaseBackend):
    name = "ghost"
    extra = "ghost"
    tasks = ("asr",)
    requires = ("speechlab_ghost_package",)

    def load(self, spec, device):
        self.check_installed()


register("ghost", "conftest:Ghost")
""",
        encoding="utf-8",
    )
    r = pytester.runpytest("-m", "smoke", "-rs", "-k", "piper", "-p", "no:cacheprovider")
    r.assert_outcomes(skipped=2)
    r.stdout.fnmatch_lines(
        ["*TTS judge 'ghost-asr' (ghost)*not available*speechlab_ghost_package*pytest-speechlab[[]ghost]*"]
    )


def test_repo_golden_for_the_bundled_voice_is_committed() -> None:
    path = ROOT / "golden" / "piper-joe" / "tts_smoke" / "cpu.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    ids = [
        json.loads(x)["id"]
        for x in (ROOT / "fixtures" / "tts_smoke" / "manifest.jsonl").read_text().splitlines()
        if x.strip()
    ]
    assert [u["id"] for u in data["utterances"]] == ids
    assert data["task"] == "tts" and data["metrics"]["wer"] < 0.3


def test_adhoc_text_manifest_pairs_with_tts_models(pytester: pytest.Pytester) -> None:
    """`--speechlab-dataset PATH` with a text-only manifest makes TTS cases, not ASR ones."""
    pytester.makefile(
        ".yaml",
        speechlab=(
            "models:\n"
            "  fw:\n    backend: faster-whisper\n    weights: bundled:tiny.en\n"
            "  voice:\n    backend: piper\n    task: tts\n"
            "datasets: {}\n"
        ),
    )
    (pytester.path / "lines.jsonl").write_text('{"id": "a", "text": "Hello there."}\n', encoding="utf-8")
    result = pytester.runpytest("--collect-only", "-q", "--speechlab-dataset", "lines.jsonl", "speechlab.yaml")
    result.stdout.fnmatch_lines(["speechlab.yaml::test_speech[[]voice-cpu-lines[]]"])
    result.stdout.no_fnmatch_line("*fw-cpu-lines*")


def test_tts_eval_fixture_in_a_users_test(pytester: pytest.Pytester) -> None:
    """Users' own tests gate a voice with the ``tts_eval`` fixture: missing golden fails, update, then pass."""
    _project(pytester)
    pytester.makepyfile(
        test_voice="""
        def test_voice(tts_eval):
            result = tts_eval()
            assert result.metrics["wer"] < 0.5
            assert result.record["model"] == "piper-joe"
    """
    )
    first = pytester.runpytest("test_voice.py", "-q")
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(["*piper-joe-cpu-tts_smoke has no golden baseline*"])
    pytester.runpytest("test_voice.py", "-q", "--speechlab-update-golden").assert_outcomes(passed=1)
    pytester.runpytest("test_voice.py", "-q").assert_outcomes(passed=1)
