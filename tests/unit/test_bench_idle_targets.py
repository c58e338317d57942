"""The idle targets in the bench report: a level cut short by the descriptor limit counts with what it
reached and says so; one where opening failed does not count as met."""

from __future__ import annotations

from typing import Any

from bench.report import _idle_targets


def _gateway(*points: dict[str, Any]) -> dict[str, Any]:
    return {"cpu_window_s": 20.0, "points": list(points)}


def _point(requested: int, sessions: int, kib: float, cpu: float, **extra: Any) -> dict[str, Any]:
    return {"requested": requested, "sessions": sessions, "kib_per_session": kib, "cpu_percent": cpu, **extra}


def test_a_level_cut_short_by_the_descriptor_limit_counts_and_says_so() -> None:
    limit = "RLIMIT_NOFILE hard limit 20000 (2 descriptor(s) per session, 100 spare)"
    memory, cpu = _idle_targets(
        _gateway(_point(5000, 5000, 30.0, 1.0), _point(10000, 9950, 28.0, 3.0, limited_by=limit))
    )
    assert memory["met"] and cpu["met"]
    assert memory["target"] == f"idle: <= 32 KiB per console at 9950 sessions of 10000 ({limit})"
    assert cpu["target"].startswith("idle: <= 5% of a core at 9950 sessions")
    assert "over 20.0 s" in cpu["target"]
    assert (memory["value"], cpu["value"], memory["sessions_reached"]) == (28.0, 3.0, 9950)


def test_over_the_limits_or_short_of_the_level_is_not_met() -> None:
    memory, cpu = _idle_targets(_gateway(_point(10000, 10000, 32.5, 5.01)))
    assert not memory["met"] and not cpu["met"]
    failed = {"requested": 10000, "sessions": 7000, "failed_opens": 3000, "error": "ClientError: x"}
    memory, cpu = _idle_targets(_gateway(_point(5000, 5000, 20.0, 1.0), failed))
    assert not memory["met"] and not cpu["met"]
    assert "at 5000 sessions of 10000 (opening more failed)" in memory["target"]
