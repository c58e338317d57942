"""Hypothesis profiles: "ci" (small, the default in `make test`) and "long" (`make fuzz`).

HYPOTHESIS_PROFILE=long selects the long run; FUZZ_REPORT=path.json writes how many inputs each target saw.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz import TRIED

_COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("ci", max_examples=150, derandomize=False, **_COMMON)
settings.register_profile("long", max_examples=10_000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def _fuzz_report() -> Iterator[None]:
    yield
    target = os.environ.get("FUZZ_REPORT")
    if target:
        report = {
            "profile": os.environ.get("HYPOTHESIS_PROFILE", "ci"),
            "inputs": dict(sorted(TRIED.items())),
        }
        Path(target).write_text(json.dumps(report, indent=2) + "\n")
