"""Entity protocol: per-utterance entities (numbers, dates, names) that must come out of the model exactly.

A manifest row may carry ``"entities": ["nine", "Sundays"]``.  Each entity is normalised with the dataset's
normaliser (the same one that scores WER, so "nine" and "9" agree under ``whisper-en``) and counts as
recognised when it occurs in the normalised hypothesis as whole words.  The metric ``entity_acc`` is the
share of entities recognised, pooled over the dataset; it is gated like WER (tolerance ``entity_abs``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .metrics import Normalizer


class EntityError(ValueError):
    """An entity list is unusable; the message names the dataset, the utterance and the fix."""


def validate_entities(value: Any, where: str) -> list[str]:
    """Check a manifest row's ``entities`` value: a list of non-empty strings.  ``where`` is ``file:line``."""
    if not isinstance(value, list) or not all(isinstance(x, str) and x.strip() for x in value):
        raise EntityError(
            f"{where}: 'entities' must be a list of non-empty strings (e.g. [\"nine\", \"Sundays\"]), got {value!r}"
        )
    return list(value)


def _contains(haystack: str, needle: str) -> bool:
    # Whole words only: "six" must not count as found inside "sixty".
    return re.search(r"(?<!\S)" + re.escape(needle) + r"(?!\S)", haystack) is not None


def score_entities(entities: Sequence[str], reference: str, hypothesis_norm: str, normalizer: Normalizer,
                   where: str) -> dict[str, Any]:
    """Score one utterance's entities against its normalised hypothesis.

    Returns ``{"entities": [...], "entity_total", "entity_hits", "entity_misses", "entities_missed"}``.
    An entity that normalises to nothing, or that its own reference does not contain after normalisation,
    is a manifest error (it could never be scored fairly) and raises :class:`EntityError`.
    """
    ref_norm = normalizer(reference)
    missed: list[str] = []
    for ent in entities:
        ent_norm = normalizer(ent)
        if not ent_norm:
            raise EntityError(f"{where}: entity {ent!r} is empty after the {normalizer.name} normaliser; remove it")
        if not _contains(ref_norm, ent_norm):
            raise EntityError(
                f"{where}: entity {ent!r} (normalised {ent_norm!r}) does not occur in the reference "
                f"{ref_norm!r}; fix the entity or the text in the manifest"
            )
        if not _contains(hypothesis_norm, ent_norm):
            missed.append(ent)
    total = len(entities)
    return {"entities": list(entities), "entity_total": total, "entity_hits": total - len(missed),
            "entity_misses": len(missed), "entities_missed": missed}


def pool_entities(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pooled ``entity_acc`` (recognised / total) over rows scored by :func:`score_entities`; {} if none."""
    total = sum(int(r.get("entity_total", 0)) for r in rows)
    if total == 0:
        return {}
    hits = sum(int(r.get("entity_hits", 0)) for r in rows)
    return {"entity_acc": hits / total, "entities": total, "entity_hits": hits}
