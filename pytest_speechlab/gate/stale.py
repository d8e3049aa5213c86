"""Stale goldens (issue 24, item 6): golden files that no configured case compares any more, because their model,
dataset or device was removed from speechlab.yaml.  A deleted production model's goldens were never mentioned
again; now a full, unfiltered run lists them at its end, and ``speechlab check --stale`` lists them from the
config.  Never under ``-k``, ``-m``, shards or model/dataset/device filters: a subset cannot tell what is gone.
Pure functions: no pytest."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def stale_goldens(golden_dir: Path, matrix: Iterable[tuple[str, str, str]]) -> list[str]:
    """One line per golden file under ``golden_dir`` (``MODEL/DATASET/DEVICE.json``) whose (model, dataset,
    device) is not in ``matrix``, saying which part is gone."""
    cells = set(matrix)
    models = {m for m, _, _ in cells}
    datasets = {(m, d) for m, d, _ in cells}
    out: list[str] = []
    root = Path(golden_dir)
    if not root.is_dir():
        return out
    for path in sorted(root.glob("*/*/*.json")):
        model, dataset, device = path.parent.parent.name, path.parent.name, path.stem
        if (model, dataset, device) in cells:
            continue
        if model not in models:
            why = f"model {model!r} is not in the config"
        elif (model, dataset) not in datasets:
            why = f"{model!r} no longer runs dataset {dataset!r}"
        else:
            why = f"{model!r} no longer runs on device {device!r}"
        out.append(f"{path}: stale golden ({why}): no case compares it; delete it, or restore the entry")
    return out
