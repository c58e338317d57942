"""The `novnc-gateway` command."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path

from gateway.config import ConfigError, load_config

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="novnc-gateway",
        description="VNC console gateway: operators sign in through SSO; the cloud's one-time console token "
        "stays inside the gateway.",
        epilog="Every config key can be overridden with NOVNC_GATEWAY__SECTION__KEY environment variables; "
        "see docs/configuration.md.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--config", "-c", type=Path, required=True, help="TOML config file")
    s.add_argument(
        "--reuse-port",
        action="store_true",
        help="bind with SO_REUSEPORT so several processes can share the listen address",
    )

    c = sub.add_parser("check-config", help="validate a config file; exit 2 naming each bad key")
    c.add_argument("config", type=Path)

    d = sub.add_parser("demo", help="run the embedded demo cloud and the gateway on 127.0.0.1")
    d.add_argument("--port", type=int, default=8080, help="gateway port on 127.0.0.1 (default 8080)")

    h = sub.add_parser("hash-password", help="print a scrypt hash for a local user's password")
    h.add_argument("--stdin", action="store_true", help="read the password from standard input, not a prompt")

    sub.add_parser("keygen", help="print a new random session key")

    e = sub.add_parser("explain", help="print the policy decision for a user and a server, with the rule")
    e.add_argument("user")
    e.add_argument(
        "server", help="CLOUD/SERVER_ID (looked up through the cloud API), or a name with --offline"
    )
    e.add_argument("--config", "-c", type=Path, required=True)
    e.add_argument("--group", "-g", action="append", default=[], help="a group of the user (repeatable)")
    e.add_argument(
        "--offline",
        action="store_true",
        help="do not call the cloud API; describe the server with the options below",
    )
    e.add_argument("--cloud", default="", help="with --offline: the cloud name")
    e.add_argument("--project", default="", help="with --offline: the project id")
    e.add_argument("--region", default="", help="with --offline: the region")
    e.add_argument("--tag", action="append", default=[], help="with --offline: a tag key=value (repeatable)")
    e.add_argument("--metadata", action="append", default=[], help="with --offline: metadata key=value")
    return p


def _load(path: Path):  # type: ignore[no-untyped-def]
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"novnc-gateway: invalid config {path}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        config = _load(args.config)
        print(f"{args.config}: OK ({len(config.clouds)} cloud(s), {len(config.policy.rules)} policy rule(s))")
        return 0
    if args.command == "serve":
        from gateway.logs import setup_logging
        from gateway.server import loop_factory, serve, tune_malloc

        config = _load(args.config)
        setup_logging(config.server.log_format, config.server.log_level)
        tune_malloc()
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve(config, args.config, reuse_port=args.reuse_port))
        return 0
    if args.command == "demo":
        from gateway.sim.demo import run_demo

        return run_demo(port=args.port)
    if args.command == "hash-password":
        from gateway.auth.passwords import hash_password

        if args.stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != password:
                print("novnc-gateway: the passwords differ", file=sys.stderr)
                return 1
        if not password:
            print("novnc-gateway: empty password refused", file=sys.stderr)
            return 1
        print(hash_password(password))
        return 0
    if args.command == "keygen":
        from gateway.auth.cookie import generate_key

        print(generate_key())
        return 0
    if args.command == "explain":
        from gateway.explain import run_explain

        return run_explain(args, _load(args.config))
    return 1
