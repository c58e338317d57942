"""Config loading: TOML + environment + secret files, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.auth.cookie import generate_key
from gateway.config import ConfigError, load_config
from gateway.durations import parse_duration

KEY = generate_key()
HASH = "scrypt$ln=10,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA$" + "A" * 43

MINIMAL = f"""
[session]
keys = ["{KEY}"]

[auth.local]
enabled = true
users = [{{ name = "alice", password_hash = "{HASH}" }}]

[[clouds]]
name = "prod"
region = "ap-southeast-1"
project_id = "0123456789abcdef"
access_key = "AK"
secret_key = "SK-secret-value"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env or {})
    return info.value.problems


def test_minimal_config_loads_with_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), {})
    assert config.server.listen == "127.0.0.1:8080"
    assert config.console.idle_timeout == 900
    assert config.clouds[0].secret_key.get_secret_value() == "SK-secret-value"
    assert config.server.origins() == ["http://127.0.0.1:8080", "http://localhost:8080"]


def test_env_overrides_nested_keys_and_list_items(tmp_path: Path) -> None:
    env = {
        "NOVNC_GATEWAY__SERVER__LISTEN": "0.0.0.0:9000",
        "NOVNC_GATEWAY__CLOUDS__0__SECRET_KEY": "from-env",
        "NOVNC_GATEWAY__UPSTREAM__ALLOWED_HOSTS": '["*.example.com", "h.example.org"]',
        "NOVNC_GATEWAY__CONSOLE__IDLE_TIMEOUT": "20m",
        "OTHER": "ignored",
    }
    config = load_config(write(tmp_path, MINIMAL), env)
    assert config.server.listen == "0.0.0.0:9000"
    assert config.clouds[0].secret_key.get_secret_value() == "from-env"
    assert config.upstream.allowed_hosts == ["*.example.com", "h.example.org"]
    assert config.console.idle_timeout == 1200


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "sk"
    secret.write_text("file-secret\n")
    text = MINIMAL.replace('secret_key = "SK-secret-value"', f'secret_key_file = "{secret}"')
    assert load_config(write(tmp_path, text), {}).clouds[0].secret_key.get_secret_value() == "file-secret"
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\n{generate_key()}\n")
    env = {"NOVNC_GATEWAY__SESSION__KEYS_FILE": str(keys)}
    assert len(load_config(write(tmp_path, text), env).session.keys) == 2


def test_unreadable_secret_file_names_the_key(tmp_path: Path) -> None:
    text = MINIMAL.replace('secret_key = "SK-secret-value"', 'secret_key_file = "/nonexistent/sk"')
    assert problems(tmp_path, text) == [
        "clouds[0].secret_key_file: cannot read the file it names: No such file or directory"
    ]


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + '\n[server]\nlisten_addr = "x"\n')
    assert found == ["server.listen_addr: unknown key; did you mean 'listen'?"]


def test_every_bad_key_is_reported_and_env_origin_named(tmp_path: Path) -> None:
    text = MINIMAL + '\n[console]\nidle_timeout = "soon"\n[limits]\nper_user = 0\n'
    found = problems(tmp_path, text, {"NOVNC_GATEWAY__SERVER__LISTEN": "nohostport"})
    assert "console.idle_timeout: not a duration (use seconds, or a number with ms/s/m/h/d)" in found
    assert any(p.startswith("limits.per_user: ") for p in found)
    assert any(p.startswith("server.listen (from NOVNC_GATEWAY__SERVER__LISTEN): ") for p in found)
    assert len(found) == 3


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    text = MINIMAL.replace('access_key = "AK"\n', "")
    found = problems(tmp_path, text)
    assert found == ["clouds[0]: access_key and secret_key must both be set"]
    assert "SK-secret-value" not in "\n".join(found)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"SESSION__IDLE_LIFETIME": "M4rk3r"},
            "session.idle_lifetime (from NOVNC_GATEWAY__SESSION__IDLE_LIFETIME)",
        ),
        (
            {"SERVER__LISTEN": "M4rk3r"},
            "server.listen (from NOVNC_GATEWAY__SERVER__LISTEN): listen address must",
        ),
        (
            {"SERVER__METRICS_LISTEN": "M4rk3r:99999"},
            "metrics_listen (from NOVNC_GATEWAY__SERVER__METRICS_LISTEN): ",
        ),
        ({"SERVER__PUBLIC_ORIGINS": '["http://a", "M4rk3r"]'}, "entry 1 is not an origin"),
        ({"SERVER__TRUSTED_PROXIES": '["M4rk3r"]'}, "entry 0 is not an IP address or network"),
        ({"SESSION__KEYS_FILE": "/M4rk3r"}, "session.keys_file: cannot read the file it names"),
        (
            {"AUTH__LOCAL__USERS__1__NAME": "alice", "AUTH__LOCAL__USERS__1__PASSWORD_HASH": HASH},
            "entries 0, 1",
        ),
        (
            {
                "CLOUDS__1": '{name = "prod", region = "r", project_id = "p", access_key = "a", '
                'secret_key = "b"}'
            },
            "entries 0, 1 have",
        ),
    ],
)
def test_errors_name_the_key_and_never_quote_the_value(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    """A secret pasted under the wrong key must not reach a log through the error about it."""
    found = problems(tmp_path, MINIMAL, {"NOVNC_GATEWAY__" + k: v for k, v in env.items()})
    assert any(expected in line for line in found), found
    assert not [line for line in found if "M4rk3r" in line or "alice" in line or "prod" in line], found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server\n", "not valid TOML"),
        (MINIMAL.replace(f'keys = ["{KEY}"]', "keys = []"), "session.keys: at least one key is required"),
        (MINIMAL.replace("enabled = true", "enabled = false"), "auth: no sign-in method is enabled"),
        (MINIMAL + '[server]\ntls_cert = "/c.pem"\n', "tls_cert and tls_key must be set together"),
        (MINIMAL + '[server]\npublic_origins = ["https://x/path"]\n', "entry 0 is not an origin"),
        (
            MINIMAL + '[server]\ntrusted_proxies = ["10.0.0.0/33"]\n',
            "entry 0 is not an IP address or network",
        ),
        (
            MINIMAL.replace('name = "prod"', 'name = "Prod Cloud"'),
            "clouds[0].name: String should match pattern",
        ),
        (MINIMAL + "[console]\nidle_timeout = 60\nidle_warning = 60\n", "idle_warning must be shorter"),
        (MINIMAL.replace(HASH, "plaintext"), "must be a scrypt hash"),
    ],
)
def test_malformed_configs_name_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    assert any(expected in p for p in problems(tmp_path, text)), problems(tmp_path, text)


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        ("scrypt$ln=10,r=8,p=1$AAAA$AAAAAAAAAAAAAAAAAAAAAA", "salt is shorter"),
        ("scrypt$ln=30,r=8,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "out of range"),
        ("scrypt$ln=10,r=8,p=1$AAAAAAAAAAA$not*base64", "digest is not valid base64"),
    ],
)
def test_a_malformed_password_hash_fails_at_start_up(tmp_path: Path, encoded: str, expected: str) -> None:
    """Not at the first sign-in, where verifying it raised and the user got a 500."""
    found = problems(tmp_path, MINIMAL.replace(HASH, encoded))
    assert any(p.startswith("auth.local.users[0].password_hash") and expected in p for p in found), found
    assert not any(encoded.split("$")[2] in p for p in found)  # a hash is a secret: never quoted back


def test_durations() -> None:
    assert parse_duration("1.5h") == 5400
    assert parse_duration(12) == 12.0
    assert parse_duration("250ms") == 0.25


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = run_cli("check-config", str(write(tmp_path, MINIMAL)))
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout
    bad = run_cli("check-config", str(write(tmp_path, MINIMAL + "\n[limits]\nglobal_max = -1\n")))
    assert bad.returncode == 2
    assert "limits.global_max" in bad.stderr
    assert "SK-secret-value" not in bad.stderr + bad.stdout


def _leaf_keys(model: type, prefix: str = "") -> list[str]:
    from pydantic import BaseModel

    keys: list[str] = []
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        annotation = field.annotation
        nested = [a for a in (annotation, *getattr(annotation, "__args__", ())) if isinstance(a, type)]
        sub = next((a for a in nested if issubclass(a, BaseModel)), None)
        if sub is not None and name not in ("policy", "iam", "users"):
            keys += _leaf_keys(sub, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_config_key_is_documented_in_its_section() -> None:
    """docs/configuration.md has a `## [section]` part per table, listing each of its keys."""
    import re

    from gateway.config import GatewayConfig

    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    parts = {
        m.group(1): body
        for m, body in zip(
            re.finditer(r"^## `\[{1,2}([a-z0-9_.]+)\]{1,2}`", docs, re.M),
            re.split(r"^## `\[.*$", docs, flags=re.M)[1:],
            strict=True,
        )
    }
    missing = []
    for key in _leaf_keys(GatewayConfig):
        if key == "policy":
            continue  # documented in policy.md
        section, _, leaf = key.rpartition(".")
        if section == "state.redis":
            section, leaf = "state", f"redis.{leaf}"
        body = parts.get(section, "")
        if not re.search(rf"`{re.escape(leaf)}`", body):
            missing.append(key)
    assert missing == []
    assert {"server", "session", "auth.local", "clouds", "upstream", "console", "limits", "state"} <= set(
        parts
    )


def test_proxy_jwt_needs_issuer_and_audience(tmp_path: Path) -> None:
    """A key alone would accept assertions minted for any other application sharing the proxy's key."""
    key_only = MINIMAL + '[auth.proxy_jwt]\nenabled = true\njwks_url = "https://sso.example/jwks"\n'
    result = run_cli("check-config", str(write(tmp_path, key_only)))
    assert result.returncode == 2
    assert "auth.proxy_jwt.issuer: required" in result.stderr
    assert "auth.proxy_jwt.audience: required" in result.stderr
    found = problems(tmp_path, key_only + 'issuer = "https://sso.example"\n')
    assert [p for p in found if "proxy_jwt" in p] == [
        "auth.proxy_jwt.audience: required when proxy_jwt is enabled (the assertion's aud for this gateway)"
    ]
    complete = key_only + 'issuer = "https://sso.example"\naudience = "novnc-gateway"\n'
    assert load_config(write(tmp_path, complete), {}).auth.proxy_jwt.audience == "novnc-gateway"


RECORDING_RULE = (
    '[[policy.rules]]\nname = "ops"\ngroups = ["ops"]\npermission = "control"\nrecord = "required"\n'
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            MINIMAL + '[recording]\ndefault = "optional"\n',
            "recording.hmac_keys: at least one key is required",
        ),
        (MINIMAL + RECORDING_RULE, "recording.hmac_keys: at least one key is required"),
        (
            MINIMAL + '[recording]\nhmac_keys = ["M4rk3r-not-a-key"]\n',
            "recording.hmac_keys: entry 0 is not a key",
        ),
        (
            MINIMAL + f'[recording]\nhmac_keys = ["{KEY}"]\nencryption_keys = ["{KEY}", "M4rk3r"]\n',
            "recording.encryption_keys: entry 1 is not a key",
        ),
        (MINIMAL + '[recording]\nstore = "s3"\n', 'recording: s3.bucket: required with store = "s3"'),
        (MINIMAL + '[recording]\ndefault = "always"\n', "recording.default: Input should be"),
        (MINIMAL + "[recording]\nsegment_seconds = 0\n", "recording.segment_seconds"),
        (MINIMAL + '[recording.s3]\nendpoint = "s3.example.com/M4rk3r"\n', "recording.s3.endpoint: must be"),
        (MINIMAL + "[recording]\nsegment_bytes = 33554432\nmax_pending = 33554432\n", "at least twice"),
        (MINIMAL + '[recording]\nrecord = "on"\n', "recording.record: unknown key"),
    ],
)
def test_recording_config_errors_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found
    assert not any("M4rk3r" in p for p in found), found  # keys are secrets: never quoted back


def test_recording_keys_from_a_file_one_per_line_and_policy_defaults(tmp_path: Path) -> None:
    from gateway.auth.cookie import generate_key
    from gateway.policy import Policy

    second = generate_key()
    keys = tmp_path / "hmac"
    keys.write_text(f"{KEY}\n\n{second}\n")
    text = MINIMAL + RECORDING_RULE + f'[recording]\nhmac_keys_file = "{keys}"\nrecord_input = true\n'
    config = load_config(write(tmp_path, text), {})
    assert [k.get_secret_value() for k in config.recording.hmac_keys] == [KEY, second]
    assert KEY not in repr(config.recording) and KEY not in str(config.model_dump())
    assert config.recording_possible
    policy = Policy(
        config.policy, record=config.recording.default, record_input=config.recording.record_input
    )
    assert [r.demands.record for r in policy._rules] == ["required"]
    assert [r.demands.record_input for r in policy._rules] == [True]
