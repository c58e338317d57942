"""One contract for every state backend: the in-memory store and Redis (a real redis-server) must behave
the same, so a test that passes against one says the same of the other (docs/scaling.md, "The contract").

Each test takes `replica`, a factory of stores that share one state: RedisStores on one Redis and one key
prefix (two gateway replicas), or in memory the one MemoryStore that every "replica" of a single process
shares. What only Redis has (TLS, Sentinel, outages, concurrency across connections, pub/sub reconnects)
stays in tests/integration/test_redis_store.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.state.base import AccessRequest, Command, StateStore, Watcher
from gateway.state.memory import MemoryStore
from gateway.state.redis import RedisStore
from tests.support.polling import wait_for
from tests.support.redis_server import REDIS_SERVER, RedisServer
from tests.support.state import Inbox, record

Replica = Callable[..., StateStore]

BACKENDS = [
    "memory",
    pytest.param(
        "redis",
        marks=pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="redis-server is not installed"),
    ),
]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(workdir=tmp_path_factory.mktemp("redis-contract")).start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
async def replica(request: pytest.FixtureRequest) -> AsyncIterator[Replica]:
    made: list[StateStore] = []
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        prefix = f"c{uuid.uuid4().hex[:8]}:"

        def make(console_ttl: float = 30.0) -> StateStore:
            made.append(RedisStore(url=server.url, key_prefix=prefix, console_ttl=console_ttl))
            return made[-1]

    else:

        def make(console_ttl: float = 30.0) -> StateStore:
            if not made:
                made.append(MemoryStore(console_ttl=console_ttl))
            assert made[0].console_ttl == console_ttl, "one process, one console_ttl"
            return made[0]

    yield make
    for store in made:
        await store.close()


# -- console ledger -----------------------------------------------------------------------------------


async def test_limits_per_user_and_global(replica: Replica) -> None:
    a, b = replica(), replica()
    assert await a.console_acquire(record("alice"), per_user=2, global_max=3) is None
    assert await b.console_acquire(record("alice"), per_user=2, global_max=3) is None
    assert await a.console_acquire(record("alice"), per_user=2, global_max=3) == "per_user"
    assert await b.console_acquire(record("bob"), per_user=2, global_max=3) is None
    # Both limits reached: the global one is reported.
    assert await a.console_acquire(record("alice"), per_user=2, global_max=3) == "global"
    assert await a.console_acquire(record("carol"), per_user=2, global_max=3) == "global"
    assert sorted(r.user for r in await b.consoles()) == ["alice", "alice", "bob"]


async def test_record_from_one_replica_is_listed_updated_and_released_on_the_other(replica: Replica) -> None:
    a, b = replica(), replica()
    rec = record("bob", groups=["ops"], replica="a")
    assert await a.console_acquire(rec, per_user=2, global_max=10) is None
    [seen] = await b.consoles()
    assert seen == rec

    rec.bytes_to_browser, rec.state = 12345, "open"
    await a.console_update(rec)
    [seen] = await b.consoles()
    assert (seen.bytes_to_browser, seen.state, seen.groups) == (12345, "open", ["ops"])

    await b.console_release(rec.id)
    assert await a.consoles() == []
    # A sync already in flight when the console closed must not bring it back as a ghost.
    await a.console_update(rec)
    assert await b.consoles() == []
    # Its slot is free again.
    assert await a.console_acquire(record("bob"), per_user=1, global_max=1) is None


async def test_acquire_is_idempotent_for_the_same_console(replica: Replica) -> None:
    """A client retry after a lost reply re-sends the same id; it must not take a second slot."""
    a = replica()
    rec = record("carol")
    assert await a.console_acquire(rec, per_user=1, global_max=1) is None
    assert await a.console_acquire(rec, per_user=1, global_max=1) is None
    assert len(await a.consoles()) == 1


async def test_update_registers_a_console_the_ledger_lost(replica: Replica) -> None:
    """A live console whose entry vanished (a Redis restart, an outage longer than console_ttl) counts
    again from its replica's next sync."""
    a, b = replica(), replica()
    live = record("dora")
    await a.console_update(live)
    assert [r.id for r in await b.consoles()] == [live.id]
    assert await b.console_acquire(record("dora"), per_user=1, global_max=10) == "per_user"


async def test_released_console_is_not_revived_for_console_ttl(replica: Replica) -> None:
    """The release leaves a tombstone for console_ttl: a late sync cannot revive the console, and the
    tombstone itself does not outlive that bound."""
    ttl = 0.5
    a, b = replica(console_ttl=ttl), replica(console_ttl=ttl)
    gone, never_seen = record("ezra"), record("ezra")
    assert await a.console_acquire(gone, per_user=5, global_max=10) is None
    await b.console_release(gone.id)
    await b.console_release(never_seen.id)  # released before this store heard of it: a tombstone all the same
    released = time.monotonic()
    await a.console_update(gone)
    await a.console_update(never_seen)
    assert await b.consoles() == []

    async def revived() -> bool:
        await a.console_update(gone)
        return bool(await b.consoles())

    await wait_for(revived, within=ttl + 1.0, what="an update reviving the console once its tombstone lapsed")
    assert time.monotonic() - released >= ttl - 0.05


async def test_listed_records_are_copies(replica: Replica) -> None:
    """The ledger holds what was last written: a caller's later changes count only once it updates."""
    a, b = replica(), replica()
    rec = record("fay", groups=["ops"])
    assert await a.console_acquire(rec, per_user=1, global_max=10) is None
    rec.bytes_to_browser, rec.state = 99, "open"
    rec.groups.append("admins")
    [seen] = await b.consoles()
    assert (seen.bytes_to_browser, seen.state, seen.groups) == (0, "connecting", ["ops"])
    seen.user = "mallory"
    assert [r.user for r in await a.consoles()] == ["fay"]


async def test_crashed_replica_leaves_ghosts_for_at_most_console_ttl(replica: Replica) -> None:
    ttl = 0.6
    crashed, survivor = replica(console_ttl=ttl), replica(console_ttl=ttl)
    for _ in range(2):
        assert await crashed.console_acquire(record("dave"), per_user=2, global_max=10) is None
    assert await survivor.console_acquire(record("dave"), per_user=2, global_max=10) == "per_user"

    await crashed.close()  # no release, no further refresh: what SIGKILL leaves behind
    crashed_at = time.monotonic()

    async def gone() -> bool:
        return await survivor.consoles() == []

    await wait_for(gone, within=ttl + 1.0, what="the ghosts lapsing")
    assert time.monotonic() - crashed_at <= ttl + 0.5
    assert await survivor.console_acquire(record("dave"), per_user=2, global_max=10) is None


async def test_refreshed_console_outlives_its_ttl(replica: Replica) -> None:
    """The registry's periodic console_update keeps a live console counted well past console_ttl."""
    ttl = 0.5
    a, b = replica(console_ttl=ttl), replica(console_ttl=ttl)
    rec = record("erin")
    assert await a.console_acquire(rec, per_user=1, global_max=10) is None
    until = time.monotonic() + 3 * ttl
    while time.monotonic() < until:
        await asyncio.sleep(ttl / 3)  # the refresh cadence under test, not a synchronisation
        await a.console_update(rec)
        assert [r.id for r in await b.consoles()] == [rec.id]
        assert await b.console_acquire(record("erin"), per_user=1, global_max=10) == "per_user"


# -- locks, revocations, termination requests, recorded groups ----------------------------------------


async def test_locks_and_revocations_are_shared(replica: Replica) -> None:
    a, b = replica(), replica()
    await a.lock_user("mallory", "left the company")
    assert await b.locked_users() == {"mallory": "left the company"}
    assert await b.is_locked("mallory") and not await b.is_locked("alice")
    await b.unlock_user("mallory")
    assert await a.locked_users() == {}

    await a.revoke_session("sid-1", ttl=0.3)
    assert await b.is_revoked("sid-1")
    assert not await b.is_revoked("sid-2")

    async def lapsed() -> bool:
        return not await b.is_revoked("sid-1")

    await wait_for(lapsed, within=1.5, what="the entry lapsing")


async def test_revoked_sessions_answers_for_many_at_once(replica: Replica) -> None:
    a, b = replica(), replica()
    await a.revoke_session("sid-1", ttl=60)
    await a.revoke_session("sid-3", ttl=60)
    await a.revoke_session("sid-4", ttl=0)  # nothing left to revoke
    assert await b.revoked_sessions({"sid-1", "sid-2", "sid-3", "sid-4"}) == {"sid-1", "sid-3"}
    assert await b.revoked_sessions(set()) == set()
    assert not await b.is_revoked("sid-4")


async def test_termination_requests_are_shared_and_lapse(replica: Replica) -> None:
    a, b = replica(), replica()
    verdict: Command = {"code": 4000, "reason": "maintenance", "by": "admin"}
    # Long enough to outlast the writes and the first read on a loaded machine (0.3 s did not, once).
    await a.request_termination("c1", verdict, ttl=2.0)
    await a.request_termination("c2", verdict, ttl=60)
    await a.request_termination("c2", {**verdict, "by": "root"}, ttl=60)  # the later request stands
    assert await b.termination_requests(["c1", "c2", "c3"]) == {
        "c1": verdict,
        "c2": {**verdict, "by": "root"},
    }
    assert await b.termination_requests([]) == {}

    found = await b.termination_requests(["c2"])
    found["c2"]["by"] = "changed by the caller"
    assert (await a.termination_requests(["c2"]))["c2"]["by"] == "root"

    async def lapsed() -> bool:
        return "c1" not in await b.termination_requests(["c1", "c2"])

    await wait_for(lapsed, within=4.0, what="the entry lapsing")
    assert list(await b.termination_requests(["c1", "c2"])) == ["c2"]


async def test_recorded_groups_are_shared_per_user_and_method_and_lapse(replica: Replica) -> None:
    a, b = replica(), replica()
    await a.record_groups("pat", "proxy-header", ["support"], ttl=0.3)
    await a.record_groups("pat:x", "proxy-jwt", [], ttl=60)  # a colon in the name stays its own key
    wanted = {("pat", "proxy-header"), ("pat", "proxy-jwt"), ("pat:x", "proxy-jwt")}
    assert await b.recorded_groups(wanted) == {
        ("pat", "proxy-header"): ["support"],
        ("pat:x", "proxy-jwt"): [],
    }
    assert await b.recorded_groups(set()) == {}

    async def lapsed() -> bool:
        return ("pat", "proxy-header") not in await b.recorded_groups(wanted)

    await wait_for(lapsed, within=1.5, what="the entry lapsing")


# -- rate buckets and counters ------------------------------------------------------------------------


async def test_token_bucket_is_shared(replica: Replica) -> None:
    a, b = replica(), replica()
    assert await a.take_token("user:x", rate=0.5, burst=3) is None
    assert await b.take_token("user:x", rate=0.5, burst=3) is None
    assert await a.take_token("user:x", rate=0.5, burst=3) is None
    wait = await b.take_token("user:x", rate=0.5, burst=3)
    assert wait is not None and 1.5 < wait <= 2.0  # one token at 0.5/s is two seconds away
    assert await a.take_token("user:other", rate=0.5, burst=3) is None  # buckets are per key


async def test_token_bucket_refills(replica: Replica) -> None:
    a, b = replica(), replica()
    assert await a.take_token("fast", rate=20, burst=1) is None
    wait = await b.take_token("fast", rate=20, burst=1)
    assert wait is not None and wait <= 0.05

    async def refilled() -> bool:
        return await b.take_token("fast", rate=20, burst=1) is None

    await wait_for(refilled, within=1.0, what="a token again")


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
async def test_token_bucket_refuses_meaningless_limits(replica: Replica, rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        await replica().take_token("k", rate=rate, burst=burst)


async def test_fixed_window_counter_is_shared(replica: Replica) -> None:
    a, b = replica(), replica()
    assert await a.incr("signin:user:x", 60) == 1
    assert await b.incr("signin:user:x", 60) == 2
    await a.reset("signin:user:x")
    assert await b.incr("signin:user:x", 60) == 1

    # Fixed, not sliding: counting on does not extend the window.
    assert await a.incr("short", 0.3) == 1

    async def window_over() -> bool:
        return await b.incr("short", 0.3) == 1

    await wait_for(window_over, within=1.5, what="the window over")


# -- commands, health ---------------------------------------------------------------------------------


async def test_published_command_reaches_the_publishing_replica(replica: Replica) -> None:
    a = replica()
    inbox = Inbox()
    await a.start(inbox)
    command: Command = {"op": "terminate", "by": "admin", "code": 4000, "reason": "r", "match": {"user": "u"}}
    await a.publish(command)
    assert await inbox.next() == command


async def test_bad_handler_does_not_stop_delivery(replica: Replica) -> None:
    """A handler that raises is the handler's fault: it is logged, the publisher is not told, and the
    next command is delivered."""
    a = replica()
    inbox = Inbox()
    calls = 0

    async def flaky(command: Command) -> None:
        nonlocal calls
        if command == {"op": "resync"}:
            return
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        await inbox(command)

    await a.start(flaky)
    await a.publish({"op": "first"})
    await a.publish({"op": "second"})
    assert await inbox.next() == {"op": "second"}


async def test_ping_answers_when_reachable(replica: Replica) -> None:
    assert await replica().ping() is None


# -- access requests ----------------------------------------------------------------------------------


def access_request(user: str = "bob", **fields: Any) -> AccessRequest:
    base: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "user": user,
        "cloud": "demo",
        "server_id": "srv-1",
        "server_name": "web-1",
        "rule": "ops-jit",
        "permission": "control",
        "duration": 600.0,
        "reason": "INC-1 disk full",
        "created": time.time(),
    }
    return AccessRequest(**{**base, **fields})


async def test_an_access_request_made_on_one_replica_is_decided_once_on_another(replica: Replica) -> None:
    a, b = replica(), replica()
    pending = access_request()
    await a.access_request_put(pending, ttl=60)
    [seen] = await b.access_requests()
    assert seen == pending
    approved = AccessRequest.from_dict(
        {**pending.to_dict(), "status": "approved", "decided_by": "lead", "expires": time.time() + 600}
    )
    denied = AccessRequest.from_dict({**pending.to_dict(), "status": "denied", "decided_by": "other"})
    # Two approvers at once: exactly one decision stands.
    results = await asyncio.gather(
        b.access_request_decide(approved, 600), a.access_request_decide(denied, 60)
    )
    assert sorted(results) == [False, True]
    [first] = await a.access_requests()
    assert first == (approved if results[0] else denied)
    assert not await a.access_request_decide(denied, 60)  # decided is decided
    assert not await a.access_request_decide(access_request(), 60)  # unknown
    assert first.grants("bob", "demo", "srv-1", time.time()) is (first.status == "approved")


async def test_access_requests_lapse_with_their_ttl(replica: Replica) -> None:
    a, b = replica(), replica()
    short, long = access_request("ann", created=1.0), access_request("ben", created=2.0)
    await a.access_request_put(short, ttl=0.2)
    await a.access_request_put(long, ttl=60)
    assert [r.user for r in await b.access_requests()] == ["ann", "ben"]  # oldest first
    await wait_for(lambda: _users(b), 5, "the short request to lapse")
    too_late = AccessRequest.from_dict({**short.to_dict(), "status": "denied"})
    assert not await b.access_request_decide(too_late, 60)


async def _users(store: StateStore) -> bool:
    return [r.user for r in await store.access_requests()] == ["ben"]


# -- watchers -----------------------------------------------------------------------------------------


def watcher(console_id: str, user: str = "lead", **fields: Any) -> Watcher:
    base: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "console_id": console_id,
        "user": user,
        "name": user.title(),
        "requested": time.time(),
        "replica": "b",
        "groups": ["support"],
    }
    return Watcher(**{**base, **fields})


async def test_a_watcher_written_on_one_replica_is_read_per_console_on_another(replica: Replica) -> None:
    a, b = replica(), replica()
    first, second = watcher("c1", "ann", requested=1.0), watcher("c1", "ben", requested=2.0)
    other = watcher("c2", "cid")
    for entry in (second, other, first):
        await a.watcher_put(entry, ttl=60)
    found = await b.watchers(["c1", "c2", "c3"])
    assert found == {"c1": [first, second], "c2": [other]}  # oldest request first; c3 has none
    assert await b.watchers([]) == {}
    joined = Watcher.from_dict({**first.to_dict(), "status": "joined", "since": 5.0})
    await b.watcher_put(joined, ttl=60)  # the same id again replaces the entry
    assert (await a.watchers(["c1"]))["c1"] == [joined, second]
    (await a.watchers(["c1"]))["c1"][0].groups.append("x")  # copies: changing one changes nothing stored
    assert (await a.watchers(["c1"]))["c1"][0].groups == ["support"]


async def test_a_join_is_decided_once(replica: Replica) -> None:
    a, b = replica(), replica()
    pending = watcher("c1")
    await a.watcher_put(pending, ttl=60)
    approved = Watcher.from_dict({**pending.to_dict(), "status": "approved", "decided_by": "alice"})
    refused = Watcher.from_dict({**pending.to_dict(), "status": "refused", "decided_by": "alice"})
    # The owner's two tabs at once: exactly one decision stands.
    results = await asyncio.gather(b.watcher_decide(approved, 60), a.watcher_decide(refused, 60))
    assert sorted(results) == [False, True]
    [stored] = (await a.watchers(["c1"]))["c1"]
    assert stored == (approved if results[0] else refused)
    assert not await a.watcher_decide(refused, 60)  # decided is decided
    assert not await a.watcher_decide(watcher("c1", status="approved"), 60)  # unknown
    assert not await a.watcher_decide(watcher("c9", status="approved"), 60)  # unknown console


async def test_watchers_lapse_with_their_ttl(replica: Replica) -> None:
    a, b = replica(), replica()
    short, long = watcher("c1", "ann", requested=1.0), watcher("c1", "ben", requested=2.0)
    await a.watcher_put(long, ttl=60)
    await a.watcher_put(short, ttl=0.2)
    assert [w.user for w in (await b.watchers(["c1"]))["c1"]] == ["ann", "ben"]

    async def only_ben() -> bool:
        return [w.user for w in (await b.watchers(["c1"])).get("c1", [])] == ["ben"]

    await wait_for(only_ben, 5, "the short entry to lapse")
    too_late = Watcher.from_dict({**short.to_dict(), "status": "approved"})
    assert not await b.watcher_decide(too_late, 60)
    # The console's list outlives a short entry written after a long one.
    assert (await b.watchers(["c1"]))["c1"] == [long]
