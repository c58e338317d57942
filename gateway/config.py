"""One typed configuration, from a TOML file plus environment overrides.

Every key can be overridden by an environment variable named ``NOVNC_GATEWAY__SECTION__KEY`` (double
underscores between levels, list items by index: ``NOVNC_GATEWAY__CLOUDS__0__SECRET_KEY``). Secrets may also
come from files: any secret key ``x`` has a sibling ``x_file`` whose content (stripped) is used instead.
Validation errors name the key (and the environment variable, when that is where the value came from).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.auth.cookie import parse_key
from gateway.auth.passwords import check_hash
from gateway.clouds.identity import normalise_identity_url
from gateway.durations import Duration
from gateway.policy import PolicyConfig, RecordMode

ENV_PREFIX = "NOVNC_GATEWAY__"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def parse_host_port(value: str, *, what: str = "address") -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port``; the port is mandatory so a listen address is never ambiguous."""
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", value.strip())
    if not match:
        raise ValueError(f"{what} must look like host:port or [v6addr]:port")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"{what} has a port out of range (0-65535)")
    return host, port


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ServerSection(Section):
    listen: str = "127.0.0.1:8080"
    public_origins: list[str] = Field(default_factory=list)
    trusted_proxies: list[str] = Field(default_factory=list)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    metrics_listen: str | None = None
    static_dir: Path = PROJECT_ROOT / "static"
    novnc_dir: Path = PROJECT_ROOT / "node_modules" / "@novnc" / "novnc"
    log_format: Literal["plain", "json"] = "plain"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    drain_timeout: Duration = 30.0
    max_header_size: int = Field(default=8190, ge=1024, le=65536)
    # Idle keep-alive connections, and connections whose request head is still incomplete (slowloris),
    # are closed after this long; aiohttp's own default is an hour.
    keepalive_timeout: Duration = Field(default=30.0, gt=0)

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_host_port(value, what="listen address")
        return value

    @field_validator("public_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        for i, origin in enumerate(values):
            if not re.fullmatch(r"https?://[^/\s?#]+", origin):
                raise ValueError(f"entry {i} is not an origin (scheme://host[:port], no path)")
        return [o.lower() for o in values]

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for i, network in enumerate(values):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:  # its message quotes the value
                raise ValueError(f"entry {i} is not an IP address or network (like 10.0.0.0/8)") from None
        return values

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSection:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        return self

    def origins(self) -> list[str]:
        """The browser origins we accept; derived from `listen` when not configured (loopback demo)."""
        if self.public_origins:
            return self.public_origins
        host, port = parse_host_port(self.listen)
        scheme = "https" if self.tls_cert else "http"
        hosts = {host, "localhost", "127.0.0.1"} if host in ("127.0.0.1", "localhost", "0.0.0.0") else {host}  # noqa: S104
        hosts.discard("0.0.0.0")  # noqa: S104
        return sorted(f"{scheme}://{h}:{port}" for h in hosts)


class SessionSection(Section):
    keys: list[SecretStr] = Field(default_factory=list)
    idle_lifetime: Duration = 8 * 3600.0
    absolute_lifetime: Duration = 24 * 3600.0
    secure_cookie: bool = True

    @model_validator(mode="after")
    def _lifetimes(self) -> SessionSection:
        if self.idle_lifetime > self.absolute_lifetime:
            raise ValueError("idle_lifetime must not exceed absolute_lifetime")
        return self


class LocalUser(Section):
    name: str = Field(min_length=1, max_length=128)
    password_hash: SecretStr
    groups: list[str] = Field(default_factory=list)

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("scrypt$"):
            raise ValueError("must be a scrypt hash made by `novnc-gateway hash-password`")
        check_hash(value.get_secret_value())  # a typo fails here, not as a 500 at the first sign-in
        return value


class LocalAuth(Section):
    enabled: bool = False
    users: list[LocalUser] = Field(default_factory=list)
    throttle_per_user: int = Field(default=5, ge=1)
    throttle_per_address: int = Field(default=20, ge=1)
    throttle_window: Duration = 300.0

    @model_validator(mode="after")
    def _unique(self) -> LocalAuth:
        names = [u.name for u in self.users]
        dupes = [i for i, n in enumerate(names) if names.count(n) > 1]
        if dupes:
            raise ValueError(f"users: entries {', '.join(map(str, dupes))} have the same name")
        return self


class OIDCAuth(Section):
    enabled: bool = False
    display_name: str = "Single sign-on"
    issuer: str = ""
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    redirect_uri: str = ""
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    username_claim: str = "preferred_username"
    email_claim: str = "email"
    groups_claim: str = "groups"
    clock_skew: Duration = 60.0
    ca_file: Path | None = None
    logout_redirect: str = ""

    @model_validator(mode="after")
    def _required(self) -> OIDCAuth:
        if self.enabled:
            missing = [k for k in ("issuer", "client_id") if not getattr(self, k)]
            if missing:
                raise ValueError(f"oidc is enabled but {', '.join(missing)} is empty")
        return self


class ProxyJWTAuth(Section):
    enabled: bool = False
    header: str = "X-Forwarded-Access-Token"
    jwks_url: str = ""
    public_key_file: Path | None = None
    # Required when enabled: a key alone accepts assertions the same proxy key signed for other applications.
    issuer: str = Field(default="", validate_default=True)
    audience: str = Field(default="", validate_default=True)
    algorithms: list[Literal["ES256", "RS256", "ES384", "RS384", "PS256", "EdDSA"]] = Field(
        default_factory=lambda: ["ES256", "RS256"]
    )
    username_claim: str = "email"
    email_claim: str = "email"
    groups_claim: str = "groups"
    clock_skew: Duration = 60.0

    @field_validator("issuer", "audience")
    @classmethod
    def _required_when_enabled(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("enabled") and not value.strip():
            claim = "iss" if info.field_name == "issuer" else "aud for this gateway"
            raise ValueError(f"required when proxy_jwt is enabled (the assertion's {claim})")
        return value

    @model_validator(mode="after")
    def _key_source(self) -> ProxyJWTAuth:
        if self.enabled and not (self.jwks_url or self.public_key_file):
            raise ValueError("proxy_jwt is enabled but neither jwks_url nor public_key_file is set")
        return self


class ProxyHeaderAuth(Section):
    enabled: bool = False
    trusted_networks: list[str] = Field(default_factory=list)
    user_header: str = "X-Auth-Request-User"
    email_header: str = "X-Auth-Request-Email"
    groups_header: str = "X-Auth-Request-Groups"
    groups_separator: str = ","

    @field_validator("trusted_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        return ServerSection._networks(values)

    @model_validator(mode="after")
    def _needs_networks(self) -> ProxyHeaderAuth:
        if self.enabled and not self.trusted_networks:
            raise ValueError("proxy_headers is enabled but trusted_networks is empty")
        return self


class AuthSection(Section):
    local: LocalAuth = Field(default_factory=LocalAuth)
    oidc: OIDCAuth = Field(default_factory=OIDCAuth)
    proxy_jwt: ProxyJWTAuth = Field(default_factory=ProxyJWTAuth)
    proxy_headers: ProxyHeaderAuth = Field(default_factory=ProxyHeaderAuth)


def _identity_url(value: str) -> str:
    """The identity service's base URL: a trailing `/v3` (how Keystone URLs are usually written) is dropped,
    since the gateway appends `/v3/auth/tokens` itself; anything but an absolute http(s) URL is refused."""
    url = normalise_identity_url(value)
    if url and not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", url):
        raise ValueError("must be an absolute http(s) URL without query or fragment")
    return url


IdentityURL = Annotated[str, AfterValidator(_identity_url)]


class IAMPassword(Section):
    domain: str
    user: str
    password: SecretStr
    endpoint: IdentityURL = ""


class KeystoneSection(Section):
    """Keystone v3 sign-in for `provider = "openstack"`: a user's password, or an application credential."""

    url: IdentityURL = Field(min_length=1)
    user: str = ""
    user_domain: str = "Default"
    password: SecretStr = SecretStr("")
    application_credential_id: str = ""
    application_credential_secret: SecretStr = SecretStr("")

    @model_validator(mode="after")
    def _method(self) -> KeystoneSection:
        password = bool(self.user or self.password.get_secret_value())
        app = bool(self.application_credential_id or self.application_credential_secret.get_secret_value())
        if password and app:
            raise ValueError("set either user/password or application_credential_id/secret, not both")
        if not password and not app:
            raise ValueError(
                "credentials missing: set user and password, or application_credential_id and secret"
            )
        if password and not (self.user and self.password.get_secret_value()):
            raise ValueError("user and password must both be set")
        if app and not (
            self.application_credential_id and self.application_credential_secret.get_secret_value()
        ):
            raise ValueError("application_credential_id and application_credential_secret must both be set")
        return self


class CloudSection(Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    provider: Literal["huawei", "openstack"] = "huawei"
    region: str = Field(min_length=1)
    project_id: str = Field(pattern=r"^[0-9a-zA-Z_-]{1,64}$")
    endpoint: str = ""
    access_key: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")
    security_token: SecretStr = SecretStr("")
    iam: IAMPassword | None = None
    keystone: KeystoneSection | None = None
    interface: Literal["public", "internal", "admin"] = "public"
    ca_file: Path | None = None
    verify_tls: bool = True
    connect_timeout: Duration = 5.0
    read_timeout: Duration = 15.0
    retries: int = Field(default=3, ge=0, le=10)

    @model_validator(mode="after")
    def _credentials(self) -> CloudSection:
        aksk = bool(self.access_key.get_secret_value() or self.secret_key.get_secret_value())
        if self.provider == "huawei" and self.keystone:
            raise ValueError('keystone is for provider = "openstack"; Huawei IAM passwords go in iam')
        if self.provider == "openstack":
            if self.iam:
                raise ValueError(
                    'iam is for provider = "huawei"; an IAM or Keystone account goes in keystone'
                )
            if aksk and self.keystone:
                raise ValueError("set either access_key/secret_key or keystone, not both")
            if not aksk and not self.keystone:
                raise ValueError("credentials missing: set keystone (or access_key and secret_key)")
            if aksk and not self.endpoint:
                raise ValueError(
                    "endpoint: required with access_key/secret_key (there is no service catalog)"
                )
        elif aksk and self.iam:
            raise ValueError("set either access_key/secret_key or iam, not both")
        elif not aksk and not self.iam:
            raise ValueError("credentials missing: set access_key and secret_key (or iam)")
        if aksk and not (self.access_key.get_secret_value() and self.secret_key.get_secret_value()):
            raise ValueError("access_key and secret_key must both be set")
        return self


class UpstreamSection(Section):
    allowed_hosts: list[str] = Field(default_factory=list)
    ca_file: Path | None = None
    verify_tls: bool = True
    connect_timeout: Duration = 10.0


class ConsoleSection(Section):
    idle_timeout: Duration = 900.0
    idle_warning: Duration = 60.0
    max_duration: Duration = 8 * 3600.0
    keepalive: Duration = 20.0
    max_message_size: int = Field(default=1024 * 1024, ge=65536, le=64 * 1024 * 1024)
    # A client asking for exclusive access makes QEMU and Xvnc drop every other client: off, the
    # gateway tells the server "shared" for every console; on, control sessions may ask (never view).
    allow_exclusive: bool = False
    # Upstream frames written to the browser as they arrived, through aiohttp's private parts (checked
    # releases only); false forces the public receive/send path: an escape hatch for an aiohttp upgrade.
    frame_passthrough: bool = True
    # Shadowing: how long someone asking to watch a console waits for its owner's answer.
    join_approval_timeout: Duration = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _warning(self) -> ConsoleSection:
        if self.idle_timeout and self.idle_warning >= self.idle_timeout:
            raise ValueError("idle_warning must be shorter than idle_timeout")
        return self


class LimitsSection(Section):
    per_user: int = Field(default=5, ge=1)
    global_max: int = Field(default=1000, ge=1)
    requests_per_minute: float = Field(default=20.0, gt=0)
    burst: int = Field(default=10, ge=1)


class AuditSection(Section):
    target: str = "-"


class RedisSection(Section):
    url: str = "redis://127.0.0.1:6379/0"
    password: SecretStr = SecretStr("")
    ca_file: Path | None = None
    sentinels: list[str] = Field(default_factory=list)
    sentinel_service: str = "mymaster"
    key_prefix: str = "novnc-gw:"
    fail_open: bool = False
    # How long a console stays counted after its replica last refreshed it: the bound on ghost
    # consoles left by a replica that died without releasing them.
    console_ttl: Duration = Field(default=30.0, ge=3.0)


class StateSection(Section):
    backend: Literal["memory", "redis"] = "memory"
    redis: RedisSection = Field(default_factory=RedisSection)


class RecordingS3(Section):
    """An S3-compatible bucket for recordings (`recording.store = "s3"`)."""

    endpoint: str = ""  # empty: AWS's own endpoint for `region`
    bucket: str = ""
    prefix: str = "recordings/"
    region: str = "us-east-1"
    access_key: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^/?#\s]+/?", value):
            raise ValueError("must be an http(s) URL without path, query or fragment (https://host[:port])")
        return value.rstrip("/")


def _recording_keys(values: list[SecretStr]) -> list[SecretStr]:
    """Recording keys have the session keys' form (`novnc-gateway keygen`); errors name the entry only."""
    for i, value in enumerate(values):
        try:
            parse_key(value.get_secret_value())
        except ValueError:
            raise ValueError(
                f"entry {i} is not a key made by `novnc-gateway keygen` (32 bytes, base64url)"
            ) from None
    return values


RecordingKeys = Annotated[list[SecretStr], AfterValidator(_recording_keys)]


class RecordingSection(Section):
    """Session recording (docs/recording.md): the global default, where recordings go, how they are cut,
    signed and encrypted, and how long they are kept. Policy rules may override `default` and
    `record_input` per console (docs/policy.md)."""

    default: RecordMode = "off"
    # Keystrokes can be passwords: recording input (and the typed-text index) is a switch of its own.
    record_input: bool = False
    store: Literal["local", "s3"] = "local"
    directory: Path = Path("/var/lib/novnc-gateway/recordings")
    s3: RecordingS3 = Field(default_factory=RecordingS3)
    segment_seconds: Duration = Field(default=30.0, gt=0)
    segment_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    retention: Duration = 0.0  # 0: keep forever
    hmac_keys: RecordingKeys = Field(default_factory=list)  # the first signs; all verify
    encryption_keys: RecordingKeys = Field(default_factory=list)  # empty: not encrypted; the first encrypts
    # Bytes a console may have waiting for the store before recording counts as failed.
    max_pending: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)

    @model_validator(mode="after")
    def _store(self) -> RecordingSection:
        if self.store == "s3" and not self.s3.bucket:
            raise ValueError('s3.bucket: required with store = "s3"')
        if self.max_pending < 2 * self.segment_bytes:
            raise ValueError("max_pending must be at least twice segment_bytes")
        return self


class GatewayConfig(Section):
    server: ServerSection = Field(default_factory=ServerSection)
    session: SessionSection = Field(default_factory=SessionSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    clouds: list[CloudSection] = Field(default_factory=list)
    upstream: UpstreamSection = Field(default_factory=UpstreamSection)
    console: ConsoleSection = Field(default_factory=ConsoleSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    audit: AuditSection = Field(default_factory=AuditSection)
    state: StateSection = Field(default_factory=StateSection)
    recording: RecordingSection = Field(default_factory=RecordingSection)

    @model_validator(mode="after")
    def _whole(self) -> GatewayConfig:
        if not self.session.keys:
            raise ValueError(
                "session.keys: at least one key is required (make one with `novnc-gateway keygen`)"
            )
        names = [c.name for c in self.clouds]
        dupes = [i for i, n in enumerate(names) if names.count(n) > 1]
        if dupes:
            raise ValueError(f"clouds: entries {', '.join(map(str, dupes))} have the same name")
        auth = self.auth
        if not (
            auth.local.enabled or auth.oidc.enabled or auth.proxy_jwt.enabled or auth.proxy_headers.enabled
        ):
            raise ValueError("auth: no sign-in method is enabled")
        if self.recording_possible and not self.recording.hmac_keys:
            raise ValueError(
                "recording.hmac_keys: at least one key is required when recording can be on (recording."
                "default or a policy rule's record); make one with `novnc-gateway keygen`"
            )
        return self

    @property
    def recording_possible(self) -> bool:
        """Some console may be recorded: the global default, or a rule, says so."""
        if self.recording.default != "off":
            return True
        return any(rule.record not in (None, "off") for rule in self.policy.rules)


class ConfigError(Exception):
    """Every problem found, one per line, each naming its key and what was expected.

    No line quotes a value from the configuration, so a secret pasted under the wrong key never reaches a
    log. The one exception is the policy section: its rule names and match entries (users, groups, tags)
    are access vocabulary that audit lines and `explain` output carry anyway.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 (byte {exc.start})"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: not valid TOML: nested too deeply"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None


def _env_value(raw: str) -> object:
    """Lists and tables are written as TOML inline values; everything else stays a string for pydantic."""
    text = raw.strip()
    if text.startswith(("[", "{")):
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except (tomllib.TOMLDecodeError, RecursionError):
            return raw
    return raw


def _apply_env(data: dict[str, Any], env: Mapping[str, str], origins: dict[tuple[str, ...], str]) -> None:
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if not all(path):
            raise ConfigError([f"{name}: empty path segment in environment variable name"])
        node: Any = data
        for i, part in enumerate(path[:-1]):
            nxt = path[i + 1]
            if not isinstance(node, dict | list):
                raise ConfigError([f"{name}: {_dotted(path[:i])} is not a table or a list"])
            if isinstance(node, list):
                index = int(part) if _is_index(part) else -1
                if not 0 <= index <= len(node):
                    raise ConfigError([f"{name}: list index {part!r} out of range"])
                if index == len(node):
                    node.append({})
                node = node[index]
            else:
                if part not in node or not isinstance(node[part], dict | list):
                    node[part] = [] if _is_index(nxt) else {}
                node = node[part]
        last = path[-1]
        if not isinstance(node, dict | list):
            raise ConfigError([f"{name}: {_dotted(path[:-1])} is not a table or a list"])
        if isinstance(node, list):
            if not _is_index(last) or int(last) > len(node):
                raise ConfigError([f"{name}: list index {last!r} out of range"])
            if int(last) == len(node):
                node.append(_env_value(raw))
            else:
                node[int(last)] = _env_value(raw)
        else:
            node[last] = _env_value(raw)
        origins[path] = name


def _is_index(part: str) -> bool:
    """A short run of ASCII digits: str.isdigit() also accepts "²", which int() rejects."""
    return len(part) <= 6 and part.isascii() and part.isdigit()


def _read_secret_files(node: Any, path: tuple[str, ...], problems: list[str]) -> None:
    """Replace ``x_file = "/path"`` with ``x = <content>`` wherever it appears."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            _read_secret_files(item, (*path, str(i)), problems)
        return
    if not isinstance(node, dict):
        return
    for key in list(node):
        value = node[key]
        if key.endswith("_file") and key not in _FILE_KEYS and isinstance(value, str):
            base = key[: -len("_file")]
            try:
                content = Path(value).read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append(f"{_dotted((*path, key))}: cannot read the file it names: {exc.strerror}")
                continue
            except ValueError:  # a NUL in the path, or a file that is not UTF-8 text
                problems.append(f"{_dotted((*path, key))}: cannot read the file it names (path or UTF-8)")
                continue
            del node[key]
            if base == "keys" or base.endswith("_keys"):  # one key per line
                node[base] = [line.strip() for line in content.splitlines() if line.strip()]
            else:
                node[base] = content
        else:
            _read_secret_files(value, (*path, key), problems)


# Keys whose names end in _file but are paths in their own right, not "read the secret from here".
_FILE_KEYS = {"ca_file", "public_key_file"}


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = [a for a in getattr(annotation, "__args__", ()) if isinstance(a, type)]
        candidates = [annotation, *args]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _describe(error: Mapping[str, Any], origins: dict[tuple[str, ...], str]) -> str:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = _dotted(loc)
    env = origins.get(tuple(str(p).lower() for p in loc))
    where = f"{key} (from {env})" if env else key
    if error["type"] == "extra_forbidden":
        near = difflib.get_close_matches(str(loc[-1]), _known_keys(GatewayConfig, loc), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return f"{where}: unknown key{hint}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"


def load_config(path: Path | str | None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, merge and validate; raises ConfigError listing every problem."""
    data: dict[str, Any] = _load_toml(Path(path)) if path else {}
    origins: dict[tuple[str, ...], str] = {}
    _apply_env(data, os.environ if env is None else env, origins)
    problems: list[str] = []
    _read_secret_files(data, (), problems)
    if problems:
        raise ConfigError(problems)
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(err, origins) for err in exc.errors(include_input=False)]) from None
