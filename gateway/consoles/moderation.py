"""Moderated consoles, sans-IO: the watchers in, whether the operator's input passes out.

A policy rule with `moderation` (gateway/policy.py `Moderation`) opens control consoles whose input the
gateway holds (the RFB filter drops it as in view-only, rfb.ClientMessageFilter.hold) until `count`
moderators watch: joined observers, other than the operator, in one of the rule's groups. The machine is
fed the console's watcher list whenever it changes (from the shared state, so the same on every replica)
and the time; it answers with a `Transition` when the state changes:

    waiting --enough moderators--> moderated --one left, on_leave="pause"--> paused --back--> moderated
                                   moderated --one left, on_leave="terminate"--> leaving --grace--> ended
                                                                               leaving --back--> moderated
    any --a moderator ends it--> ended

"leaving" holds input like "paused" for the rule's `grace` (a moderator's page reloading is a leave and a
join), then ends the console. The machine reads no clock and touches no socket: the caller applies a
transition (hold or release the input, tell the page, audit, close) and ticks it at `deadline`
(tests/unit/test_moderation.py, with a fake clock).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final, Literal

from gateway.policy import Moderation

__all__ = ["HELD_STATES", "ModerationMachine", "State", "Transition", "Watching", "may_moderate"]

State = Literal["waiting", "moderated", "paused", "leaving", "ended"]
HELD_STATES: Final = frozenset({"waiting", "paused", "leaving"})  # input held in these
JOINED: Final = "joined"  # the watcher status that counts (pending/approved/refused/left do not)


@dataclass(frozen=True, slots=True)
class Watching:
    """One watcher of the console, as moderation needs it."""

    user: str
    name: str  # what the page shows
    groups: tuple[str, ...]
    status: str  # pending | approved | refused | joined | left


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of moderation state, with everything the page, the audit and the relay need."""

    state: State
    moderators: tuple[str, ...]  # the names of the moderators watching now, in join order
    needed: int  # how many the rule wants
    reason: str  # the state in words, for the page and the audit
    left: tuple[str, ...] = ()  # who left, when that caused it
    by: str = ""  # the moderator who ended the console

    @property
    def held(self) -> bool:
        return self.state in HELD_STATES

    def notice(self) -> dict[str, object]:
        """The page's notice (a JSON text frame on the owner's console)."""
        return {
            "type": "moderation",
            "state": self.state,
            "held": self.held,
            "moderators": list(self.moderators),
            "needed": self.needed,
            "reason": self.reason,
        }


def may_moderate(groups: Collection[str], owner: str, user: str, user_groups: Collection[str]) -> bool:
    """Whether `user` (in `user_groups`) counts as a moderator of `owner`'s console, whose rule names the
    moderators' `groups` (ConsoleRecord.moderation), once they joined it."""
    return user != owner and not set(user_groups).isdisjoint(groups)


def _names(names: Iterable[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class ModerationMachine:
    """One moderated console's state. `owner` never moderates their own console."""

    __slots__ = ("_deadline", "_grace", "_moderators", "owner", "rule", "state")

    def __init__(self, rule: Moderation, owner: str) -> None:
        self.rule = rule
        self.owner = owner
        self.state: State = "waiting"
        self._moderators: dict[str, str] = {}  # user -> name, in join order
        self._grace = rule.grace
        self._deadline: float | None = None

    @property
    def held(self) -> bool:
        return self.state in HELD_STATES

    @property
    def deadline(self) -> float | None:
        """When to `tick` next (the end of a grace period), or None."""
        return self._deadline

    @property
    def moderators(self) -> tuple[str, ...]:
        return tuple(self._moderators.values())

    def is_moderator(self, watcher: Watching) -> bool:
        """A joined watcher, not the owner, in one of the rule's groups."""
        return watcher.status == JOINED and may_moderate(
            self.rule.groups, self.owner, watcher.user, watcher.groups
        )

    def start(self) -> Transition:
        """The state the console opens in: waiting, input held."""
        return self._transition("waiting")

    def watchers(self, watchers: Iterable[Watching], now: float) -> Transition | None:
        """The watcher list changed (or was re-read): the new state, if it changed or the moderators
        watching did (the page names them), else None."""
        if self.state == "ended":
            return None
        present: dict[str, str] = {}
        for watcher in watchers:
            if self.is_moderator(watcher):
                present.setdefault(watcher.user, watcher.name)
        # Join order: those already present first, newcomers after them.
        ordered = {u: n for u, n in self._moderators.items() if u in present}
        ordered.update((u, n) for u, n in present.items() if u not in ordered)
        left = tuple(n for u, n in self._moderators.items() if u not in present)
        changed = list(ordered) != list(self._moderators)
        self._moderators = ordered
        enough = len(ordered) >= self.rule.count
        if enough:
            if self.state != "moderated" or changed:
                return self._transition("moderated")
            return None
        if self.state == "waiting" or self.state == "paused" or self.state == "leaving":
            return self._transition(self.state, left) if changed else None
        # moderated, and now too few
        if self.rule.on_leave == "pause":
            return self._transition("paused", left)
        if self._grace <= 0:
            return self._end(self._left_reason(left, ended=True), left)
        self._deadline = now + self._grace
        return self._transition("leaving", left)

    def tick(self, now: float) -> Transition | None:
        """The time is `now`: a grace period that ran out ends the console."""
        if self.state != "leaving" or self._deadline is None or now < self._deadline:
            return None
        return self._end("This console closed: no moderator came back in time", ())

    def end_by(self, name: str) -> Transition | None:
        """A moderator (`name`) ends the console; None once it has ended."""
        if self.state == "ended":
            return None
        return self._end(f"Ended by moderator {name}", (), by=name)

    # -- words ---------------------------------------------------------------------------------------

    def _transition(self, state: State, left: tuple[str, ...] = ()) -> Transition:
        if state != "leaving":
            self._deadline = None
        self.state = state
        return Transition(state, self.moderators, self.rule.count, self._reason(state, left), left)

    def _end(self, reason: str, left: tuple[str, ...], *, by: str = "") -> Transition:
        self.state = "ended"
        self._deadline = None
        return Transition("ended", self.moderators, self.rule.count, reason, left, by)

    def _reason(self, state: State, left: tuple[str, ...]) -> str:
        rule = self.rule
        if state == "moderated":
            return f"Moderated by {_names(self.moderators)}"
        missing = rule.count - len(self._moderators)
        groups = " or ".join(rule.groups)
        wait = f"waiting for {missing} moderator{'' if missing == 1 else 's'} ({groups}) to join"
        if state == "waiting":
            return "Input held: " + wait
        if state == "paused":
            return self._left_reason(left, ended=False) + "; " + wait
        return (
            self._left_reason(left, ended=False) + f"; the console closes unless a moderator joins ({groups})"
        )

    @staticmethod
    def _left_reason(left: tuple[str, ...], *, ended: bool) -> str:
        who = f"{_names(left)} left" if left else "a moderator left"
        return f"Closed because {who}" if ended else f"Input paused because {who}"
