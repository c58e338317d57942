"""Backoff for cloud API retries."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["full_jitter"]


def full_jitter(
    attempt: int, *, base: float, cap: float, rand: Callable[[float, float], float] = random.uniform
) -> float:
    """Delay before retry number `attempt` (0-based): uniform in [0, min(cap, base * 2**attempt)].

    Full jitter spreads a crowd of gateways that failed together, so they do not retry in lockstep
    against an API that is already throttling them.
    """
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return rand(0.0, max(0.0, ceiling))
