"""Helpers the plotting commands share (scorecard, robustness)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_png(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG under a temporary name, then rename: a reader never sees half a PNG."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
