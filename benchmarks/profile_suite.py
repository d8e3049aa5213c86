"""Where the suite's time goes: per-file seconds and the slowest tests, as Markdown, from a JUnit XML file.

    uv run pytest -m "not real_e2e" -p no:cacheprovider --junitxml junit.xml
    uv run python benchmarks/profile_suite.py junit.xml [N]

A test's seconds are JUnit's (setup + call + teardown). benchmarks/README.md ("The project's own test suite")
shows the before/after tables this printed for issue 26.
"""

from __future__ import annotations

import math
import sys
import xml.etree.ElementTree as ET
from collections import Counter


def file_of(classname: str) -> str:
    """``tests.test_x`` -> ``tests/test_x.py``; the bundled matrix's items keep their YAML file name."""
    parts = classname.split(".")
    if parts[0] == "tests" and len(parts) >= 2:
        return f"tests/{parts[1]}.py"
    return "speechlab.yaml" if parts[0] == "speechlab" else classname


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    try:
        top = int(argv[1]) if len(argv) > 1 else 30
        root = ET.parse(argv[0]).getroot()
    except ValueError:
        print(f"N must be a whole number, got {argv[1]!r}: profile_suite.py JUNIT.xml [N]", file=sys.stderr)
        return 2
    except (OSError, ET.ParseError) as exc:
        print(f"{argv[0]}: cannot read a JUnit XML file ({exc}); write one with pytest --junitxml FILE",
              file=sys.stderr)
        return 2
    seconds: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    tests: list[tuple[float, str]] = []
    for case in root.iter("testcase"):
        raw = case.get("time", "0") or "0"
        try:
            t = float(raw)
        except ValueError:
            t = math.nan
        if not math.isfinite(t) or t < 0:
            print(f"{argv[0]}: test {case.get('name')!r} has time={raw!r}, not a duration in seconds", file=sys.stderr)
            return 2
        f = file_of(case.get("classname", ""))
        seconds[f] += t
        counts[f] += 1
        tests.append((t, f"{f}::{case.get('name')}"))
    total = sum(seconds.values())
    if not tests:
        print(f"{argv[0]}: no <testcase> in this JUnit file: nothing to profile", file=sys.stderr)
        return 1
    print(f"total {total:.0f} s in {len(tests)} tests\n")
    print("| file | tests | seconds | share |\n|---|---|---|---|")
    for f, t in seconds.most_common():
        print(f"| `{f}` | {counts[f]} | {t:.1f} | {100 * t / total if total else 0.0:.1f}% |")
    print("\n| # | test | seconds |\n|---|---|---|")
    for i, (t, name) in enumerate(sorted(tests, reverse=True)[:top], 1):
        print(f"| {i} | `{name}` | {t:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
