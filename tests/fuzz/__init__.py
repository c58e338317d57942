"""Property-based fuzzing of every parser that reads hostile input (see docs/reliability.md)."""

from __future__ import annotations

from collections import Counter

# Inputs each fuzz target was fed in this run; written out by conftest when FUZZ_REPORT names a file.
TRIED: Counter[str] = Counter()


def tried(target: str) -> None:
    TRIED[target] += 1
