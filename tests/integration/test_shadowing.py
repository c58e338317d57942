"""Joining a live console as an observer (docs/shadowing.md), over the real gateway, the demo cloud and
its real websockify: approval and refusal over HTTP, the timeout, the end of the owner's console, and two
gateway processes on one real Redis where the owner's replica hears no pub/sub at all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.consoles.codes import CLOSE_JOIN_REFUSED, CLOSE_JOIN_TIMEOUT, CLOSE_OWNER_CLOSED
from tests.integration import test_missed_commands as missed
from tests.support.gateway import ConsoleRefused, Operator, RecordingTransport, RunningGateway
from tests.support.polling import wait_for
from tests.support.rfb_client import RFBClient

SignIn = Callable[..., Awaitable[Operator]]
Pair = missed.Pair
signed_in = missed.signed_in
# Two gateway processes on one Redis, B deaf to pub/sub on demand: test_missed_commands.py's fixtures.
pair = missed.pair
operators = missed.operators
WATCH = {"name": "support-watch", "groups": ["support"], "permission": "none", "join": True}


def watchers(approval: str, timeout: float = 120.0) -> Callable[[dict[str, Any]], None]:
    def tweak(data: dict[str, Any]) -> None:
        data["policy"]["rules"].append({**WATCH, "join_approval": approval})
        data.setdefault("console", {})["join_approval_timeout"] = timeout

    return tweak


class Owner:
    """The owner's console: handshaken, then read in the background so its notices are collected."""

    def __init__(self, op: Operator, transport: RecordingTransport, client: RFBClient) -> None:
        self.op, self.transport, self.client = op, transport, client
        self.frames = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, op: Operator, server: str = "web-01") -> Owner:
        transport = await op.open_console(server)
        client = RFBClient(transport)
        await client.handshake()
        assert (await client.full_update()).rects
        return cls(op, transport, client)

    @property
    def console_id(self) -> str:
        return str(self.transport.notices[0]["console_id"])

    async def _read(self) -> None:
        while await self.transport.recv() is not None:
            self.frames += 1

    async def watchers_notice(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next(
                (n for n in self.transport.notices if n.get("type") == "watchers" and predicate(n)), None
            )

        return await wait_for(found, 10, what, detail=lambda: str(self.transport.notices))

    async def still_relaying(self) -> None:
        """The owner's console is up and answers an update request."""
        assert self.transport.close_code is None and not self.transport.ws.closed
        before = self.frames
        self.client.proto.request_update(False)
        await self.transport.send(self.client.proto.data_to_send())
        await wait_for(lambda: self.frames > before, 10, "the owner's console to answer")

    async def close(self) -> None:
        await self.transport.ws.close()
        with contextlib.suppress(Exception):
            await self._reader


@pytest.fixture
async def owners() -> AsyncIterator[list[Owner]]:
    made: list[Owner] = []
    yield made
    for owner in made:
        await owner.close()


async def join(op: Operator, console_id: str) -> RecordingTransport:
    """The observer's socket and its first notice (join_pending or hello); ConsoleRefused if closed."""
    ws = await op.http.ws_connect(op.gateway.ws_url(f"/ws/join/{console_id}"), origin=op.gateway.origin)
    transport = RecordingTransport(ws, op.seen)
    await transport.hello()
    return transport


async def watched(demo: Operator, viewer: Operator, owners: list[Owner]) -> tuple[Owner, RecordingTransport]:
    """The start of most stories here: demo's console open, and viewer's page asking to watch it (its first
    notice read)."""
    owner = await Owner.open(demo)
    owners.append(owner)
    return owner, await join(viewer, owner.console_id)


async def frames_until_closed(transport: RecordingTransport) -> list[bytes]:
    frames = []
    async with asyncio.timeout(15):
        while (data := await transport.recv()) is not None:
            frames.append(data)
    return frames


async def decide(op: Operator, owner: Owner, watch_id: str, decision: str) -> tuple[int, Any]:
    return await op.post(f"/api/consoles/{owner.console_id}/watchers/{watch_id}", {"decision": decision})


def pending(notice: dict[str, Any]) -> bool:
    return any(w["status"] == "pending" for w in notice["watchers"])


async def test_an_approved_observer_watches_view_only_and_the_owner_hears_of_it(
    gateways: Callable[..., Awaitable[RunningGateway]], sign_in: SignIn, owners: list[Owner]
) -> None:
    gateway = await gateways(watchers("owner"))
    demo, viewer = await sign_in(gateway, "demo"), await sign_in(gateway, "viewer")
    owner, observer = await watched(demo, viewer, owners)
    assert observer.notices[0] == {"type": "join_pending", "owner": "demo", "timeout": 120.0}
    asked = await owner.watchers_notice(pending, "the request on the owner's page")
    [request] = asked["watchers"]
    assert (request["user"], request["since"]) == ("viewer", None)
    assert {"event": "requested", "user": "viewer", "name": "viewer"} in asked["events"]

    # Nobody but the owner decides, and never without the CSRF token.
    assert (await decide(viewer, owner, request["id"], "approve"))[0] == 403
    token, demo.csrf = demo.csrf, ""
    assert (await decide(demo, owner, request["id"], "approve"))[0] == 403
    demo.csrf = token
    assert await decide(demo, owner, request["id"], "approve") == (
        200,
        {"watch_id": request["id"], "status": "approved"},
    )
    assert (await decide(demo, owner, request["id"], "refuse"))[0] == 409  # decided is decided

    hello = await observer.hello()
    assert hello["type"] == "hello" and hello["permission"] == "view"
    assert hello["observer"] == {"owner": "demo", "console_id": owner.console_id, "moderator": False}
    client = RFBClient(observer)
    await client.handshake()
    assert (await client.full_update()).rects
    joined = await owner.watchers_notice(
        lambda n: any(w["status"] == "joined" for w in n["watchers"]), "the observer on the owner's list"
    )
    assert joined["watchers"][0]["since"] > 0
    opened = await gateway.wait_for_audit("observer_joined", user="viewer", watching=owner.console_id)
    await gateway.wait_for_audit("join_approved", user="demo", target_user="viewer", watch_id=request["id"])
    await owner.still_relaying()

    await observer.ws.close()
    await owner.watchers_notice(
        lambda n: {"event": "left", "user": "viewer", "name": "viewer"} in n["events"], "the leave notice"
    )
    left = await gateway.wait_for_audit("observer_left", console_id=opened["console_id"])
    assert left["closed_by"] == "browser"
    closed = await gateway.wait_for_audit("console_closed", console_id=opened["console_id"])
    assert (closed["permission"], closed["watching"]) == ("view", owner.console_id)
    await owner.still_relaying()


async def test_a_refused_join_never_sees_a_frame(
    gateways: Callable[..., Awaitable[RunningGateway]], sign_in: SignIn, owners: list[Owner]
) -> None:
    gateway = await gateways(watchers("owner"))
    demo, viewer = await sign_in(gateway, "demo"), await sign_in(gateway, "viewer")
    owner, observer = await watched(demo, viewer, owners)
    [request] = (await owner.watchers_notice(pending, "the request"))["watchers"]
    assert (await decide(demo, owner, request["id"], "refuse"))[0] == 200
    assert await frames_until_closed(observer) == []
    assert observer.close_code == CLOSE_JOIN_REFUSED
    assert observer.close_reason == "The console's owner refused your request to watch"
    await gateway.wait_for_audit("join_refused", user="demo", target_user="viewer", closed_by="owner")
    await owner.still_relaying()


async def test_an_unanswered_join_times_out_without_a_frame(
    gateways: Callable[..., Awaitable[RunningGateway]], sign_in: SignIn, owners: list[Owner]
) -> None:
    gateway = await gateways(watchers("owner", timeout=1.0))
    demo, viewer = await sign_in(gateway, "demo"), await sign_in(gateway, "viewer")
    owner, observer = await watched(demo, viewer, owners)
    assert await frames_until_closed(observer) == []
    assert observer.close_code == CLOSE_JOIN_TIMEOUT
    await gateway.wait_for_audit("join_refused", user="viewer", target_user="demo", closed_by="timeout")
    # The request leaves the owner's list (refused entries are not listed).
    await owner.watchers_notice(lambda n: not n["watchers"], "the request gone from the owner's list")


async def test_a_page_that_leaves_while_waiting_withdraws_its_request(
    gateways: Callable[..., Awaitable[RunningGateway]], sign_in: SignIn, owners: list[Owner]
) -> None:
    gateway = await gateways(watchers("owner"))
    demo, viewer = await sign_in(gateway, "demo"), await sign_in(gateway, "viewer")
    owner, observer = await watched(demo, viewer, owners)
    await owner.watchers_notice(pending, "the request")
    await observer.ws.close()
    await owner.watchers_notice(
        lambda n: not n["watchers"] and {"event": "left", "user": "viewer", "name": "viewer"} in n["events"],
        "the withdrawn request gone from the owner's list",
    )
    # Its console left the ledger at once: the slot it held under the limits is free again.
    await wait_for(lambda: len(gateway.gw.registry.local) == 1, 5, "the waiting console released")
    assert gateway.gw.metrics.observers.labels(state="pending")._value.get() == 0


async def test_without_approval_the_observer_joins_at_once_and_ends_with_the_owners_console(
    gateways: Callable[..., Awaitable[RunningGateway]], sign_in: SignIn, owners: list[Owner]
) -> None:
    gateway = await gateways(watchers("none"))
    demo, viewer = await sign_in(gateway, "demo"), await sign_in(gateway, "viewer")
    owner, observer = await watched(demo, viewer, owners)
    assert observer.notices[0]["type"] == "hello"
    client = RFBClient(observer)
    await client.handshake()
    await owner.close()
    code = None
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            while await observer.recv() is not None:
                pass
        code = observer.close_code
    assert code == CLOSE_OWNER_CLOSED
    left = await gateway.wait_for_audit("observer_left", user="viewer")
    assert left["closed_by"] == "owner_closed"


async def test_an_observer_is_not_cut_for_idleness_while_the_owner_works(
    gateways: Callable[..., Awaitable[RunningGateway]], sign_in: SignIn, owners: list[Owner]
) -> None:
    """Watching is not typing: the idle timeout that ends a console nobody uses does not end a view that
    lives as long as the console it watches."""

    def short_idle(data: dict[str, Any]) -> None:
        watchers("none")(data)
        data["console"].update(idle_timeout=2.0, idle_warning=1.0)

    gateway = await gateways(short_idle)
    demo, viewer = await sign_in(gateway, "demo"), await sign_in(gateway, "viewer")
    owner, observer = await watched(demo, viewer, owners)
    assert observer.notices[0]["idle_timeout"] == 0
    client = RFBClient(observer)
    await client.handshake()

    async def working() -> None:
        while True:  # the owner moves the pointer: input, so the owner's console is not idle
            owner.client.proto.pointer_event(0, 10, 10)
            await owner.transport.send(owner.client.proto.data_to_send())
            await asyncio.sleep(0.3)

    worker = asyncio.create_task(working())
    try:
        with pytest.raises(TimeoutError):  # three idle timeouts pass without the view closing
            async with asyncio.timeout(6):
                while await observer.recv() is not None:
                    pass
        assert observer.close_code is None
        assert not [n for n in observer.notices if n.get("type") == "idle_warning"]
        await owner.still_relaying()
    finally:
        worker.cancel()


async def test_a_re_decision_keeps_an_observer_who_may_still_watch_and_ends_one_who_may_not(
    gateways: Callable[..., Awaitable[RunningGateway]], sign_in: SignIn, owners: list[Owner]
) -> None:
    """A reload, an identity change or an ended grant re-decides live consoles: an observer's is judged by
    `join`, not by a console permission of their own (here the viewer has none: a join-only rule)."""

    def join_only(data: dict[str, Any]) -> None:
        for rule in data["policy"]["rules"]:
            if rule["name"] == "demo-support-view":
                rule.update(permission="none", join=True, join_approval="none")

    gateway = await gateways(join_only)
    demo, viewer = await sign_in(gateway, "demo"), await sign_in(gateway, "viewer")
    owner, observer = await watched(demo, viewer, owners)
    assert observer.notices[0]["type"] == "hello"
    assert gateway.gw.redecide(lambda record: record.groups) == 0  # the same groups: still allowed
    assert gateway.gw.redecide(lambda record: [] if record.watching else record.groups) == 1
    await frames_until_closed(observer)
    assert (observer.close_code, observer.close_reason) == (4003, "You may no longer watch this console")
    await owner.still_relaying()


async def test_who_may_not_join_is_refused_before_anything_is_asked(
    gateways: Callable[..., Awaitable[RunningGateway]], sign_in: SignIn, owners: list[Owner]
) -> None:
    gateway = await gateways()  # no join rule: the operator may not watch the viewer's console
    demo, viewer = await sign_in(gateway, "demo"), await sign_in(gateway, "viewer")
    owner = await Owner.open(viewer)
    owners.append(owner)
    with pytest.raises(ConsoleRefused) as refused:
        await join(demo, owner.console_id)
    assert refused.value.code == 4403
    with pytest.raises(ConsoleRefused) as unknown:
        await join(demo, "no-such-console")
    assert unknown.value.code == 4404
    # The admin always may, without approval.
    admin = await sign_in(gateway, "admin")
    assert (await join(admin, owner.console_id)).notices[0]["type"] == "hello"


@pytest.mark.parametrize("pair", [watchers("owner")], indirect=True)
async def test_approval_across_replicas_reaches_an_owner_replica_deaf_to_pub_sub(
    pair: Pair, operators: list[Operator]
) -> None:
    """The owner's console runs on B, which hears no command; the observer joins through A and the owner
    answers through A as well: B learns of the request, and A of the answer, from the shared state."""
    demo = await signed_in(operators, pair.b, "demo")
    viewer = await signed_in(operators, pair.a, "viewer")
    owner = await Owner.open(demo)
    try:
        await pair.cut_b_off()
        observer = await join(viewer, owner.console_id)
        # B misses the command: its reconciliation brings the request to the owner's page.
        asked = await owner.watchers_notice(pending, "the request on B by reconciliation")
        [request] = asked["watchers"]
        at_a = Operator(pair.a)  # type: ignore[arg-type]
        at_a.http, at_a.csrf = demo.http, demo.csrf
        assert (
            await at_a.post(
                f"/api/consoles/{owner.console_id}/watchers/{request['id']}", {"decision": "approve"}
            )
        )[0] == 200
        hello = await observer.hello()
        assert hello["observer"] == {"owner": "demo", "console_id": owner.console_id, "moderator": False}
        await owner.watchers_notice(
            lambda n: any(w["status"] == "joined" for w in n["watchers"]), "the join on B, within a sync"
        )
        await owner.still_relaying()
    finally:
        await owner.close()
