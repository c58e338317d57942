"""Shared state in Redis, so limits, the admin list, locks and terminate commands span every replica.

Design (docs/scaling.md has the long form):

- A console is a JSON string `<p>console:<id>` with a TTL plus a member of two sorted sets, `<p>consoles`
  and `<p>user-consoles:<user>`, scored by its expiry time in Redis's own clock. The acquire script prunes
  scores in the past before counting, so a replica that dies without releasing leaves ghosts that stop
  counting at most `console_ttl` seconds after its last refresh.
- Every clock read happens inside Redis (`TIME` in the scripts, TTLs), so replica clock skew is irrelevant.
- Commands travel over pub/sub on `<p>commands`; a listener task resubscribes with backoff after an outage
  and then hands the registry `{"op": "resync"}`. Pub/sub is only the fast path: locks, revocations and
  termination requests (`<p>terminate:<id>`) are also state, which the registry reconciles against; so
  are a console's watchers (`<p>watcher:<console>:<watch>`, docs/shadowing.md).
- Every Redis failure becomes `StateUnavailable`; timeouts are short so a dead Redis fails in about a second.

Only a single Redis (optionally behind Sentinel) is supported: the scripts touch several keys that a
Redis Cluster would spread over slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
from collections.abc import Awaitable, Collection, Iterator, Sequence
from typing import Any, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import ConnectionPool, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from gateway.state.base import (
    AccessRequest,
    Command,
    CommandHandler,
    ConsoleRecord,
    StateStore,
    StateUnavailable,
    Watcher,
    deliver,
)

log = logging.getLogger("gateway.state.redis")

T = TypeVar("T")

CONNECT_TIMEOUT = 1.0
SOCKET_TIMEOUT = 2.0
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 2.0
_MGET_CHUNK = 500

# Shared by acquire and update: the record and both set entries expire at the same instant (Redis time).
# A set's TTL only ever grows: a replica configured with a shorter console_ttl must not cut short the
# entries of another.
_LUA_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function extend(key, ttl)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
"""

# KEYS: all-consoles zset, user zset, record key. ARGV: id, json, ttl ms, per_user, global_max.
# Idempotent for an id already registered (a client retry after a lost reply must not count it twice).
_ACQUIRE = (
    _LUA_NOW_MS
    + """
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then return 'global' end
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 'per_user' end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
extend(KEYS[1], ttl)
extend(KEYS[2], ttl)
redis.call('SET', KEYS[3], ARGV[2], 'PX', ttl)
return false
"""
)

# KEYS: all-consoles zset, user zset, record key, tombstone key. ARGV: id, json, ttl ms.
# Re-registers a record that vanished (Redis restarted, or an outage outlasted the TTL): the console is
# live on the caller's replica, so it must count again. A released console (tombstone) is never revived.
_UPDATE = (
    _LUA_NOW_MS
    + """
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
extend(KEYS[1], ttl)
extend(KEYS[2], ttl)
redis.call('SET', KEYS[3], ARGV[2], 'PX', ttl)
return 1
"""
)

# KEYS: all-consoles zset, record key, tombstone key, user-zset key prefix (completed with the user).
# ARGV: id, ttl ms. The user comes from the record; if it already expired its set entry has too.
_RELEASE = """
local raw = redis.call('GET', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], '1', 'PX', tonumber(ARGV[2]))
if raw then
  local ok, record = pcall(cjson.decode, raw)
  if ok and type(record) == 'table' and type(record['user']) == 'string' then
    redis.call('ZREM', KEYS[4] .. record['user'], ARGV[1])
  end
end
return 1
"""

# KEYS: bucket hash. ARGV: rate per second, burst. Returns false when a token was taken, else the wait
# in seconds as a string (Lua numbers would be truncated to integers on the way out).
_RATE_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or burst
local stamp = tonumber(state[2]) or now
if now > stamp then
  tokens = math.min(burst, tokens + (now - stamp) * rate)
  stamp = now
end
local wait = false
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = string.format('%.6f', (1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'stamp', string.format('%.6f', stamp))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"""

# KEYS: counter. ARGV: window ms. The TTL is set with the first increment, so the window is fixed.
_INCR = """
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
end
return n
"""

# A decision on an access request or a join: compare-and-set, so that of two deciders exactly one wins.
# KEYS: request key, index set. ARGV: the pending JSON read, the decided JSON, ttl ms, id.
_DECIDE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
redis.call('SADD', KEYS[2], ARGV[4])
return 1
"""


def _describe(exc: BaseException) -> str:
    """A reason for logs and refusals; redis-py's messages name host and port, never the password."""
    if isinstance(exc, redis_errors.AuthenticationError | redis_errors.AuthenticationWrongNumberOfArgsError):
        return "Redis refused the credentials (check state.redis.password)"
    if isinstance(exc, redis_errors.NoPermissionError):
        return "the Redis user lacks permission for a command the gateway needs"
    if isinstance(exc, redis_errors.ReadOnlyError):
        return "Redis is a read-only replica (failover in progress?)"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError | OSError | TimeoutError):
        return f"Redis unreachable: {text}"
    return f"Redis error: {text}"


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except (redis_errors.RedisError, OSError, TimeoutError) as exc:
        raise StateUnavailable(_describe(exc)) from None


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisStore(StateStore):
    def __init__(
        self,
        *,
        url: str,
        password: str = "",
        ca_file: str | os.PathLike[str] | None = None,
        sentinels: Sequence[str] = (),
        sentinel_service: str = "mymaster",
        key_prefix: str = "",
        console_ttl: float = 30.0,
        replica_heartbeat: float = 5.0,
    ) -> None:
        """Plain parameters, not the config model, so the state layer stands alone (gateway/app.py maps
        `[state.redis]` onto them). `password`, when set, wins over one embedded in `url`; it is handed to
        the client and kept nowhere else."""
        if console_ttl <= 0 or replica_heartbeat <= 0:
            raise ValueError("console_ttl and replica_heartbeat must be positive")
        self._prefix = key_prefix
        self.channel = f"{self._prefix}commands"
        self.console_ttl = float(console_ttl)
        self._heartbeat = float(replica_heartbeat)
        self._sentinel: Sentinel | None = None
        self._client = self._connect(url, password, ca_file, sentinels, sentinel_service)
        self._acquire = self._client.register_script(_ACQUIRE)
        self._update = self._client.register_script(_UPDATE)
        self._release = self._client.register_script(_RELEASE)
        self._take = self._client.register_script(_RATE_BUCKET)
        self._incr = self._client.register_script(_INCR)
        self._decide = self._client.register_script(_DECIDE)
        self._handler: CommandHandler | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @property
    def listening(self) -> bool:
        """Whether the command listener is subscribed right now (false during an outage)."""
        return self._subscribed.is_set()

    def __repr__(self) -> str:
        return f"<RedisStore prefix={self._prefix!r}>"

    # -- connection ---------------------------------------------------------------------------------

    def _connect(
        self,
        address: str,
        password: str,
        ca_file: str | os.PathLike[str] | None,
        sentinels: Sequence[str],
        sentinel_service: str,
    ) -> Redis:
        url: dict[str, Any] = dict(parse_url(address))
        tls = url.pop("connection_class", None) is SSLConnection
        if ca_file is not None and not tls:
            raise ValueError("ca_file is set but the url does not use rediss://")
        common: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": SOCKET_TIMEOUT,
            # One immediate retry on a broken connection covers a pooled connection that died with a Redis
            # restart. Timeouts are not retried: the command may have run, and a hung Redis must fail fast.
            "retry": Retry(NoBackoff(), 1, supported_errors=(redis_errors.ConnectionError,)),
        }
        tls_options: dict[str, Any] = {}
        if tls:
            tls_options["ssl_cert_reqs"] = "required"
            if ca_file is not None:
                tls_options["ssl_ca_certs"] = os.fspath(ca_file)
        auth: dict[str, Any] = {k: url.pop(k) for k in ("username", "password") if k in url}
        if password:
            auth["password"] = password  # the setting wins over a password embedded in the URL
        if sentinels:
            # Sentinels get TLS like the master, but not its password: they usually have none, and Redis
            # rejects AUTH when no password is configured.
            self._sentinel = Sentinel(
                [_host_port(s) for s in sentinels],
                sentinel_kwargs={**common, **({"ssl": True, **tls_options} if tls else {})},
                **common,
                **auth,
                **({"ssl": True, **tls_options} if tls else {}),
            )
            return self._sentinel.master_for(
                sentinel_service, db=int(url.get("db", 0) or 0), decode_responses=True
            )
        kwargs: dict[str, Any] = {**url, **common, **auth, **tls_options, "decode_responses": True}
        if tls:
            kwargs["connection_class"] = SSLConnection
        return Redis.from_pool(ConnectionPool(**kwargs))  # owned: closed with the client

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    async def _call(self, awaitable: Awaitable[T]) -> T:
        with _translated():
            return await awaitable

    # -- commands ---------------------------------------------------------------------------------

    async def start(self, on_command: CommandHandler) -> None:
        """Start the listener and wait briefly for its subscription; a Redis that is down does not stop
        start-up (the listener keeps retrying and readiness reports the store)."""
        self._handler = on_command
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="redis-command-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), CONNECT_TIMEOUT + SOCKET_TIMEOUT)

    async def close(self) -> None:
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._handler = None
        with contextlib.suppress(Exception):
            await self._client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                with contextlib.suppress(Exception):
                    await sentinel.aclose()

    async def publish(self, command: Command) -> None:
        await self._call(self._client.publish(self.channel, json.dumps(command, separators=(",", ":"))))

    async def _listen(self) -> None:
        backoff = _BACKOFF_FIRST
        reported = False
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                await self._pump(pubsub)
            except (redis_errors.RedisError, OSError, TimeoutError) as exc:
                if not reported:
                    log.warning("command listener lost Redis (%s); reconnecting", _describe(exc))
                    reported = True
            except Exception:
                log.exception("command listener failed; restarting it")
            finally:
                was_subscribed = self._subscribed.is_set()
                self._subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if was_subscribed:
                backoff, reported = _BACKOFF_FIRST, False
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))  # jitter: replicas do not stampede
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _pump(self, pubsub: PubSub) -> None:
        """Deliver messages; PING when quiet so a silently dead connection is noticed within two
        heartbeats rather than never (a half-open TCP connection raises nothing on read)."""
        loop = asyncio.get_running_loop()
        last_seen = loop.time()
        ping_sent: float | None = None
        poll = min(1.0, self._heartbeat)
        while True:
            message = await pubsub.get_message(timeout=poll)
            now = loop.time()
            if message is not None:
                last_seen, ping_sent = now, None
                kind = message.get("type")
                if kind == "subscribe":
                    if not self._subscribed.is_set():
                        log.info("command listener subscribed to %s", self.channel)
                    self._subscribed.set()
                    # Every (re)subscription, redis-py's silent reconnects included, may follow a gap in
                    # which commands were lost: the handler reconciles from the state.
                    await self._deliver(json.dumps({"op": "resync"}))
                elif kind == "message":
                    await self._deliver(message.get("data"))
                continue
            if ping_sent is not None and now - ping_sent > self._heartbeat:
                raise redis_errors.TimeoutError("no reply to PING on the command channel")
            if ping_sent is None and now - last_seen > self._heartbeat:
                await pubsub.ping()
                ping_sent = now

    async def _deliver(self, data: object) -> None:
        try:
            command = json.loads(data) if isinstance(data, str | bytes) else None
        except ValueError:
            command = None
        if not isinstance(command, dict):
            log.warning("ignored a malformed command on %s", self.channel)
            return
        await deliver(self._handler, command)

    # -- consoles ---------------------------------------------------------------------------------

    def _console_keys(self, record: ConsoleRecord) -> list[str]:
        return [
            self._key("consoles"),
            self._key("user-consoles", record.user),
            self._key("console", record.id),
        ]

    async def console_acquire(self, record: ConsoleRecord, *, per_user: int, global_max: int) -> str | None:
        refusal = await self._call(
            self._acquire(
                keys=self._console_keys(record),
                args=[record.id, _encode(record), _ms(self.console_ttl), per_user, global_max],
            )
        )
        return str(refusal) if refusal else None

    async def console_update(self, record: ConsoleRecord) -> None:
        await self._call(
            self._update(
                keys=[*self._console_keys(record), self._key("released", record.id)],
                args=[record.id, _encode(record), _ms(self.console_ttl)],
            )
        )

    async def console_release(self, console_id: str) -> None:
        await self._call(
            self._release(
                keys=[
                    self._key("consoles"),
                    self._key("console", console_id),
                    self._key("released", console_id),
                    self._key("user-consoles", ""),
                ],
                args=[console_id, _ms(self.console_ttl)],
            )
        )

    async def consoles(self) -> list[ConsoleRecord]:
        """Members of the global set whose record key still exists; an expired record reads as nil."""
        with _translated():
            ids = await self._client.zrange(self._key("consoles"), 0, -1)
            records: list[ConsoleRecord] = []
            for start in range(0, len(ids), _MGET_CHUNK):
                chunk = ids[start : start + _MGET_CHUNK]
                values = await self._client.mget([self._key("console", i) for i in chunk])
                records.extend(r for r in map(_decode, values) if r is not None)
        return records

    # -- locks, revocations, rates ----------------------------------------------------------------

    async def lock_user(self, user: str, reason: str) -> None:
        await self._call(self._client.hset(self._key("locks"), user, reason))

    async def unlock_user(self, user: str) -> None:
        await self._call(self._client.hdel(self._key("locks"), user))

    async def locked_users(self) -> dict[str, str]:
        return await self._call(self._client.hgetall(self._key("locks")))

    async def is_locked(self, user: str) -> bool:
        return bool(await self._call(self._client.hexists(self._key("locks"), user)))

    async def revoke_session(self, sid: str, ttl: float) -> None:
        if ttl <= 0:
            return
        await self._call(self._client.set(self._key("revoked", sid), "1", px=_ms(ttl)))

    async def is_revoked(self, sid: str) -> bool:
        return bool(await self._call(self._client.exists(self._key("revoked", sid))))

    async def revoked_sessions(self, sids: Collection[str]) -> set[str]:
        wanted = list(sids)
        if not wanted:
            return set()
        with _translated():
            pipe = self._client.pipeline(transaction=False)
            for sid in wanted:
                pipe.exists(self._key("revoked", sid))
            flags = await pipe.execute()
        return {sid for sid, flag in zip(wanted, flags, strict=True) if flag}

    async def request_termination(self, console_id: str, command: Command, ttl: float) -> None:
        value = json.dumps(command, separators=(",", ":"))
        await self._call(self._client.set(self._key("terminate", console_id), value, px=_ms(ttl)))

    async def termination_requests(self, console_ids: Collection[str]) -> dict[str, Command]:
        ids = list(console_ids)
        commands = await self._json_objects([self._key("terminate", i) for i in ids])
        return {i: command for i, command in zip(ids, commands, strict=True) if command is not None}

    async def record_groups(self, user: str, method: str, groups: Sequence[str], ttl: float) -> None:
        value = json.dumps({"groups": list(groups)}, separators=(",", ":"))
        await self._call(self._client.set(self._key("groups", method, user), value, px=_ms(ttl)))

    async def recorded_groups(self, users: Collection[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
        wanted = list(users)
        found = await self._json_objects([self._key("groups", method, user) for user, method in wanted])
        return {
            u: [str(g) for g in doc["groups"]]
            for u, doc in zip(wanted, found, strict=True)
            if doc is not None and isinstance(doc.get("groups"), list)
        }

    async def access_request_put(self, request: AccessRequest, ttl: float) -> None:
        value = json.dumps(request.to_dict(), separators=(",", ":"))
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._key("access", request.id), value, px=_ms(ttl))
            pipe.sadd(self._key("access-index"), request.id)
            await self._call(pipe.execute())

    async def access_requests(self) -> list[AccessRequest]:
        """Lapsed requests leave the index as they are found missing (each key carries its own TTL)."""
        ids = sorted(str(i) for i in await self._call(self._client.smembers(self._key("access-index"))))
        docs = await self._json_objects([self._key("access", i) for i in ids])
        gone = [i for i, doc in zip(ids, docs, strict=True) if doc is None]
        if gone:
            await self._call(self._client.srem(self._key("access-index"), *gone))
        found = []
        for doc in docs:
            if doc is not None:
                with contextlib.suppress(TypeError, ValueError):
                    found.append(AccessRequest.from_dict(doc))
        return sorted(found, key=lambda r: r.created)

    async def access_request_decide(self, decided: AccessRequest, ttl: float) -> bool:
        key = self._key("access", decided.id)
        raw = await self._call(self._client.get(key))
        doc = _json_object(raw)
        if doc is None or doc.get("status") != "pending":
            return False
        value = json.dumps(decided.to_dict(), separators=(",", ":"))
        keys = [key, self._key("access-index")]
        won = await self._call(self._decide(keys=keys, args=[raw, value, _ms(ttl), decided.id]))
        return bool(won)

    # -- watchers: `<p>watcher:<console>:<watch>` (JSON, own TTL) indexed by the set `<p>watchers:<console>`,
    # whose TTL only grows to cover its longest entry; an id whose key lapsed leaves the set when read.

    async def watcher_put(self, watcher: Watcher, ttl: float) -> None:
        value = json.dumps(watcher.to_dict(), separators=(",", ":"))
        index = self._key("watchers", watcher.console_id)
        with _translated():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._key("watcher", watcher.console_id, watcher.id), value, px=_ms(ttl))
                pipe.sadd(index, watcher.id)
                await pipe.execute()
        await self._extend(index, ttl)

    async def _extend(self, key: str, ttl: float) -> None:
        """Make `key` live at least `ttl` more seconds (never shorten it)."""
        with _translated():
            if await self._client.pttl(key) < _ms(ttl):
                await self._client.pexpire(key, _ms(ttl))

    async def watchers(self, console_ids: Collection[str]) -> dict[str, list[Watcher]]:
        wanted = list(console_ids)
        if not wanted:
            return {}
        with _translated():
            pipe = self._client.pipeline(transaction=False)
            for console_id in wanted:
                pipe.smembers(self._key("watchers", console_id))
            members = await pipe.execute()
        found: dict[str, list[Watcher]] = {}
        for console_id, ids in zip(wanted, members, strict=True):
            ids = sorted(str(i) for i in ids)
            docs = await self._json_objects([self._key("watcher", console_id, i) for i in ids])
            gone = [i for i, doc in zip(ids, docs, strict=True) if doc is None]
            if gone:
                await self._call(self._client.srem(self._key("watchers", console_id), *gone))
            entries = []
            for doc in docs:
                if doc is not None:
                    with contextlib.suppress(TypeError, ValueError):
                        entries.append(Watcher.from_dict(doc))
            if entries:
                found[console_id] = sorted(entries, key=lambda w: w.requested)
        return found

    async def watcher_decide(self, decided: Watcher, ttl: float) -> bool:
        key = self._key("watcher", decided.console_id, decided.id)
        raw = await self._call(self._client.get(key))
        doc = _json_object(raw)
        if doc is None or doc.get("status") != "pending":
            return False
        value = json.dumps(decided.to_dict(), separators=(",", ":"))
        keys = [key, self._key("watchers", decided.console_id)]
        won = await self._call(self._decide(keys=keys, args=[raw, value, _ms(ttl), decided.id]))
        if won:
            await self._extend(keys[1], ttl)
        return bool(won)

    async def _json_objects(self, keys: list[str]) -> list[dict[str, Any] | None]:
        """MGET in chunks: each value as a JSON object, or None when missing or unreadable."""
        values: list[dict[str, Any] | None] = []
        with _translated():
            for start in range(0, len(keys), _MGET_CHUNK):
                chunk = await self._client.mget(keys[start : start + _MGET_CHUNK])
                values += [_json_object(raw) for raw in chunk]
        return values

    async def take_token(self, key: str, *, rate: float, burst: int) -> float | None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        wait = await self._call(self._take(keys=[self._key("bucket", key)], args=[repr(float(rate)), burst]))
        return float(wait) if wait else None

    async def incr(self, key: str, window: float) -> int:
        return int(await self._call(self._incr(keys=[self._key("count", key)], args=[_ms(window)])))

    async def reset(self, key: str) -> None:
        await self._call(self._client.delete(self._key("count", key)))

    async def ping(self) -> None:
        await self._call(self._client.ping())


def _encode(record: ConsoleRecord) -> str:
    return json.dumps(record.to_dict(), separators=(",", ":"))


def _decode(raw: str | None) -> ConsoleRecord | None:
    if raw is None:
        return None
    try:
        return ConsoleRecord.from_dict(json.loads(raw))
    except (ValueError, TypeError):
        log.warning("skipped an unreadable console record")
        return None


def _json_object(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"sentinels: expected host:port, got {value!r}")
    return host.strip("[]"), int(port)
