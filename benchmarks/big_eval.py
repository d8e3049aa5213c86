"""Big evaluations (issue 18): one >= 20-minute dataset split into chunks, run on 1 worker, on 2 xdist workers
and as 2 CI shards joined by ``speechlab merge`` -- wall time, speedup, peak memory per worker, corpus WER.

The dataset is generated at run time (never committed): utterances of ~20 s, each a seeded random sequence of
the bundled smoke and bench clips with 0.25 s of silence between them, until the total passes the minutes
asked for.  Model: the bundled faster-whisper tiny.en (int8, 1 CPU thread per process, so 2 processes use the
2 cores of the development VM).  Run (not part of the gate; takes several minutes):

    uv run python benchmarks/big_eval.py [--minutes 20] [--chunks 8] [--workdir DIR]

It prints a Markdown table (benchmarks/README.md keeps the latest) and writes benchmarks/big-eval.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _helpers import ROOT, load_average, run_measured, session_cmd  # noqa: E402

CLIP_SETS = (ROOT / "fixtures" / "smoke", ROOT / "fixtures" / "bench")

CONFIG = """\
models:
  fw:
    backend: faster-whisper
    weights: bundled:tiny.en
    compute_type: int8
    beam_size: 1
    language: en
    cpu_threads: 1
    devices: [cpu]
datasets:
  big: {{manifest: data/big/manifest.jsonl, normalizer: whisper-en, chunks: {chunks}}}
golden_dir: golden
rounds: 1
"""


def build_dataset(root: Path, minutes: float, seed: int = 18) -> tuple[int, float]:
    """``root/data/big``: ~20 s utterances of concatenated bundled clips until ``minutes`` of audio."""
    import numpy as np
    import soundfile as sf
    import soxr

    clips: list[tuple[Any, str]] = []
    for folder in CLIP_SETS:
        for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if not row.get("text", "").strip():
                continue
            audio, rate = sf.read(str(folder / row["audio_filepath"]), dtype="float32", always_2d=True)
            audio = audio.mean(axis=1)
            if rate != 16000:
                audio = soxr.resample(audio, rate, 16000)
            clips.append((audio, row["text"]))
    rng = np.random.default_rng(seed)
    gap = np.zeros(4000, dtype=np.float32)
    out = root / "data" / "big"
    out.mkdir(parents=True, exist_ok=True)
    rows, total, k = [], 0.0, 0
    while total < minutes * 60:
        parts, texts, secs = [], [], 0.0
        while secs < 20.0:
            audio, text = clips[int(rng.integers(len(clips)))]
            parts += [audio, gap]
            texts.append(text)
            secs += (len(audio) + len(gap)) / 16000
        name = f"u{k:03d}.wav"
        sf.write(str(out / name), np.concatenate(parts), 16000, subtype="PCM_16")
        rows.append({"audio_filepath": name, "text": " ".join(texts), "id": f"u{k:03d}"})
        total += secs
        k += 1
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return len(rows), total


def summarise(name: str, record_path: Path, wall: float, controller_rss: float) -> dict[str, Any]:
    rec = json.loads(record_path.read_text(encoding="utf-8"))
    corpus = [c for c in rec["cases"] if c.get("origin") == "corpus"]
    chunks = [c for c in rec["cases"] if c.get("chunk")]
    per_worker: dict[str, float] = {}
    for c in chunks:
        w = c.get("xdist_worker") or c.get("_shard") or "main"
        per_worker[w] = max(per_worker.get(w, 0.0), float((c.get("metrics") or {}).get("peak_rss_mb") or 0.0))
    loads = (rec.get("settings") or {}).get("xdist", {}).get("loads_by_worker") or (
        (rec.get("settings") or {}).get("model_loads"))
    return {
        "mode": name,
        "wall_s": round(wall, 1),
        "controller_peak_rss_mb": round(controller_rss, 0),
        "peak_rss_mb_per_worker": {k: round(v) for k, v in sorted(per_worker.items())},
        "corpus_wer": corpus[0]["metrics"].get("wer") if corpus else None,
        "corpus_verdict": corpus[0].get("verdict") if corpus else None,
        "corpus_rtf": corpus[0]["metrics"].get("rtf") if corpus else None,
        "chunks": len(chunks),
        "loads": loads,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="speechlab-big-"))
    root.mkdir(parents=True, exist_ok=True)
    n_utts, total = build_dataset(root, args.minutes)
    (root / "speechlab.yaml").write_text(CONFIG.format(chunks=args.chunks), encoding="utf-8")
    print(f"dataset: {n_utts} utterances, {total / 60:.1f} min, {args.chunks} chunks; load {load_average()}",
          flush=True)
    results = []

    # 1 worker: a plain session (records the corpus golden the two others are gated against)
    r = run_measured(session_cmd("--speechlab-update-golden", "--speechlab-json", "one.json"), root)
    assert r["rc"] == 0, r["stdout"][-3000:] + r["stderr"][-3000:]
    results.append(summarise("1 worker (plain session)", root / "one.json", r["wall_s"], r["peak_rss_mb"]))
    print(results[-1], flush=True)

    # 2 xdist workers, gated against that golden
    r = run_measured(session_cmd("-n", "2", "--speechlab-json", "two.json"), root)
    assert r["rc"] == 0, r["stdout"][-3000:] + r["stderr"][-3000:]
    results.append(summarise("2 xdist workers (-n 2)", root / "two.json", r["wall_s"], r["peak_rss_mb"]))
    print(results[-1], flush=True)

    # 2 shards at once (two CI machines, here the 2 cores of one), then the merge job that gates
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, str(HERE / "maxrss.py"),
                          *session_cmd("--speechlab-shard", f"{i}/2", "--speechlab-rtf-gate", "off",
                                       "--speechlab-json", f"shard{i}.json")],
                         cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in (1, 2)
    ]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[0][-2000:] + o[1][-2000:] for o in outs]
    shard_rss = [json.loads(o[1].strip().splitlines()[-1]) for o in outs]
    assert all(s["rc"] == 0 for s in shard_rss), [o[0][-3000:] for o in outs]
    merge = subprocess.run([sys.executable, "-m", "pytest_speechlab.commands.cli", "merge", "shard1.json",
                            "shard2.json", "-o", "merged.json", "--gate"],
                           cwd=root, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    assert merge.returncode == 0, merge.stdout[-3000:] + merge.stderr[-3000:]
    merged = json.loads((root / "merged.json").read_text(encoding="utf-8"))
    for c in merged["cases"]:  # which shard each chunk ran in, for the per-process memory
        for i in (1, 2):
            ids = {x["case"] for x in json.loads((root / f"shard{i}.json").read_text())["cases"]}
            if c["case"] in ids and c.get("chunk"):
                c["_shard"] = f"shard{i}"
    (root / "merged-annotated.json").write_text(json.dumps(merged), encoding="utf-8")
    results.append(summarise("2 shards + merge", root / "merged-annotated.json", wall,
                             max(s["peak_rss_mb"] for s in shard_rss)))
    print(results[-1], flush=True)

    base = results[0]["wall_s"]
    lines = ["| mode | wall | speedup | peak RSS per worker | model loads | corpus WER | verdict |",
             "|---|---|---|---|---|---|---|"]
    for res in results:
        rss = ", ".join(f"{k} {v} MB" for k, v in res["peak_rss_mb_per_worker"].items())
        lines.append(f"| {res['mode']} | {res['wall_s']:.1f} s | {base / res['wall_s']:.2f}x | {rss} | "
                     f"{json.dumps(res['loads'])} | {res['corpus_wer']:.4f} | {res['corpus_verdict']} |")
    wers = {res["corpus_wer"] for res in results}
    print(f"\n{n_utts} utterances, {total / 60:.1f} min of audio, {args.chunks} chunks; load after: {load_average()}")
    print("\n".join(lines))
    print(f"corpus WER identical across the three: {len(wers) == 1}")
    (HERE / "big-eval.json").write_text(json.dumps({"utterances": n_utts, "minutes": total / 60,
                                                     "chunks": args.chunks, "results": results,
                                                     "wer_identical": len(wers) == 1}, indent=1) + "\n",
                                        encoding="utf-8")
    return 0 if len(wers) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
