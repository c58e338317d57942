"""What only the Redis backend has, against a real redis-server: two stores on one Redis stand for two gateway
replicas. Concurrency across connections, pub/sub between replicas and its reconnects, outages, auth, TLS and
Sentinel. What every backend must do is tests/contract/test_state_contract.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway import app
from gateway.auth.cookie import generate_key
from gateway.auth.passwords import hash_password
from gateway.config import GatewayConfig
from gateway.consoles.codes import (
    CLOSE_LOCKED,
    CLOSE_LOGGED_OUT,
    CLOSE_TERMINATED,
    REASON_LOCKED,
    REASON_LOGGED_OUT,
)
from gateway.consoles.registry import ConsoleRegistry
from gateway.sim.certs import make_self_signed
from gateway.state.base import StateUnavailable
from gateway.state.memory import MemoryStore
from gateway.state.redis import RedisStore
from tests.support.polling import wait_for
from tests.support.redis_server import REDIS_SERVER, RedisServer, TlsFiles
from tests.support.state import Inbox, record

pytestmark = pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server is not installed")

FAIL_FAST = 3.0  # seconds within which a dead Redis must be reported


def _server(tmp_path_factory: pytest.TempPathFactory, name: str, **kw: Any) -> RedisServer:
    return RedisServer(workdir=tmp_path_factory.mktemp(name), **kw).start()


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = _server(tmp_path_factory, "redis")
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server this test alone may kill and restart."""
    server = _server(tmp_path_factory, "redis-own")
    yield server
    server.stop()


StoreFactory = Callable[..., RedisStore]


@pytest.fixture
async def make_store(shared_redis: RedisServer) -> AsyncIterator[StoreFactory]:
    """Stores (replicas) sharing one key prefix unique to the test; all closed at the end."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    made: list[RedisStore] = []

    def factory(server: RedisServer | None = None, **kw: Any) -> RedisStore:
        kw.setdefault("url", (server or shared_redis).url)
        kw.setdefault("key_prefix", prefix)
        store = RedisStore(**kw)
        made.append(store)
        return store

    yield factory
    for store in made:
        await store.close()


async def subscribers(server: RedisServer, channel: str, password: str | None = None) -> int:
    raw = Redis(host="127.0.0.1", port=server.port, password=password, socket_connect_timeout=1)
    try:
        [(_, count)] = await raw.pubsub_numsub(channel)
        return int(count)
    finally:
        await raw.aclose()


# -- consoles ---------------------------------------------------------------------------------------------


async def test_limits_hold_across_replicas_under_concurrent_acquires(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    alice = await asyncio.gather(
        *(s.console_acquire(record("alice"), per_user=3, global_max=100) for s in [a, b] * 10)
    )
    assert alice.count(None) == 3
    assert alice.count("per_user") == 17

    others = await asyncio.gather(
        *(s.console_acquire(record(f"u{i}"), per_user=5, global_max=8) for i, s in enumerate([a, b] * 10))
    )
    assert others.count(None) == 5  # 3 of alice's + 5 = the global 8
    assert others.count("global") == 15
    assert len(await a.consoles()) == len(await b.consoles()) == 8

    alices = [r for r in await b.consoles() if r.user == "alice"]
    await a.console_release(alices[0].id)  # released by the other replica: a slot frees everywhere
    assert await b.console_acquire(record("alice"), per_user=3, global_max=8) is None
    assert await a.console_acquire(record("alice"), per_user=3, global_max=100) == "per_user"


async def test_token_bucket_is_atomic_across_replicas(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    taken = await asyncio.gather(*(s.take_token("user:y", rate=0.1, burst=4) for s in [a, b] * 10))
    assert taken.count(None) == 4


# -- commands -------------------------------------------------------------------------------------------


async def test_command_reaches_every_replica_quickly(make_store: StoreFactory) -> None:
    a, b = make_store(), make_store()
    inbox_a, inbox_b = Inbox(), Inbox()
    await a.start(inbox_a)
    await b.start(inbox_b)

    command = {"op": "terminate", "by": "admin", "code": 4000, "reason": "r", "match": {"user": "u"}}
    sent = time.perf_counter()
    await b.publish(command)
    assert await inbox_a.next(within=1.0) == command
    latency = time.perf_counter() - sent
    assert latency < 1.0, f"delivery took {latency:.3f} s"
    assert await inbox_b.next(within=1.0) == command  # the publishing replica included


async def test_terminate_from_one_registry_closes_the_console_on_another(make_store: StoreFactory) -> None:
    """End to end with the real registry: the admin's replica publishes, the relaying replica acts."""
    relaying = ConsoleRegistry(make_store(), replica="a")
    admin = ConsoleRegistry(make_store(), replica="b")
    await relaying.start()
    await admin.start()
    try:
        rec = record("heidi", sid="sid-h")
        assert await relaying.acquire(rec, per_user=1, global_max=10) is None
        assert [r.id for r in await admin.all()] == [rec.id]
        await admin.terminate(by="admin", code=CLOSE_TERMINATED, reason="maintenance", user="heidi")

        async def closed() -> bool:
            return relaying.local[rec.id].pending_close is not None

        await wait_for(closed, within=1.0, what="the terminate on the relaying replica", every=0.005)
        assert relaying.local[rec.id].pending_close == (CLOSE_TERMINATED, "maintenance", "admin")
        await relaying.release(rec.id)
        assert await admin.all() == []
    finally:
        await relaying.close()
        await admin.close()


async def test_every_subscription_is_followed_by_a_resync(
    make_store: StoreFactory, own_redis: RedisServer
) -> None:
    a = make_store(own_redis)
    inbox = Inbox()
    await a.start(inbox)
    await wait_for(lambda: inbox.resyncs == 1, within=1.0, what="the first resync")
    raw = Redis(host="127.0.0.1", port=own_redis.port, socket_connect_timeout=1)
    try:
        await raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    finally:
        await raw.aclose()
    await wait_for(lambda: inbox.resyncs == 2, within=5.0, what="a resync after the resubscription")


async def test_a_replica_that_missed_commands_reconciles_from_state(
    make_store: StoreFactory, shared_redis: RedisServer
) -> None:
    """Pub/sub is the fast path only: a replica whose subscription was cut while a lock, a sign-out and a
    terminate were published closes those consoles once it can read the state again."""
    user = f"r{uuid.uuid4().hex[:8]}"
    raw = Redis(host="127.0.0.1", port=shared_redis.port, socket_connect_timeout=1)
    await raw.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all")
    relaying = ConsoleRegistry(
        make_store(url=f"redis://{user}:pw@127.0.0.1:{shared_redis.port}/0"), replica="a", sync_interval=3600
    )
    admin = ConsoleRegistry(make_store(), replica="b")
    await relaying.start()
    await admin.start()
    try:
        locked, signed_out, terminated = record("lena", sid="s1"), record("omar", sid="s2"), record("pia")
        for rec in (locked, signed_out, terminated):
            assert await relaying.acquire(rec, per_user=5, global_max=50) is None
        # No channel may be subscribed any more: the listener is cut off and cannot come back.
        await raw.execute_command("ACL", "SETUSER", user, "resetchannels")
        await raw.execute_command("CLIENT", "KILL", "USER", user, "TYPE", "pubsub")
        store = relaying.store
        assert isinstance(store, RedisStore)
        await wait_for(lambda: not store.listening, within=5.0, what="the listener cut off")

        await admin.store.lock_user("lena", "incident")
        await admin.terminate(by="admin", code=CLOSE_LOCKED, reason=REASON_LOCKED, user="lena")
        await admin.store.revoke_session("s2", 60)
        await admin.terminate(by="logout", code=CLOSE_LOGGED_OUT, reason=REASON_LOGGED_OUT, sid="s2")
        await admin.terminate(
            by="admin", code=CLOSE_TERMINATED, reason="maintenance", console_id=terminated.id
        )
        assert all(live.pending_close is None for live in relaying.local.values()), "a command got through"

        await raw.execute_command("ACL", "SETUSER", user, "&*")  # the listener resubscribes, then resyncs
        await wait_for(
            lambda: all(live.pending_close for live in relaying.local.values()),
            within=5.0,
            what="every console closed on reconciliation",
        )
        assert relaying.local[locked.id].pending_close == (CLOSE_LOCKED, REASON_LOCKED, "admin")
        assert relaying.local[signed_out.id].pending_close == (CLOSE_LOGGED_OUT, REASON_LOGGED_OUT, "logout")
        assert relaying.local[terminated.id].pending_close == (CLOSE_TERMINATED, "maintenance", "admin")
    finally:
        await relaying.close()
        await admin.close()
        await raw.execute_command("ACL", "DELUSER", user)
        await raw.aclose()


async def test_close_leaves_no_task(make_store: StoreFactory) -> None:
    a = make_store()
    await a.start(Inbox())
    assert any(t.get_name() == "redis-command-listener" for t in asyncio.all_tasks())
    await a.close()
    assert not any(t.get_name() == "redis-command-listener" for t in asyncio.all_tasks())


# -- outages --------------------------------------------------------------------------------------------


def every_method(store: RedisStore) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "ping": store.ping,
        "console_acquire": lambda: store.console_acquire(record(), per_user=1, global_max=1),
        "console_update": lambda: store.console_update(record()),
        "console_release": lambda: store.console_release("x"),
        "consoles": store.consoles,
        "lock_user": lambda: store.lock_user("u", "r"),
        "unlock_user": lambda: store.unlock_user("u"),
        "locked_users": store.locked_users,
        "is_locked": lambda: store.is_locked("u"),
        "revoke_session": lambda: store.revoke_session("s", 10),
        "is_revoked": lambda: store.is_revoked("s"),
        "take_token": lambda: store.take_token("k", rate=1, burst=1),
        "incr": lambda: store.incr("k", 10),
        "reset": lambda: store.reset("k"),
        "publish": lambda: store.publish({"op": "x"}),
    }


async def test_redis_outage_fails_fast_and_recovers(make_store: StoreFactory, own_redis: RedisServer) -> None:
    a, b = make_store(own_redis), make_store(own_redis)
    inbox_a = Inbox()
    await a.start(inbox_a)
    await b.start(Inbox())
    live = record("frank")
    assert await a.console_acquire(live, per_user=5, global_max=5) is None

    own_redis.stop()
    for name, call in every_method(a).items():
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match="Redis unreachable"):
            await call()
        assert time.monotonic() - started < FAIL_FAST, name

    own_redis.restart()  # same port, empty dataset
    await a.ping()  # no new store, no restart of the gateway: the client reconnects by itself
    assert await b.consoles() == []  # the restart lost the record...
    await a.console_update(live)  # ...and the next sync of the live console restores it
    assert [r.id for r in await b.consoles()] == [live.id]
    assert await b.console_acquire(record("frank"), per_user=1, global_max=5) == "per_user"

    async def both_resubscribed() -> bool:
        return await subscribers(own_redis, a.channel) == 2

    await wait_for(both_resubscribed, within=5.0, what="both listeners resubscribed")
    await b.publish({"op": "after-restart"})
    assert await inbox_a.next(within=1.0) == {"op": "after-restart"}


async def test_frozen_redis_is_noticed_by_the_listener(
    make_store: StoreFactory, own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGSTOP: connections stay open but nothing answers, the case a read without a deadline never ends."""
    a = make_store(own_redis, replica_heartbeat=0.2)
    inbox = Inbox()
    await a.start(inbox)
    assert a.listening
    raw = Redis(host="127.0.0.1", port=own_redis.port, decode_responses=True)

    async def pings() -> int:
        stats = await raw.info("commandstats")
        return int(stats.get("cmdstat_ping", {}).get("calls", 0))

    before = await pings()

    async def pinged_twice() -> bool:
        return await pings() >= before + 2

    await wait_for(pinged_twice, within=3.0, what="two heartbeat PINGs")
    assert a.listening and "lost Redis" not in caplog.text  # the idle heartbeat is answered
    await raw.aclose()

    assert own_redis.proc is not None
    pid = own_redis.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            await a.ping()
        assert time.monotonic() - started < FAIL_FAST

        async def noticed() -> bool:
            return not a.listening

        await wait_for(noticed, within=2.0, what="the listener noticing the frozen Redis")
    finally:
        os.kill(pid, signal.SIGCONT)

    async def listening_again() -> bool:
        return a.listening

    await wait_for(listening_again, within=5.0, what="the listener back")
    await a.publish({"op": "thawed"})
    assert await inbox.next() == {"op": "thawed"}


async def test_hung_redis_fails_fast(make_store: StoreFactory) -> None:
    """A peer that accepts and never answers (a network partition, a frozen Redis) must not hang callers."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # swallow everything until the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        store = make_store(url=f"redis://127.0.0.1:{port}/0")
        started = time.monotonic()
        with pytest.raises(StateUnavailable):
            await store.ping()
        assert time.monotonic() - started < FAIL_FAST
    finally:
        server.close()


# -- authentication, TLS, Sentinel ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = _server(tmp_path_factory, "redis-auth", password="correct-horse-battery")
    yield server
    server.stop()


async def test_password_auth(make_store: StoreFactory, password_redis: RedisServer) -> None:
    good = make_store(password_redis, password="correct-horse-battery")
    await good.ping()
    assert await good.console_acquire(record(), per_user=1, global_max=1) is None

    # The setting overrides a password embedded in the URL.
    url_with_stale = f"redis://:stale-password@127.0.0.1:{password_redis.port}/0"
    overridden = make_store(password_redis, url=url_with_stale, password="correct-horse-battery")
    await overridden.ping()

    wrong = make_store(password_redis, password="wrong-password-123")
    with pytest.raises(StateUnavailable, match="refused the credentials") as caught:
        await wrong.console_acquire(record(), per_user=1, global_max=1)
    assert "wrong-password-123" not in str(caught.value)
    assert "wrong-password-123" not in repr(wrong)

    missing = make_store(password_redis)
    with pytest.raises(StateUnavailable, match="refused the credentials"):
        await missing.ping()


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Path]]:
    certs = make_self_signed(tmp_path_factory.mktemp("redis-certs"))
    tls = TlsFiles(ca_cert=certs.ca_cert, cert=certs.server_cert, key=certs.server_key)
    server = _server(tmp_path_factory, "redis-tls", tls=tls)
    yield server, certs.ca_cert
    server.stop()


async def test_tls_with_private_ca(make_store: StoreFactory, tls_redis: tuple[RedisServer, Path]) -> None:
    server, ca = tls_redis
    assert server.url.startswith("rediss://")
    a, b = make_store(server, ca_file=ca), make_store(server, ca_file=ca)
    inbox = Inbox()
    await a.start(inbox)
    assert await a.console_acquire(record(), per_user=1, global_max=1) is None
    assert len(await b.consoles()) == 1
    await b.publish({"op": "over-tls"})
    assert await inbox.next() == {"op": "over-tls"}

    untrusting = make_store(server)  # system CAs only: the private CA's certificate must be rejected
    with pytest.raises(StateUnavailable):
        await untrusting.ping()


def test_state_layer_does_not_import_the_config() -> None:
    """The store takes plain parameters; gateway/app.py maps the config onto them."""
    probe = "import sys, gateway.state.redis, gateway.state.memory; print('gateway.config' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


async def test_make_store_maps_the_config(password_redis: RedisServer) -> None:
    """gateway/app.py is where `[state]` becomes a backend's plain parameters; both get console_ttl."""
    redis = {"url": password_redis.url, "password": "correct-horse-battery", "key_prefix": "mapped:"}
    data: dict[str, Any] = {
        "session": {"keys": [generate_key()]},
        "auth": {"local": {"enabled": True, "users": [{"name": "a", "password_hash": hash_password("pw")}]}},
        "state": {"backend": "redis", "redis": {**redis, "console_ttl": 7}},
    }
    store = app.make_store(GatewayConfig.model_validate(data))
    try:
        assert isinstance(store, RedisStore)
        await store.ping()  # the password reached Redis
        assert (store.console_ttl, store.channel) == (7, "mapped:commands")
    finally:
        await store.close()
    data["state"]["backend"] = "memory"
    memory = app.make_store(GatewayConfig.model_validate(data))
    assert isinstance(memory, MemoryStore) and memory.console_ttl == 7


def test_ca_file_requires_rediss(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rediss"):
        RedisStore(url="redis://127.0.0.1:1/0", ca_file=tmp_path / "ca.pem")


async def test_sentinel_finds_the_master(
    make_store: StoreFactory, shared_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sentinel = _server(tmp_path_factory, "sentinel", sentinel_master=shared_redis.port)
    try:
        via_sentinel = make_store(
            url="redis:///0", sentinels=[f"127.0.0.1:{sentinel.port}"], sentinel_service="mymaster"
        )
        direct = make_store()
        rec = record("grace")
        assert await via_sentinel.console_acquire(rec, per_user=1, global_max=5) is None
        assert [r.id for r in await direct.consoles()] == [rec.id]
    finally:
        sentinel.stop()
