"""Dataset drift: what changed in a dataset since its golden was recorded, per utterance.

A golden keeps, per utterance, the reference text and (for ASR) ``audio_sha256``, the hash of the audio
file's bytes.  When either differs now, or utterances were added or removed, the scores no longer measure
the same thing: the verdict is "dataset changed", named before any WER verdict, never a model regression.
"""

from __future__ import annotations

from typing import Any

REFERENCE = "reference edited"
AUDIO = "audio changed"
ADDED = "added"
REMOVED = "removed"


def dataset_changes(golden: dict[str, Any], obtained: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per utterance whose reference or audio changed, or that was added or removed.

    Each row: ``{"id", "change", "golden", "now"}`` (``golden``/``now`` are the references for an edit, the
    short audio hashes for an audio change, the reference for an added or removed utterance).
    """
    g = {r["id"]: r for r in golden.get("utterances") or [] if isinstance(r, dict) and "id" in r}
    o = {r["id"]: r for r in obtained.get("utterances") or [] if isinstance(r, dict) and "id" in r}
    if not g:
        return []  # a golden without utterances (old or hand-made) cannot say what changed
    out: list[dict[str, Any]] = []
    for uid, row in o.items():
        old = g.get(uid)
        if old is None:
            out.append({"id": uid, "change": ADDED, "golden": None, "now": row.get("reference")})
            continue
        if "reference" in old and old.get("reference") != row.get("reference"):
            out.append({"id": uid, "change": REFERENCE, "golden": old.get("reference"), "now": row.get("reference")})
        ga, oa = old.get("audio_sha256"), row.get("audio_sha256")
        if ga and oa and ga != oa:
            out.append({"id": uid, "change": AUDIO, "golden": f"sha {ga[:12]}", "now": f"sha {oa[:12]}",
                        "audio": row.get("audio")})
    for uid, old in g.items():
        if uid not in o:
            out.append({"id": uid, "change": REMOVED, "golden": old.get("reference"), "now": None})
    return out


def unverified_audio_note(golden: dict[str, Any], obtained: dict[str, Any]) -> str | None:
    """A note when this run hashes its audio but the golden's utterances carry no hashes to check against."""
    g_rows = [r for r in golden.get("utterances") or [] if isinstance(r, dict)]
    o_rows = [r for r in obtained.get("utterances") or [] if isinstance(r, dict)]
    if any(r.get("audio_sha256") for r in o_rows) and g_rows and not any(r.get("audio_sha256") for r in g_rows):
        return ("the golden's utterances have no audio hashes (recorded before goldens kept them), so the audio "
                "was not verified against it (references were); re-record the golden to add them")
    return None


def summary(rows: list[dict[str, Any]]) -> str:
    """``3 utterances (1 reference edited, 1 audio changed, 1 added)``."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["change"]] = counts.get(r["change"], 0) + 1
    ids = len({r["id"] for r in rows})
    parts = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    return f"{ids} utterance{'s' if ids != 1 else ''} ({parts})"


def render(rows: list[dict[str, Any]], limit: int = 20) -> list[str]:
    """The failure block's lines listing the changed utterances."""
    lines = [f"  dataset changed since the golden: {summary(rows)}:"]
    for r in rows[:limit]:
        pad = " " * (len(r["id"]) + 2)
        if r["change"] == REFERENCE:
            lines.append(f"    [{r['id']}] reference edited")
            lines.append(f"    {pad} GOLDEN REF: {r['golden']}")
            lines.append(f"    {pad} NOW REF:    {r['now']}")
        elif r["change"] == AUDIO:
            where = f" ({r['audio']})" if r.get("audio") else ""
            lines.append(f"    [{r['id']}] audio changed{where}: golden {r['golden']}, now {r['now']}")
        elif r["change"] == ADDED:
            lines.append(f"    [{r['id']}] added (not in the golden): {r['now']}")
        else:
            lines.append(f"    [{r['id']}] removed (in the golden, not in the dataset now): {r['golden']}")
    if len(rows) > limit:
        lines.append(f"    ... and {len(rows) - limit} more (see --speechlab-json)")
    return lines


def unchanged_scores(golden: dict[str, Any], obtained: dict[str, Any], rows: list[dict[str, Any]]) -> str | None:
    """WER on the utterances that did not change, golden vs now: whether the model moved as well."""
    changed = {r["id"] for r in rows}
    g = {r["id"]: r for r in golden.get("utterances") or [] if isinstance(r, dict) and "id" in r}
    pairs = [(g[r["id"]], r) for r in obtained.get("utterances") or []
             if r.get("id") in g and r["id"] not in changed]
    if not pairs or any("word_errors" not in a or "word_errors" not in b for a, b in pairs):
        return None
    n_g = sum(a.get("ref_words", 0) for a, _ in pairs)
    n_o = sum(b.get("ref_words", 0) for _, b in pairs)
    if not n_g or not n_o:
        return None
    wg = sum(a["word_errors"] for a, _ in pairs) / n_g
    wo = sum(b["word_errors"] for _, b in pairs) / n_o
    return (f"on the {len(pairs)} unchanged utterance{'s' if len(pairs) != 1 else ''} WER is {wo:.4f} now vs "
            f"{wg:.4f} in the golden ({wo - wg:+.4f})")
