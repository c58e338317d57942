"""The files under deploy/ are checked by real validators, and for the properties a deployment relies on.

- Kubernetes manifests: the official OpenAPI-derived JSON schemas shipped by `kubernetes-validate` (strict:
  unknown fields are errors), offline.
- compose.yaml: the Compose Specification schema vendored by `check-jsonschema`, with `jsonschema`.
- nginx examples: `nginx -t` on the file as shipped, wrapped in a throwaway main config.
- systemd unit: `systemd-analyze verify`, when the tool is there.
- Dockerfile: no engine here, so its instructions are parsed and checked; its HEALTHCHECK command runs.
- Every gateway config in deploy/ loads with `load_config`, given its secrets the documented way.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway.config import GatewayConfig, load_config
from gateway.sim.certs import make_self_signed
from tests.support import nginx
from tests.support.gateway import start_gateway

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
K8S_VERSION = "1.30"  # the oldest Kubernetes these manifests are meant for

SECRET_ENV = re.compile(r"^NOVNC_GATEWAY__[A-Z0-9_]+_FILE$")


# -- helpers ---------------------------------------------------------------------------------------------


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def k8s(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in k8s_documents() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def secret_files(tmp_path: Path, names: list[str]) -> dict[str, Path]:
    """Stand-in secret files: a real session key for session_keys, placeholder text for the rest."""
    from gateway.auth.cookie import generate_key

    out = {}
    for name in names:
        path = tmp_path / "secrets" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generate_key() + "\n" if name == "session_keys" else f"test-{name}\n")
        out[name] = path
    return out


def load_with_file_env(
    config: Path, env_to_path: dict[str, str], tmp_path: Path
) -> tuple[GatewayConfig, dict[str, str]]:
    """Load a config with each NOVNC_GATEWAY__..._FILE variable pointing at a stand-in of its file."""
    names = sorted({Path(p).name for p in env_to_path.values()})
    made = secret_files(tmp_path, names)
    env = {var: str(made[Path(p).name]) for var, p in env_to_path.items()}
    return load_config(config, env=env), env


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def unit_entries(text: str) -> dict[str, list[str]]:
    """systemd allows repeated keys (LoadCredential=, Environment=): keep every value, per Section.Key."""
    entries: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return entries


def seconds(value: str | int | float) -> float:
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", value.strip())
    assert match, value
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


# -- Kubernetes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "doc"), k8s_documents(), ids=lambda v: v if isinstance(v, str) else "")
def test_kubernetes_document_matches_the_official_schema(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "novnc-gateway"


def test_kubernetes_validator_rejects_what_kubernetes_would() -> None:
    deployment = copy.deepcopy(k8s("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}  # misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    deployment = copy.deepcopy(k8s("Deployment"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kubernetes_deployment_probes_security_and_grace(tmp_path: Path) -> None:
    deployment = k8s("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"

    # The ConfigMap's config, with the Secret's files where the Deployment mounts them.
    config_text = k8s("ConfigMap")["data"]["gateway.toml"]
    (tmp_path / "gateway.toml").write_text(config_text)
    env_files = {e["name"]: e["value"] for e in container["env"] if SECRET_ENV.match(e["name"])}
    config, _ = load_with_file_env(tmp_path / "gateway.toml", env_files, tmp_path)
    # Both probe ports are served: the main listener and metrics_listen.
    assert config.server.listen.endswith(f":{ports['http']}")
    assert config.server.metrics_listen and config.server.metrics_listen.endswith(f":{ports['metrics']}")
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    assert config.state.backend == "redis", "replicas must share state"
    assert config.session.secure_cookie

    # Non-root, read-only root, no capabilities, no escalation.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts, "a writable /tmp on a read-only root"
    assert "/etc/novnc-gateway" in mounts

    # The drain fits in the grace period, after the preStop pause.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    pause = float(pre_stop[-1]) if pre_stop[0].endswith("sleep") else 0.0
    assert pod["terminationGracePeriodSeconds"] > pause + config.server.drain_timeout + 10

    # Every secret file named by the env is a key of the mounted Secret.
    secret = k8s("Secret")
    secret_mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "secrets")
    volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    for path in env_files.values():
        assert path.startswith(secret_mount + "/")
        assert Path(path).name in secret["stringData"]


def test_kubernetes_secret_example_holds_placeholders_only() -> None:
    secret = k8s("Secret")
    assert "data" not in secret
    for key, value in secret["stringData"].items():
        assert value.startswith("REPLACE_ME"), key


def test_kubernetes_routing_needs_no_affinity() -> None:
    service = k8s("Service")
    assert service["spec"].get("sessionAffinity", "None") == "None"
    ingress = k8s("Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert not [a for a in annotations if "affinity" in a or "session-cookie" in a]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "64k"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_kubernetes_selectors_hpa_pdb_and_network_policy() -> None:
    deployment = k8s("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    assert selects(k8s("Service")["spec"]["selector"])
    assert selects(k8s("PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    hpa = k8s("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert k8s("PodDisruptionBudget")["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]

    policy = k8s("NetworkPolicy")
    assert selects(policy["spec"]["podSelector"]["matchLabels"])
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    container_ports = {
        p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert ingress_ports == container_ports
    for rule in policy["spec"]["ingress"]:
        assert rule["from"] and all("namespaceSelector" in peer for peer in rule["from"]), "no open ingress"
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {6379, 53, 443, 8002, 6080} <= egress_ports


# -- compose ---------------------------------------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    vendor = files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def compose_errors(doc: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_matches_the_compose_specification() -> None:
    assert compose_errors(compose()) == []
    broken = compose()
    broken["services"]["nginx"]["ports"] = "443:443"  # must be a list
    broken["services"]["redis"]["restart_policy"] = "always"  # no such key
    assert len(compose_errors(broken)) >= 2


def test_compose_gateways_are_locked_down_and_share_state(tmp_path: Path) -> None:
    doc = compose()
    services = doc["services"]
    gateways = {n: s for n, s in services.items() if n.startswith("gateway-")}
    assert len(gateways) >= 2
    nginx_ip = services["nginx"]["networks"]["backend"]["ipv4_address"]
    for name, svc in gateways.items():
        assert svc["read_only"] is True, name
        assert svc["user"] == "10001:10001"
        assert "/tmp" in svc["tmpfs"]
        assert svc["cap_drop"] == ["ALL"]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        for secret in svc["secrets"]:
            assert secret in doc["secrets"], secret
        (config_ref,) = svc["configs"]
        assert config_ref["target"] == "/etc/novnc-gateway/gateway.toml"
        config_file = DEPLOY / doc["configs"][config_ref["source"]]["file"]
        env_files = {k: v for k, v in svc["environment"].items() if SECRET_ENV.match(k)}
        assert {Path(p).name for p in env_files.values()} <= set(svc["secrets"])
        config, _ = load_with_file_env(config_file, env_files, tmp_path / name)
        assert config.state.backend == "redis"
        assert config.state.redis.url.startswith("redis://redis:")
        assert seconds(svc["stop_grace_period"]) > config.server.drain_timeout
        # Only nginx may forward addresses and identities.
        assert config.server.trusted_proxies == [f"{nginx_ip}/32"]
        assert config.auth.proxy_headers.enabled
        assert config.auth.proxy_headers.trusted_networks == [f"{nginx_ip}/32"]
    subnet = doc["networks"]["backend"]["ipam"]["config"][0]["subnet"]
    import ipaddress

    assert ipaddress.ip_address(nginx_ip) in ipaddress.ip_network(subnet)
    # nginx mounts the SSO example that test_sso_example_* exercises below.
    mounts = [v.split(":")[0] for v in services["nginx"]["volumes"]]
    assert "./nginx/novnc-gateway-sso.conf" in mounts
    assert "--set-xauthrequest=true" in services["oauth2-proxy"]["command"]
    assert "--upstream=static://202" in services["oauth2-proxy"]["command"]


# -- nginx -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lb_certs(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_self_signed(tmp_path_factory.mktemp("lb-certs"), hostnames=("localhost",), ips=("127.0.0.1",))


@pytest.mark.parametrize(
    ("example", "upstreams"),
    [
        (nginx.EXAMPLE, {"novnc_gateway": ["127.0.0.1:18081", "127.0.0.1:18082"]}),
        (
            nginx.SSO_EXAMPLE,
            {"novnc_gateway": ["127.0.0.1:18081", "127.0.0.1:18082"], "oauth2_proxy": ["127.0.0.1:14180"]},
        ),
    ],
    ids=["tls-lb", "sso"],
)
def test_nginx_example_passes_nginx_t(
    example: Path, upstreams: dict[str, list[str]], tmp_path: Path, lb_certs
) -> None:  # type: ignore[no-untyped-def]
    text = example.read_text()
    # Ports are placeholders for `nginx -t` (it binds nothing).
    site = nginx.adapt(
        text, cert=lb_certs.server_cert, key=lb_certs.server_key, https_port=18443, http_port=18080,
        upstreams=upstreams,
    )  # fmt: skip
    conf = nginx.prepare(tmp_path, site)
    result = nginx.check(tmp_path, conf)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr

    # nginx -t must also be able to fail: a broken copy is refused.
    broken = nginx.prepare(
        tmp_path / "broken", site.replace("proxy_http_version 1.1;", "proxy_http_version;")
    )
    assert nginx.check(tmp_path / "broken", broken).returncode != 0

    # What WebSockets and the gateway need, in the file as shipped.
    assert re.search(r"^\s*proxy_http_version 1\.1;", text, re.M)
    assert re.search(r"^\s*proxy_set_header Upgrade\s+\$http_upgrade;", text, re.M)
    assert re.search(r"^\s*proxy_set_header Connection\s+\$novnc_connection;", text, re.M)
    assert re.search(r"^\s*proxy_set_header X-Forwarded-For\s+\$proxy_add_x_forwarded_for;", text, re.M)
    assert re.search(r"^\s*proxy_set_header X-Forwarded-Proto\s+\$scheme;", text, re.M)
    assert re.search(r"^\s*client_max_body_size 64k;", text, re.M)
    ws = text[text.index("location /ws/") :]
    ws = ws[: ws.index("}")]
    assert seconds(re.search(r"proxy_read_timeout (\S+);", ws).group(1)) >= 3600  # type: ignore[union-attr]
    for sticky in ("ip_hash", "sticky", "hash $"):
        assert not re.search(rf"^\s*{re.escape(sticky)}", text, re.M), sticky


# -- the SSO example for real: nginx + a stand-in oauth2-proxy + a gateway in proxy_headers mode ----------


@pytest.fixture
async def sso_front(tmp_path: Path, lb_certs):  # type: ignore[no-untyped-def]
    """nginx (SSO example) -> gateway in plain-header mode; a stand-in oauth2-proxy answers auth_request."""
    import ssl

    import aiohttp
    from aiohttp import web

    from gateway.sim.demo import DemoCloud
    from tests.support.processes import free_port

    seen_by_auth: list[dict[str, str]] = []

    async def auth(request: web.Request) -> web.Response:
        # oauth2-proxy's contract with --set-xauthrequest: 202 + identity headers, or 401.
        seen_by_auth.append(dict(request.headers))
        if request.cookies.get("_oauth2_proxy") != "valid":
            return web.Response(status=401)
        return web.Response(
            status=202,
            headers={"X-Auth-Request-Email": "alice@example.com", "X-Auth-Request-Groups": "ops,support"},
        )

    async def start(request: web.Request) -> web.Response:
        return web.Response(text=f"sign-in page rd={request.query.get('rd')}")

    proxy_app = web.Application()
    proxy_app.router.add_get("/oauth2/auth", auth)
    proxy_app.router.add_get("/oauth2/start", start)
    proxy_runner = web.AppRunner(proxy_app, access_log=None)
    await proxy_runner.setup()
    proxy_site = web.TCPSite(proxy_runner, "127.0.0.1", 0)
    await proxy_site.start()
    proxy_port = proxy_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    cloud = DemoCloud(tmp_path / "cloud")
    await cloud.start()
    https_port, http_port = free_port(), free_port()
    front = f"https://127.0.0.1:{https_port}"

    def tweak(data: dict[str, Any]) -> None:
        data["server"].update(public_origins=[front], trusted_proxies=["127.0.0.1/32"])
        data["session"]["secure_cookie"] = True
        data["auth"] = {
            "proxy_headers": {"enabled": True, "trusted_networks": ["127.0.0.1/32"]},
            "local": data["auth"]["local"],
        }
        data["policy"]["rules"].append({"name": "ops", "groups": ["ops"], "permission": "control"})

    gateway = await start_gateway(cloud, tmp_path, tweak)
    site = nginx.adapt(
        nginx.SSO_EXAMPLE.read_text(), cert=lb_certs.server_cert, key=lb_certs.server_key,
        https_port=https_port, http_port=http_port,
        upstreams={
            "novnc_gateway": [gateway.url.removeprefix("http://")],
            "oauth2_proxy": [f"127.0.0.1:{proxy_port}"],
        },
    )  # fmt: skip
    prefix = tmp_path / "nginx"
    lb = nginx.Nginx(prefix, nginx.prepare(prefix, site), ports=[https_port])
    tls = ssl.create_default_context(cafile=str(lb_certs.ca_cert))
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=tls), cookie_jar=aiohttp.CookieJar(unsafe=True)
    )
    try:
        await lb.start()
        yield {"http": http, "front": front, "gateway": gateway, "cloud": cloud, "auth_seen": seen_by_auth}
    finally:
        await http.close()
        lb.stop()
        await gateway.stop()
        await cloud.stop()
        await proxy_runner.cleanup()


async def test_sso_example_passes_only_the_proxy_identity(sso_front: dict[str, Any]) -> None:
    http, front = sso_front["http"], sso_front["front"]
    spoof = {"X-Auth-Request-User": "admin", "X-Auth-Request-Groups": "platform", "Origin": front}

    # Not signed in at oauth2-proxy: the API gets 401, a page goes to the sign-in start.
    async with http.get(front + "/api/me", headers=spoof, allow_redirects=False) as response:
        assert response.status == 302  # error_page 401 -> @sign_in
        assert response.headers["Location"] == front + "/oauth2/start?rd=/api/me"
    async with http.get(front + "/ws/console/demo/x", allow_redirects=False) as response:
        assert response.status == 401, "a WebSocket is answered 401, not redirected"

    # Signed in: the gateway sees oauth2-proxy's identity, never the client's spoofed headers.
    http.cookie_jar.update_cookies({"_oauth2_proxy": "valid"})
    async with http.get(front + "/api/me", headers=spoof) as response:
        assert response.status == 200
        me = await response.json()
    assert me["user"] == "alice@example.com"
    assert sorted(me["groups"]) == ["ops", "support"]
    assert sso_front["auth_seen"], "nginx asked the SSO proxy"

    # And the console WebSocket goes through with that identity.
    server_id = next(s.id for s in sso_front["cloud"].servers if s.name == "web-01")
    ws = await http.ws_connect(front.replace("https", "wss") + f"/ws/console/demo/{server_id}", origin=front)
    hello = await ws.receive_json(timeout=10)
    assert hello["type"] == "hello" and hello["permission"] == "control"
    await ws.close()
    opened = await sso_front["gateway"].wait_for_audit("console_opened")
    assert opened["user"] == "alice@example.com"


# -- Dockerfile ------------------------------------------------------------------------------------------


def dockerfile() -> list[list[tuple[str, str]]]:
    return stages(dockerfile_instructions((DEPLOY / "Dockerfile").read_text()))


def ignored_by_dockerignore(path: str) -> bool:
    """deploy/Dockerfile.dockerignore: `*` then `!allowed` entries (the only shape it uses)."""
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    return not any(path == a or path.startswith(a + "/") for a in allowed)


def test_dockerfile_stages_user_and_sources() -> None:
    build_stages = dockerfile()
    assert len(build_stages) == 3
    names = [re.search(r"\bAS (\S+)", s[0][1], re.I) for s in build_stages]
    node, python, final = build_stages
    assert names[0] and names[0].group(1) == "novnc"
    assert names[1] and names[1].group(1) == "build"
    assert names[2] is None, "the last stage is the image"

    def run(stage: list[tuple[str, str]]) -> str:
        return " && ".join(args for ins, args in stage if ins == "RUN")

    def copies(stage: list[tuple[str, str]]) -> list[list[str]]:
        return [args.split() for ins, args in stage if ins == "COPY"]

    # node stage: npm ci from the lock file, only noVNC leaves it.
    assert ["package.json", "package-lock.json", "./"] in copies(node)
    assert "npm ci" in run(node) and "--omit=dev" in run(node)
    assert "node_modules/@novnc/novnc" in run(node)
    # python stage: installs the package with the constraints.
    assert re.search(r"pip install -c constraints\.txt \.", run(python))
    # final stage: no build tools copied in, only the venv and assets.
    final_copies = copies(final)
    from_stages = {c[0].removeprefix("--from=") for c in final_copies if c[0].startswith("--from=")}
    assert from_stages == {"build", "novnc"}

    all_ins = [ins for stage in build_stages for ins in stage]
    assert not [a for i, a in all_ins if i == "ADD"], "no ADD (and so no remote URLs)"
    for _, args in all_ins:
        assert "curl " not in args and "wget " not in args
    # Every local COPY source exists and survives the .dockerignore.
    for stage in build_stages:
        for parts in copies(stage):
            if parts[0].startswith("--from="):
                continue
            for source in parts[:-1]:
                assert (ROOT / source).exists(), source
                assert not ignored_by_dockerignore(source.rstrip("/")), source

    final_dict: dict[str, list[str]] = {}
    for ins, args in final:
        final_dict.setdefault(ins, []).append(args)
    (user,) = final_dict["USER"]
    assert user.split(":")[0] == "10001"
    env = " ".join(final_dict["ENV"])
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    static = re.search(r"NOVNC_GATEWAY__SERVER__STATIC_DIR=(\S+)", env)
    novnc = re.search(r"NOVNC_GATEWAY__SERVER__NOVNC_DIR=(\S+)", env)
    assert static and novnc
    destinations = {c[-1] for c in final_copies}
    assert static.group(1) in destinations and novnc.group(1) in destinations
    assert json.loads(final_dict["ENTRYPOINT"][0]) == [
        "novnc-gateway", "serve", "--config", "/etc/novnc-gateway/gateway.toml",
    ]  # fmt: skip
    assert final_dict["EXPOSE"] and "8080" in final_dict["EXPOSE"][0].split()
    # USER comes before ENTRYPOINT, so nothing runs as root at run time.
    order = [ins for ins, _ in final]
    assert order.index("USER") < order.index("ENTRYPOINT")


def healthcheck_command() -> list[str]:
    final = dockerfile()[-1]
    (args,) = [a for i, a in final if i == "HEALTHCHECK"]
    command = json.loads(args[args.index("CMD") + 3 :].strip())
    assert command[0] == "python", "no curl in the image: python does the check"
    return command


async def test_dockerfile_healthcheck_command_works(tmp_path: Path) -> None:
    """The HEALTHCHECK's exact command: exit 0 against a live gateway's /healthz, non-zero when down."""
    import asyncio

    from gateway.sim.demo import DemoCloud
    from tests.support.processes import free_port

    command = healthcheck_command()
    env_line = " ".join(a for i, a in dockerfile()[-1] if i == "ENV")
    default_url = re.search(r"NOVNC_GATEWAY_HEALTH_URL=(\S+)", env_line)
    assert default_url and default_url.group(1).endswith("/healthz")
    command[0] = shutil.which("python3") or "python3"

    async def run(url: str) -> int:
        proc = await asyncio.create_subprocess_exec(
            *command, env={**os.environ, "NOVNC_GATEWAY_HEALTH_URL": url},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return await asyncio.wait_for(proc.wait(), 20)

    cloud = DemoCloud(tmp_path / "cloud")
    await cloud.start()
    gateway = await start_gateway(cloud, tmp_path)
    try:
        assert await run(gateway.url + "/healthz") == 0
        assert await run(f"http://127.0.0.1:{free_port()}/healthz") != 0
    finally:
        await gateway.stop()
        await cloud.stop()


# -- systemd ---------------------------------------------------------------------------------------------

UNIT = DEPLOY / "systemd" / "novnc-gateway.service"


def test_systemd_unit_sandboxing_and_credentials(tmp_path: Path) -> None:
    entries = unit_entries(UNIT.read_text())

    def one(key: str) -> str:
        (value,) = entries[f"Service.{key}"]
        return value

    assert one("DynamicUser") == "yes" or entries.get("Service.User")
    assert one("ProtectSystem") == "strict"
    assert one("ProtectHome") == "yes"
    assert one("PrivateTmp") == "yes"
    assert one("NoNewPrivileges") == "yes"
    assert one("CapabilityBoundingSet") == ""
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in entries["Service.SystemCallFilter"]
    assert one("KillSignal") == "SIGTERM"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("ExecStart").endswith("serve --config /etc/novnc-gateway/gateway.toml")

    # Secrets: each LoadCredential is handed over by a NOVNC_GATEWAY__..._FILE=%d/<name>.
    creds = {v.split(":", 1)[0] for v in entries["Service.LoadCredential"]}
    env = dict(v.split("=", 1) for v in entries["Service.Environment"])
    file_env = {k: v for k, v in env.items() if SECRET_ENV.match(k)}
    assert {v.removeprefix("%d/") for v in file_env.values()} == creds
    assert all(v.startswith("%d/") for v in file_env.values())

    # The drain fits: the example config's drain_timeout, with room to close the last consoles.
    example = load_with_file_env(
        DEPLOY / "gateway.example.toml", {k: v.replace("%d", "/creds") for k, v in file_env.items()}, tmp_path
    )[0]
    assert seconds(one("TimeoutStopSec")) > example.server.drain_timeout + 10


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart's program exists: point it at a stand-in, change nothing else.
    stub = tmp_path / "novnc-gateway"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert "/opt/novnc-gateway/bin/novnc-gateway" in text
    unit = tmp_path / "novnc-gateway.service"
    unit.write_text(text.replace("/opt/novnc-gateway/bin/novnc-gateway", str(stub)))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "novnc-gateway.service" not in result.stderr, result.stderr  # no warnings about our unit

    broken = tmp_path / "broken" / "novnc-gateway.service"
    broken.parent.mkdir()
    broken.write_text(unit.read_text().replace("KillSignal=SIGTERM", "KillSignal=SIGNOPE"))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(broken)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "SIGNOPE" in result.stderr


# -- gateway.example.toml --------------------------------------------------------------------------------


def documented_secret_env() -> dict[str, str]:
    """The NOVNC_GATEWAY__..._FILE=path lines in the example's header comment."""
    text = (DEPLOY / "gateway.example.toml").read_text()
    return dict(re.findall(r"^#\s+(NOVNC_GATEWAY__[A-Z0-9_]+_FILE)=(\S+)", text, re.M))


def check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`novnc-gateway check-config` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT, env=env,
    )  # fmt: skip


def test_example_config_loads_with_its_documented_secrets(tmp_path: Path) -> None:
    documented = documented_secret_env()
    assert len(documented) == 5
    config, env = load_with_file_env(DEPLOY / "gateway.example.toml", documented, tmp_path)
    assert config.state.backend == "redis"
    assert config.server.public_origins and config.server.trusted_proxies
    assert config.session.secure_cookie
    assert config.auth.oidc.enabled and not config.auth.local.enabled
    assert config.clouds[0].secret_key.get_secret_value() == "test-cloud_secret_key"
    assert config.state.redis.password.get_secret_value() == "test-redis_password"

    # The CLI agrees (check-config exits 0) ...
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOVNC_GATEWAY__")}
    result = check_config(DEPLOY / "gateway.example.toml", {**clean, **env})
    assert result.returncode == 0, result.stderr
    # ... and without the secrets the file alone is refused, naming what is missing.
    result = check_config(DEPLOY / "gateway.example.toml", clean)
    assert result.returncode == 2
    assert "credentials missing" in result.stderr


def test_example_config_holds_no_secret_values() -> None:
    data = tomllib.loads((DEPLOY / "gateway.example.toml").read_text())

    def walk(node: object, path: str) -> Iterator[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{path}.{k}" if path else k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{path}[{i}]")
        else:
            yield path

    secret_names = ("keys", "password", "secret", "access_key", "security_token", "password_hash")
    leaked = [p for p in walk(data, "") if p.rsplit(".", 1)[-1].split("[")[0].endswith(secret_names)]
    assert leaked == []
