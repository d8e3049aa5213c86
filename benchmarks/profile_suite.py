"""Where the suite's time goes: per-file seconds and the slowest tests, as Markdown, from a JUnit XML file.

    uv run pytest -m "not real_e2e" -p no:cacheprovider --junitxml junit.xml
    uv run python benchmarks/profile_suite.py junit.xml [N]

A test's seconds are JUnit's (setup + call + teardown). benchmarks/README.md ("The project's own test suite")
shows the before/after tables this printed for issue 26.
"""

from __future__ import annotations

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
    top = int(argv[1]) if len(argv) > 1 else 30
    seconds: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    tests: list[tuple[float, str]] = []
    for case in ET.parse(argv[0]).getroot().iter("testcase"):
        t = float(case.get("time", 0) or 0)
        f = file_of(case.get("classname", ""))
        seconds[f] += t
        counts[f] += 1
        tests.append((t, f"{f}::{case.get('name')}"))
    total = sum(seconds.values())
    print(f"total {total:.0f} s in {len(tests)} tests\n")
    print("| file | tests | seconds | share |\n|---|---|---|---|")
    for f, t in seconds.most_common():
        print(f"| `{f}` | {counts[f]} | {t:.1f} | {100 * t / total:.1f}% |")
    print("\n| # | test | seconds |\n|---|---|---|")
    for i, (t, name) in enumerate(sorted(tests, reverse=True)[:top], 1):
        print(f"| {i} | `{name}` | {t:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
