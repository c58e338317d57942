"""Prometheus metrics: how much, how fast, how often it failed.

Each app instance owns its registry (tests build many apps in one process). Labels are kept low-cardinality
on purpose: no user names, server ids or console ids, only small closed sets (permission, direction,
outcome, cloud name from the config, operation, error code). Label values from outside (error codes,
outcomes) are squeezed into a safe shape so a hostile or buggy upstream cannot blow up the series count.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE

__all__ = ["Metrics"]

PREFIX = "novnc_gateway"
DIRECTIONS = ("to_browser", "to_upstream")
_SAFE_LABEL = re.compile(r"^[A-Za-z0-9_.:-]{1,40}$")

_API_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_CONNECT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _label(value: str) -> str:
    """Bound what an external string can add to the series count."""
    return value if _SAFE_LABEL.match(value) else "other"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("novnc-gateway")
    except Exception:  # not installed (a source checkout): still export something
        return "unknown"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = CollectorRegistry(auto_describe=True)
            # Process and platform facts are cheap and useful when the registry is ours alone.
            prometheus_client.ProcessCollector(registry=registry)
            prometheus_client.PlatformCollector(registry=registry)
        self.registry = registry
        r = registry
        self.active_sessions = Gauge(
            f"{PREFIX}_active_sessions", "Console sessions relaying now.", ["permission"], registry=r
        )
        self.sessions_started_total = Counter(
            f"{PREFIX}_sessions_started", "Console sessions started (relay up).", registry=r
        )
        self.sessions_ended_total = Counter(
            f"{PREFIX}_sessions_ended",
            "Console sessions ended, by who or what ended them (the audit closed_by).",
            ["outcome"],
            registry=r,
        )
        self.bytes_relayed_total = Counter(
            f"{PREFIX}_bytes_relayed", "Payload bytes relayed.", ["direction"], registry=r
        )
        self.messages_relayed_total = Counter(
            f"{PREFIX}_messages_relayed", "WebSocket messages relayed.", ["direction"], registry=r
        )
        self.dropped_messages_total = Counter(
            f"{PREFIX}_dropped_messages", "Client messages dropped by the view-only filter.", registry=r
        )
        self.clipboard_denied_total = Counter(
            f"{PREFIX}_clipboard_denied",
            "Clipboard transfers the policy dropped (paste: browser to console, copy: console to browser).",
            ["direction"],
            registry=r,
        )
        self.cloud_api_seconds = Histogram(
            f"{PREFIX}_cloud_api_seconds",
            "Cloud API call latency, successful or not.",
            ["cloud", "operation"],
            buckets=_API_BUCKETS,
            registry=r,
        )
        self.cloud_api_errors_total = Counter(
            f"{PREFIX}_cloud_api_errors",
            "Failed cloud API calls by error code.",
            ["cloud", "operation", "code"],
            registry=r,
        )
        self.upstream_connect_seconds = Histogram(
            f"{PREFIX}_upstream_connect_seconds",
            "Time to open the upstream WebSocket (console proxy).",
            buckets=_CONNECT_BUCKETS,
            registry=r,
        )
        self.signins_total = Counter(
            f"{PREFIX}_signins", "Sign-in attempts by method and outcome.", ["method", "outcome"], registry=r
        )
        self.console_refusals_total = Counter(
            f"{PREFIX}_console_refusals",
            "Consoles refused (policy, limit, cloud state, ...).",
            ["reason"],
            registry=r,
        )
        self.moderated_waiting = Gauge(
            f"{PREFIX}_moderated_consoles_waiting",
            "Moderated consoles waiting for moderators, input held, by reason: waiting (never moderated yet) "
            "or paused (a moderator left).",
            ["reason"],
            registry=r,
        )
        self.observers = Gauge(
            f"{PREFIX}_observers",
            "Observers of live consoles on this replica (docs/shadowing.md): pending (waiting for the "
            "owner's approval) or joined (watching).",
            ["state"],
            registry=r,
        )
        self.build_info = Info(f"{PREFIX}_build", "Gateway version.", registry=r)
        self.build_info.info({"version": _version(), "python": platform.python_version()})
        # Children made up front: the series exist from the start (rate() works at once), and the relay's
        # per-message path skips the label lookup.
        self._bytes = {d: self.bytes_relayed_total.labels(direction=d) for d in DIRECTIONS}
        self._messages = {d: self.messages_relayed_total.labels(direction=d) for d in DIRECTIONS}
        for permission in ("view", "control"):
            self.active_sessions.labels(permission=permission)
        self._clipboard = {d: self.clipboard_denied_total.labels(direction=d) for d in ("paste", "copy")}
        self._held = {s: self.moderated_waiting.labels(reason=s) for s in ("waiting", "paused")}
        for observer_state in ("pending", "joined"):
            self.observers.labels(state=observer_state)

    # -- adapters and small helpers for the hot spots -------------------------------------------------

    def observe_api(self, cloud: str) -> Callable[[str, str, float], None]:
        """An observer for one cloud provider: (operation, outcome, seconds).

        Every call's latency goes to the histogram (slow failures matter as much as slow successes);
        an outcome other than "ok" also counts as an error with the outcome as its code label.
        """
        cloud_label = _label(cloud)

        def observe(operation: str, outcome: str, seconds: float) -> None:
            op = _label(operation)
            self.cloud_api_seconds.labels(cloud=cloud_label, operation=op).observe(max(0.0, seconds))
            if outcome != "ok":
                errors = self.cloud_api_errors_total
                errors.labels(cloud=cloud_label, operation=op, code=_label(outcome)).inc()

        return observe

    def session_started(self, permission: str) -> None:
        self.sessions_started_total.inc()
        self.active_sessions.labels(permission=_label(str(permission))).inc()

    def session_ended(self, permission: str | None, outcome: str) -> None:
        """permission None: a console that was allowed but ended before it relayed (never active)."""
        if permission is not None:
            self.active_sessions.labels(permission=_label(str(permission))).dec()
        self.sessions_ended_total.labels(outcome=_label(outcome)).inc()

    def relayed(self, direction: str, nbytes: int, messages: int = 1) -> None:
        """direction is "to_browser" or "to_upstream" (KeyError otherwise)."""
        self._bytes[direction].inc(nbytes)
        self._messages[direction].inc(messages)

    def clipboard_denied(self, *, paste: int, copy: int) -> None:
        """Clipboard transfers the rule's clipboard policy dropped, counted when a console closes."""
        self._clipboard["paste"].inc(paste)
        self._clipboard["copy"].inc(copy)

    def dropped(self, messages: int) -> None:
        """Client messages the view-only filter dropped."""
        self.dropped_messages_total.inc(messages)

    def moderation(self, before: str | None, after: str | None) -> None:
        """A moderated console went from state `before` to `after` (None: not there); "leaving" (held for
        the grace before closing) counts as paused."""
        for state, step in ((before, -1), (after, 1)):
            gauge = self._held.get("paused" if state == "leaving" else state or "")
            if gauge is not None:
                gauge.inc(step)

    def upstream_connected(self, seconds: float) -> None:
        self.upstream_connect_seconds.observe(max(0.0, seconds))

    def signin(self, method: str, outcome: str) -> None:
        self.signins_total.labels(method=_label(method), outcome=_label(outcome)).inc()

    def refused(self, reason: str) -> None:
        self.console_refusals_total.labels(reason=_label(reason)).inc()

    def render(self) -> tuple[bytes, str]:
        """The /metrics body and its content type.

        The body is the classic text format with legacy-safe names, so it is announced as version 0.0.4,
        which every scraper knows (the library's CONTENT_TYPE_LATEST now says 1.0.0).
        """
        return prometheus_client.generate_latest(self.registry), CONTENT_TYPE
