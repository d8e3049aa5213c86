"""The bare baseline for the harness-overhead benchmark: load tiny.en and transcribe a manifest's files with
the same settings the plugin uses (int8, beam 5, English, no timestamps, greedy temperature 0), reading audio
the same way (soundfile, downmix, soxr to 16 kHz).  No pytest, no metrics, no golden.  Prints the hypotheses
as JSON.  Usage: python bare_transcribe.py MANIFEST.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(manifest: str) -> None:
    """Transcribe every file of ``manifest`` once and print the hypotheses."""
    import numpy as np
    import soundfile as sf
    import soxr
    from faster_whisper import WhisperModel

    from pytest_speechlab.backends.weights import bundled_ct2_dir

    model = WhisperModel(str(bundled_ct2_dir("tiny.en")), device="cpu", compute_type="int8", cpu_threads=0)
    root = Path(manifest).parent
    hyps = []
    for line in Path(manifest).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        audio, sr = sf.read(root / row["audio_filepath"], dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        if sr != 16000:
            audio = soxr.resample(audio, sr, 16000).astype(np.float32)
        segments, _ = model.transcribe(audio, language="en")  # the library's own defaults, as the plugin runs them
        hyps.append("".join(s.text for s in segments).strip())
    print(json.dumps(hyps))


if __name__ == "__main__":
    main(sys.argv[1])
