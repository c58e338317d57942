from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def m() -> Metrics:
    return Metrics(CollectorRegistry())


def test_each_instance_has_its_own_registry():
    a, b = Metrics(), Metrics()  # would raise "Duplicated timeseries" on a shared registry
    a.sessions_started_total.inc()
    assert value(a, "novnc_gateway_sessions_started_total") == 1
    assert value(b, "novnc_gateway_sessions_started_total") == 0
    assert any(name.startswith("process_") for name, _ in samples(a))  # process facts on our own registry


def test_series_exist_before_any_traffic(m):
    s = samples(m)
    for direction in ("to_browser", "to_upstream"):
        assert s[("novnc_gateway_bytes_relayed_total", (("direction", direction),))] == 0
        assert s[("novnc_gateway_messages_relayed_total", (("direction", direction),))] == 0
    assert s[("novnc_gateway_active_sessions", (("permission", "view"),))] == 0
    assert s[("novnc_gateway_dropped_messages_total", ())] == 0
    assert s[("novnc_gateway_upstream_connect_seconds_count", ())] == 0


def test_session_lifecycle(m):
    m.session_started("control")
    m.session_started("view")
    m.session_started("view")
    m.session_ended("view", "browser")
    assert value(m, "novnc_gateway_active_sessions", permission="view") == 1
    assert value(m, "novnc_gateway_active_sessions", permission="control") == 1
    assert value(m, "novnc_gateway_sessions_started_total") == 3
    assert value(m, "novnc_gateway_sessions_ended_total", outcome="browser") == 1


def test_relay_counters(m):
    m.relayed("to_browser", 1000)
    m.relayed("to_browser", 24, messages=2)
    m.relayed("to_upstream", 10)
    m.dropped_messages_total.inc()
    assert value(m, "novnc_gateway_bytes_relayed_total", direction="to_browser") == 1024
    assert value(m, "novnc_gateway_messages_relayed_total", direction="to_browser") == 3
    assert value(m, "novnc_gateway_bytes_relayed_total", direction="to_upstream") == 10
    assert value(m, "novnc_gateway_dropped_messages_total") == 1
    with pytest.raises(KeyError):
        m.relayed("sideways", 1)


def test_observe_api_records_latency_and_errors(m):
    observe = m.observe_api("huawei-prod")
    observe("remote_console", "ok", 0.2)
    observe("remote_console", "Ecs.0114", 0.04)
    observe("remote_console", "Ecs.0114", 0.03)
    observe("list_servers", "APIGW.0308", 1.5)
    labels = {"cloud": "huawei-prod", "operation": "remote_console"}
    assert value(m, "novnc_gateway_cloud_api_seconds_count", **labels) == 3
    assert value(m, "novnc_gateway_cloud_api_seconds_sum", **labels) == pytest.approx(0.27)
    assert value(m, "novnc_gateway_cloud_api_seconds_bucket", le="0.05", **labels) == 2
    assert value(m, "novnc_gateway_cloud_api_errors_total", code="Ecs.0114", **labels) == 2
    assert value(m, "novnc_gateway_cloud_api_errors_total", code="APIGW.0308", cloud="huawei-prod",
                 operation="list_servers") == 1  # fmt: skip
    assert not any(
        name == "novnc_gateway_cloud_api_errors_total" and ("code", "ok") in labels
        for name, labels in samples(m)
    )


def test_unbounded_label_values_collapse_to_other(m):
    observe = m.observe_api("hw")
    observe("remote_console", "weird code with spaces and a server id 7b7e3c5e?", 0.1)
    observe("remote_console", "x" * 200, 0.1)
    m.refused("no such reason\n")
    errors = [labels for name, labels in samples(m) if name == "novnc_gateway_cloud_api_errors_total"]
    assert errors == [(("cloud", "hw"), ("code", "other"), ("operation", "remote_console"))]
    assert value(m, "novnc_gateway_cloud_api_errors_total", cloud="hw", code="other",
                 operation="remote_console") == 2  # fmt: skip
    assert value(m, "novnc_gateway_console_refusals_total", reason="other") == 1


def test_signins_refusals_connect_and_build_info(m):
    m.signin("oidc", "ok")
    m.signin("oidc", "failed")
    m.signin("oidc", "ok")
    m.refused("policy")
    m.upstream_connect_seconds.observe(0.3)
    assert value(m, "novnc_gateway_signins_total", method="oidc", outcome="ok") == 2
    assert value(m, "novnc_gateway_signins_total", method="oidc", outcome="failed") == 1
    assert value(m, "novnc_gateway_console_refusals_total", reason="policy") == 1
    assert value(m, "novnc_gateway_upstream_connect_seconds_bucket", le="0.5") == 1
    assert value(m, "novnc_gateway_upstream_connect_seconds_bucket", le="0.25") == 0
    build = [labels for name, labels in samples(m) if name == "novnc_gateway_build_info"]
    assert len(build) == 1 and dict(build[0])["version"]


def test_no_high_cardinality_labels(m):
    m.session_started("view")
    m.observe_api("hw")("get_server", "Ecs.0114", 0.1)
    m.signin("local", "ok")
    label_names = {
        key for name, labels in samples(m) if name.startswith("novnc_gateway_") for key, _ in labels
    }
    allowed = {"permission", "outcome", "direction", "cloud", "operation", "code", "method", "reason", "le"}
    allowed |= {"state"}  # observers: pending or joined
    assert label_names <= allowed | {"version", "python"}


def test_clipboard_denials_are_counted_by_direction(m):
    s = samples(m)
    for direction in ("paste", "copy"):
        assert s[("novnc_gateway_clipboard_denied_total", (("direction", direction),))] == 0
    m.clipboard_denied(paste=2, copy=0)
    m.clipboard_denied(paste=0, copy=3)
    assert value(m, "novnc_gateway_clipboard_denied_total", direction="paste") == 2
    assert value(m, "novnc_gateway_clipboard_denied_total", direction="copy") == 3


def test_moderated_consoles_waiting_follow_their_states(m):
    m.moderation(None, "waiting")
    m.moderation(None, "waiting")
    assert value(m, "novnc_gateway_moderated_consoles_waiting", reason="waiting") == 2
    m.moderation("waiting", "moderated")
    m.moderation("moderated", "leaving")  # held for the grace before closing: counted as paused
    assert value(m, "novnc_gateway_moderated_consoles_waiting", reason="waiting") == 1
    assert value(m, "novnc_gateway_moderated_consoles_waiting", reason="paused") == 1
    m.moderation("leaving", "ended")
    m.moderation("waiting", None)  # closed while waiting
    assert value(m, "novnc_gateway_moderated_consoles_waiting", reason="paused") == 0
    assert value(m, "novnc_gateway_moderated_consoles_waiting", reason="waiting") == 0


def test_observers_are_counted_by_state(m):
    """Both series exist from the start (docs/shadowing.md): pending approval, and watching."""
    assert value(m, "novnc_gateway_observers", state="pending") == 0
    m.observers.labels(state="joined").inc()
    assert value(m, "novnc_gateway_observers", state="joined") == 1
