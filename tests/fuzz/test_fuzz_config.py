"""Config loading from hostile files and environments: a GatewayConfig or a ConfigError naming keys,
never another exception, and never a value from the configuration in the error text (the policy section
excepted, see ConfigError): SECRET, placed under any key, stands for a secret pasted in the wrong place."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.config import ConfigError, GatewayConfig, load_config
from tests.fuzz import tried

SECRET = "S3cr3t-MARKER-value-9f8e7d"
_DIR = Path(tempfile.mkdtemp(prefix="fuzz-config-"))

toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(["90s", "15m", "8h", "1d", "-1", "1e9", "127.0.0.1:0", "[::1]:8080", "http://x", SECRET]),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=12,
)

SECTIONS: dict[str, list[str]] = {
    "server": [
        "listen",
        "public_origins",
        "trusted_proxies",
        "tls_cert",
        "drain_timeout",
        "max_header_size",
        "log_level",
        "metrics_listen",
    ],
    "session": ["keys", "idle_lifetime", "absolute_lifetime", "secure_cookie", "keys_file"],
    "upstream": ["allowed_hosts", "verify_tls", "connect_timeout", "ca_file"],
    "console": ["idle_timeout", "idle_warning", "max_duration", "keepalive", "max_message_size"],
    "limits": ["per_user", "global_max", "requests_per_minute", "burst"],
    "audit": ["target"],
    "state": ["backend", "redis"],
    "policy": ["rules", "admins", "default"],
}
CLOUD_KEYS = [
    "name",
    "region",
    "project_id",
    "endpoint",
    "access_key",
    "secret_key",
    "secret_key_file",
    "retries",
    "iam",
    "verify_tls",
]


@st.composite
def config_docs(draw: st.DrawFn) -> dict[str, Any]:
    """Config-shaped documents: known sections and keys with values of any type, a valid core sometimes."""
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["session"] = {"keys": [draw(st.sampled_from([SECRET, "A" * 43, "not base64!"]))]}
        doc["auth"] = {"local": {"enabled": True}}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=4, unique=True)):
        body = doc.setdefault(section, {})
        for key in draw(st.lists(st.sampled_from(SECTIONS[section]), max_size=4, unique=True)):
            body[key] = draw(toml_values)
    if draw(st.booleans()):
        doc["clouds"] = [
            {
                k: draw(toml_values)
                for k in draw(st.lists(st.sampled_from(CLOUD_KEYS), max_size=6, unique=True))
            }
            | {"secret_key": SECRET}
        ]
    if draw(st.integers(0, 4)) == 0:
        doc[draw(st.text(min_size=1, max_size=10))] = draw(toml_values)
    return doc


def _load(path: Path | None, env: dict[str, str]) -> None:
    try:
        config = load_config(path, env=env)
    except ConfigError as exc:
        text = str(exc)
        assert text and all(line.strip() for line in exc.problems)
        echoed = [line for line in exc.problems if SECRET in line and not line.startswith("policy")]
        assert not echoed, "a value was echoed in a config error"
        return
    assert isinstance(config, GatewayConfig)


@given(config_docs())
@example({"session": {"idle_lifetime": SECRET}})  # `make fuzz` found it: the value was quoted back
@example({"server": {"listen": SECRET, "public_origins": [SECRET], "trusted_proxies": [SECRET]}})
@example({"session": {"keys_file": SECRET}, "clouds": [{"secret_key_file": "/nonexistent/" + SECRET}]})
def test_config_shaped_documents(doc: dict[str, Any]) -> None:
    tried("config: config-shaped TOML")
    path = _DIR / "doc.toml"
    try:
        path.write_text(tomli_w.dumps(doc))
    except (TypeError, ValueError):
        return  # not representable in TOML (e.g. NaN keys): not an input a file can hold
    _load(path, {})


@given(st.binary(max_size=400))
def test_arbitrary_file_bytes(raw: bytes) -> None:
    tried("config: arbitrary file bytes")
    path = _DIR / "raw.toml"
    path.write_bytes(raw)
    _load(path, {})


@given(
    st.sampled_from(
        [
            b"a = " + b"[" * 3000 + b"]" * 3000,
            b"\xff\xfe[server]",
            b"x = {" * 2000,
            b'[session]\nkeys_file = "/nonexistent\\u0000x"\n',
            b'[session]\nkeys_file = "/"\n',
        ]
    )
)
def test_known_hostile_files(raw: bytes) -> None:
    tried("config: known hostile files")
    path = _DIR / "hostile.toml"
    path.write_bytes(raw)
    _load(path, {})


_segments = st.one_of(
    st.sampled_from(
        [
            "SERVER",
            "LISTEN",
            "SESSION",
            "KEYS",
            "CLOUDS",
            "0",
            "1",
            "7",
            "SECRET_KEY",
            "AUTH",
            "LOCAL",
            "ENABLED",
            "USERS",
            "NAME",
            "PUBLIC_ORIGINS",
            "\u00b2",
            "",
            "POLICY",
            "RULES",
        ]
    ),
    st.text(max_size=6),
)


@given(
    st.lists(st.tuples(st.lists(_segments, min_size=1, max_size=5), toml_scalars.map(str)), max_size=5),
    st.booleans(),
)
def test_environment_overrides(pairs: list[tuple[list[str], str]], with_file: bool) -> None:
    tried("config: environment overrides")
    env = {"NOVNC_GATEWAY__" + "__".join(path): value for path, value in pairs}
    env = {k: v for k, v in env.items() if "\0" not in k and "\0" not in v}
    path = None
    if with_file:
        path = _DIR / "base.toml"
        path.write_text(
            '[server]\npublic_origins = ["http://a.example"]\n[session]\nkeys = ["'
            + "A" * 43
            + '"]\n[auth.local]\nenabled = true\n[[clouds]]\nname = "c"\nregion = "r"\nproject_id = "p"\n'
            'access_key = "ak"\nsecret_key = "' + SECRET + '"\n'
        )
    _load(path, env)
