"""`novnc-gateway explain`: the policy decision for a user and a server, and the rule that made it."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from gateway.app import make_store
from gateway.clouds.base import CloudError, Server
from gateway.clouds.registry import build_provider
from gateway.config import GatewayConfig
from gateway.policy import Policy, explain
from gateway.state.base import StateUnavailable, active_grants


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise SystemExit(f"novnc-gateway: --{what} {item!r} must be key=value")
        out[key] = value if sep else ""
    return out


async def _lookup(config: GatewayConfig, ref: str) -> Server:
    cloud_name, sep, server_id = ref.partition("/")
    if not sep or not server_id:
        raise SystemExit("novnc-gateway: SERVER must be CLOUD/SERVER_ID (or use --offline)")
    cloud = next((c for c in config.clouds if c.name == cloud_name), None)
    if cloud is None:
        raise SystemExit(f"novnc-gateway: no cloud named {cloud_name!r} in the config")
    provider = build_provider(cloud)
    try:
        return await provider.get_server(server_id)
    finally:
        await provider.close()


async def _grants(config: GatewayConfig, user: str, server: Server) -> dict[str, float]:
    """The access grants the shared state holds for this user and server (only Redis is shared with a
    running gateway; an in-memory gateway's grants live in its own process)."""
    if config.state.backend != "redis":
        return {}
    store = make_store(config)
    try:
        return active_grants(await store.access_requests(), user, server.cloud, server.id, time.time())
    except StateUnavailable as exc:
        print(f"novnc-gateway: access grants not read (shared state unavailable: {exc})", file=sys.stderr)
        return {}
    finally:
        await store.close()


def run_explain(args: argparse.Namespace, config: GatewayConfig) -> int:
    if args.offline:
        tags = _pairs(args.tag, "tag")
        server = Server(
            cloud=args.cloud,
            id=args.server,
            name=args.server,
            status="ACTIVE",
            project_id=args.project,
            region=args.region,
            availability_zone="",
            locked=False,
            tags=tuple(f"{k}={v}" if v else k for k, v in tags.items()),
            metadata=_pairs(args.metadata, "metadata"),
        )
    else:
        try:
            server = asyncio.run(_lookup(config, args.server))
        except CloudError as exc:
            print(f"novnc-gateway: cannot look up {args.server}: {exc.user_message}", file=sys.stderr)
            return 1
    provider = next((c.provider for c in config.clouds if c.name == server.cloud), None)
    grants = asyncio.run(_grants(config, args.user, server))
    recording = config.recording
    policy = Policy(config.policy, record=recording.default, record_input=recording.record_input)
    print(explain(policy, args.user, args.group, server, provider=provider, grants=grants))
    return 0
