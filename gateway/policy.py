"""Access policy: who may open which server's console, and how (view or control).

Rules are data (``[[policy.rules]]`` in the config); a decision always carries the rule that made it and a
reason in words, so that the audit trail and ``novnc-gateway explain`` can say *why*, not only *what*.
The combination (deny by default, an explicit deny wins, otherwise the most specific rule, then the
higher permission) is documented with examples in docs/policy.md.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.durations import Duration, format_duration

if TYPE_CHECKING:
    from gateway.clouds.base import Server

__all__ = [
    "AdminConfig",
    "Decision",
    "Demands",
    "JoinDecision",
    "Moderation",
    "ModerationConfig",
    "Permission",
    "Policy",
    "PolicyConfig",
    "Requestable",
    "Review",
    "ReviewerConfig",
    "RuleConfig",
    "explain",
]

_GLOB_CHARS = re.compile(r"[*?\[]")
RecordMode = Literal["required", "optional", "off"]  # a console's recording (docs/recording.md)


class Permission(enum.StrEnum):
    """Ordered: NONE < VIEW < CONTROL (string comparison would order them alphabetically)."""

    NONE = "none"
    VIEW = "view"
    CONTROL = "control"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __lt__(self, other: object) -> bool:
        return self.rank < _coerce(other).rank

    def __le__(self, other: object) -> bool:
        return self.rank <= _coerce(other).rank

    def __gt__(self, other: object) -> bool:
        return self.rank > _coerce(other).rank

    def __ge__(self, other: object) -> bool:
        return self.rank >= _coerce(other).rank


_RANK = {Permission.NONE: 0, Permission.VIEW: 1, Permission.CONTROL: 2}


def _coerce(other: object) -> Permission:
    # Plain strings compare by rank too, so `decision.permission >= "view"` cannot go alphabetical.
    if isinstance(other, str):
        return Permission(other)
    raise TypeError(f"cannot compare Permission with {type(other).__name__}")


def _check_entries(values: list[str], what: str) -> list[str]:
    for value in values:
        if not value.strip():
            raise ValueError(f"{what}: empty entry")
        if value != value.strip():
            raise ValueError(f"{what}: {value!r} has leading or trailing spaces")
    return values


class ModerationConfig(BaseModel):
    """A rule's ``moderation`` table: control waits for `count` moderators from `groups` to watch.

    Exact group names, like approvers: who may unlock control of a console is not for a pattern to widen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: list[str]
    count: int = Field(default=1, ge=1, le=10)
    on_leave: Literal["pause", "terminate"] = "pause"  # when moderators drop below `count`
    grace: Duration = 10.0  # on_leave = "terminate": held this long first (a moderator's page reloading)

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("moderation.groups: give at least one group")
        _check_entries(value, "moderation.groups")
        for group in value:
            if _GLOB_CHARS.search(group):
                raise ValueError(f"moderation.groups: {group!r} looks like a glob; give exact groups")
        return value


def _check_name(value: str, kind: str) -> str:
    """A rule's or reviewer's name: it is how audit lines and errors point at the table, so no blanks."""
    if not value.strip() or value != value.strip():
        raise ValueError(f"{kind} name {value!r} must be non-empty without surrounding spaces")
    return value


def _check_who(users: list[str], groups: list[str], where: str) -> None:
    """A table that names nobody would silently grant nothing; everyone must be said explicitly."""
    if not users and not groups:
        raise ValueError(f'{where}: give users or groups (use users = ["*"] for everyone signed in)')


def _check_tags(tags: list[str], where: str) -> None:
    for tag in tags:
        key = tag.split("=", 1)[0]
        if not key.strip() or key != key.strip():
            raise ValueError(f'{where}: tags: {tag!r} needs a key ("key" or "key=value")')


class _Selected(BaseModel):
    """What a console rule and a reviewer entry share: a name, who (users, groups), and the selectors that
    pick servers, matched alike."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    clouds: list[str] = Field(default_factory=list)
    projects: list[str] = Field(default_factory=list)
    server_ids: list[str] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)


class RuleConfig(_Selected):
    """One ``[[policy.rules]]`` table.

    Within one selector the entries are alternatives (any may match); ``tags`` and ``metadata`` are
    conditions (all must hold), like label selectors; across selectors every given one must match.
    """

    regions: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    # "none": the rule grants no console of its own (a rule only for `join`).
    permission: Literal["control", "view", "deny", "none"]
    # What a console this rule grants demands of the user before it opens (docs/policy.md, "Demands").
    justification: Literal["none", "required"] = "none"
    ticket_pattern: str | None = None  # a word of the justification must match it (re.search)
    clipboard_copy: Literal["allow", "deny"] = "allow"  # console -> browser
    clipboard_paste: Literal["allow", "deny"] = "allow"  # browser -> console
    clipboard_max: int | None = Field(default=None, ge=1)  # bytes, as sent, either direction
    # Step-up for control sessions: a sign-in at most this old, of one of these classes (OIDC acr).
    max_auth_age: Duration | None = None
    acr_values: list[str] = Field(default_factory=list)
    # Just in time: the rule grants only through a request that one of these groups approved, for at
    # most `max_grant` (docs/policy.md, "Just-in-time access").
    approvers: list[str] = Field(default_factory=list)
    max_grant: Duration | None = None
    # Session recording (docs/recording.md): unset takes `[recording] default` / `record_input`.
    record: RecordMode | None = None
    record_input: bool | None = None
    # Control only while moderators watch (docs/policy.md, "Moderated consoles").
    moderation: ModerationConfig | None = None
    # Shadowing (docs/shadowing.md): the users this rule names may watch live consoles on its servers,
    # view-only; "owner": each join waits for the console owner's approval.
    join: bool = False
    join_approval: Literal["owner", "none"] = "owner"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "rule")

    @model_validator(mode="after")
    def _shape(self) -> RuleConfig:
        where = f'policy rule "{self.name}"'
        _check_who(self.users, self.groups, where)
        selectors = ("users", "groups", "clouds", "projects", "regions", "server_ids", "names")
        for field in (*selectors, "acr_values", "approvers"):
            _check_entries(getattr(self, field), f"{where}: {field}")
        for group in self.approvers:
            if _GLOB_CHARS.search(group):
                raise ValueError(f"{where}: approvers: {group!r} looks like a glob; give exact groups")
        if self.max_grant is not None and not self.approvers:
            raise ValueError(f"{where}: max_grant needs approvers")
        if self.permission == "none" and not self.join:
            raise ValueError(
                f'{where}: permission = "none" grants nothing; it is for a rule with join = true'
            )
        if self.join and self.permission == "deny":
            raise ValueError(f"{where}: a deny rule cannot grant join")
        if self.moderation is not None and self.permission != "control":
            raise ValueError(f'{where}: moderation holds control input; it needs permission = "control"')
        _check_tags(self.tags, where)
        for key in self.metadata:
            if not key.strip():
                raise ValueError(f"{where}: metadata: empty key")
        if self.ticket_pattern is not None:
            if self.justification != "required":
                raise ValueError(f'{where}: ticket_pattern needs justification = "required"')
            try:
                re.compile(self.ticket_pattern)
            except re.error as exc:
                problem = f"{where}: ticket_pattern is not a valid regular expression: {exc}"
                raise ValueError(problem) from None
        return self


class AdminConfig(BaseModel):
    """Who gets the gateway's own ``admin`` permission (the admin page and API).

    Exact names only: admin power should never be handed out by a pattern that might match more than meant.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _exact(self) -> AdminConfig:
        for field in ("users", "groups"):
            values = _check_entries(getattr(self, field), f"policy.admins.{field}")
            for value in values:
                if _GLOB_CHARS.search(value):
                    raise ValueError(
                        f"policy.admins.{field}: {value!r} looks like a glob; admins are exact names"
                    )
        return self


class ReviewerConfig(_Selected):
    """One ``[[policy.reviewers]]`` table: who may play and download the recordings of which servers.

    Separate from console rules: watching what someone did is a different power from opening the console
    (auditors need not be operators). Selectors match like a console rule's, against the server as it was
    recorded. ``typed_text`` adds the typed-text index (which can hold passwords) on top of playback.
    """

    typed_text: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "reviewer")

    @model_validator(mode="after")
    def _shape(self) -> ReviewerConfig:
        where = f'policy reviewer "{self.name}"'
        _check_who(self.users, self.groups, where)
        for field in ("users", "groups", "clouds", "projects", "server_ids", "names"):
            _check_entries(getattr(self, field), f"{where}: {field}")
        _check_tags(self.tags, where)
        return self


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[RuleConfig] = Field(default_factory=list)
    admins: AdminConfig = Field(default_factory=AdminConfig)
    reviewers: list[ReviewerConfig] = Field(default_factory=list)
    # Where a new access request is posted as JSON (a chat system's incoming webhook). It often carries
    # a secret in its path, so it is never logged.
    access_webhook: str | None = Field(default=None, repr=False)

    @field_validator("access_webhook")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^\s/]+/", value):
            raise ValueError("policy.access_webhook: an http(s) URL such as https://chat.example/hooks/...")
        return value

    @model_validator(mode="after")
    def _unique(self) -> PolicyConfig:
        for kind, entries in (("rule", self.rules), ("reviewer", self.reviewers)):
            seen: set[str] = set()
            for entry in entries:
                if entry.name in seen:
                    problem = f'policy {kind} "{entry.name}": the name is used by more than one {kind}'
                    raise ValueError(problem)
                seen.add(entry.name)
        return self


@dataclass(frozen=True, slots=True)
class Moderation:
    """A moderated rule's demand (gateway/consoles/moderation.py enforces it on the live console)."""

    groups: tuple[str, ...]
    count: int = 1
    on_leave: str = "pause"  # "pause" | "terminate"
    grace: float = 10.0  # seconds held before "terminate" closes

    def describe(self) -> str:
        who = f"{self.count} moderator{' is' if self.count == 1 else 's are'}"
        groups = " or ".join(f"group {g}" for g in self.groups)
        if self.on_leave == "pause":
            then = "input pauses"
        elif self.grace:
            then = f"the console closes unless one is back within {format_duration(self.grace)}"
        else:
            then = "the console closes"
        return f"moderation: input held until {who} watching ({groups}); when one leaves, {then}"


MAX_JUSTIFICATION = 200  # characters: a reason is a line, and it travels in audit lines and close reasons


@dataclass(frozen=True, slots=True)
class Demands:
    """What the deciding rule asks of the user before a console opens (none of it is a permission)."""

    justification: bool = False
    ticket_pattern: str | None = None
    copy: bool = True  # clipboard text may leave the console for the browser
    paste: bool = True  # ... and come in from it
    clipboard_max: int | None = None  # bytes, as sent; longer transfers are dropped
    max_auth_age: float | None = None  # seconds: control needs a sign-in at most this old
    acr_values: tuple[str, ...] = ()  # control needs a sign-in of one of these classes
    record: RecordMode = "off"  # required: no console unless it is recorded
    record_input: bool = False  # keys, pointer and clipboard are recorded too (only when recorded at all)
    moderation: Moderation | None = None  # control input held until moderators watch

    @property
    def recorded(self) -> bool:
        return self.record != "off"

    @property
    def step_up(self) -> bool:
        return self.max_auth_age is not None or bool(self.acr_values)

    def step_up_problem(self, *, auth_time: float | None, acr: str | None, now: float) -> str | None:
        """None when the sign-in (its time, None: unknown, and class) is enough for control here;
        otherwise what is missing, for the page (which sends the user through the provider again)."""
        if self.max_auth_age is not None and (auth_time is None or now - auth_time > self.max_auth_age):
            within = format_duration(self.max_auth_age)
            return f"This console needs a sign-in within the last {within}; sign in again"
        if self.acr_values and acr not in self.acr_values:
            return f"This console needs a stronger sign-in ({' or '.join(self.acr_values)}); sign in again"
        return None

    def justification_problem(self, text: str) -> str | None:
        """None when `text` is an acceptable reason; otherwise what is expected, in words for the page."""
        if not self.justification:
            return None
        text = text.strip()
        pattern = self.ticket_pattern
        ticket = f" with a ticket reference matching {pattern}" if pattern is not None else ""
        if not text:
            return f"A reason is required to open this console: say why{ticket}."
        if len(text) > MAX_JUSTIFICATION:
            return f"The reason must be at most {MAX_JUSTIFICATION} characters{ticket}."
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
            return f"The reason must be one line of text{ticket}."
        if self.ticket_pattern is not None and not any(
            re.search(self.ticket_pattern, word) for word in text.split()
        ):
            return f"The reason needs a ticket reference matching {self.ticket_pattern}."
        return None

    def describe(self) -> list[str]:
        """For `explain`: each demand in words."""
        out = []
        if self.justification:
            pattern = self.ticket_pattern
            out.append("a justification" + (f" (a ticket reference matching {pattern})" if pattern else ""))
        if not (self.copy and self.paste) or self.clipboard_max is not None:
            cap = f", at most {self.clipboard_max} bytes" if self.clipboard_max is not None else ""
            copy, paste = ("allowed" if ok else "denied" for ok in (self.copy, self.paste))
            out.append(f"clipboard: copy out {copy}, paste in {paste}{cap}")
        if self.step_up:
            parts = []
            if self.max_auth_age is not None:
                parts.append(f"a sign-in within the last {format_duration(self.max_auth_age)}")
            if self.acr_values:
                parts.append(f"of class {' or '.join(self.acr_values)}")
            out.append("for control, " + ", ".join(parts))
        if self.recorded:
            what = "screen and input" if self.record_input else "screen only, no input"
            out.append(f"recording: {self.record} ({what})")
        if self.moderation is not None:
            out.append(self.moderation.describe())
        return out


NO_DEMANDS = Demands()


def _demands(config: RuleConfig, record: RecordMode, record_input: bool) -> Demands:
    """The rule's demands; `record`/`record_input`: the global defaults where the rule is silent."""
    record = config.record or record
    demands = Demands(
        justification=config.justification == "required",
        ticket_pattern=config.ticket_pattern,
        copy=config.clipboard_copy == "allow",
        paste=config.clipboard_paste == "allow",
        clipboard_max=config.clipboard_max,
        max_auth_age=config.max_auth_age,
        acr_values=tuple(config.acr_values),
        record=record,
        record_input=(config.record_input if config.record_input is not None else record_input)
        and record != "off",
        moderation=_moderation(config.moderation),
    )
    return NO_DEMANDS if demands == NO_DEMANDS else demands


def _moderation(config: ModerationConfig | None) -> Moderation | None:
    if config is None:
        return None
    return Moderation(tuple(config.groups), config.count, config.on_leave, config.grace)


DEFAULT_MAX_GRANT = 3600.0  # seconds: how long an approved request may last, unless the rule says


@dataclass(frozen=True, slots=True)
class Requestable:
    """A just-in-time rule the user could ask for on a server: what it would grant, who approves, how long."""

    rule: str
    permission: Permission
    approvers: tuple[str, ...]
    max_grant: float


@dataclass(frozen=True, slots=True)
class JoinDecision:
    """Whether a user may watch live consoles on a server, and whether each join needs the owner's yes."""

    allowed: bool
    approval: bool  # the owner approves each join
    rule: str | None  # the deciding rule; "admins" for an admin no join rule matched; None: none
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    permission: Permission
    rule: str | None  # None: nothing matched (default deny) / not an admin
    reason: str
    demands: Demands = NO_DEMANDS  # the deciding rule's

    @property
    def allowed(self) -> bool:
        return self.permission >= Permission.VIEW


# --- matching ----------------------------------------------------------------------------------------

# Server specificity levels, most specific first. A rule's level is that of its most specific selector.
_LEVEL_NAMES = {4: "server id", 3: "name", 2: "tags/metadata", 1: "cloud/project/region", 0: "all servers"}
# Who specificity: an exact user name is more specific than a user glob or a group.
_WHO_USER = 2
_WHO_OTHER = 1


def _split_tag(tag: str) -> tuple[str, str | None]:
    key, sep, value = tag.partition("=")
    return key, (value if sep else None)


def _server_tags(server: Server) -> dict[str, str]:
    # A server tag without "=" has the empty value: "key" on the server equals "key=" there.
    tags: dict[str, str] = {}
    for tag in server.tags:
        key, value = _split_tag(tag)
        tags[key] = value or ""
    return tags


def _match_who(
    users: Sequence[str], wanted: Sequence[str], user: str, groups: Sequence[str]
) -> tuple[int, str] | None:
    """Whether `user` (in `groups`) is one of `users` or in one of the `wanted` groups (globs allowed):
    how specifically, and in words."""
    if not user:
        return None  # anonymous never matches, not even "*"
    if user in users:
        return _WHO_USER, f"user {user}"
    for group in wanted:
        for member in groups:
            if fnmatchcase(member, group):
                return _WHO_OTHER, f"group {member}" if member == group else f"group {member} via {group}"
    for pattern in users:
        if _GLOB_CHARS.search(pattern) and fnmatchcase(user, pattern):
            return _WHO_OTHER, f"user {user} via {pattern}"
    return None


def _tags_failure(tags: Sequence[tuple[str, str | None]], texts: Sequence[str], server: Server) -> str | None:
    """None when the server carries every wanted tag (a value given is a glob); otherwise the first miss."""
    have = _server_tags(server)
    for (key, value), text in zip(tags, texts, strict=True):
        if key not in have:
            return f"tag {key!r} is not on the server"
        if value is not None and not fnmatchcase(have[key], value):
            return f"tag {key}={have[key]!r} does not match {text!r}"
    return None


@dataclass(frozen=True, slots=True)
class _Match:
    matched: bool
    who_level: int = 0
    because: tuple[str, ...] = ()  # what matched, e.g. ("group ops", "name web-*")
    failure: str = ""  # first selector that failed, in words


class _Rule:
    """A RuleConfig prepared for matching."""

    __slots__ = ("config", "demands", "level", "tags")

    def __init__(self, config: RuleConfig, record: RecordMode = "off", record_input: bool = False) -> None:
        self.config = config
        self.demands = _demands(config, record, record_input)
        self.tags = [_split_tag(t) for t in config.tags]
        if config.server_ids:
            self.level = 4
        elif config.names:
            self.level = 3
        elif config.tags or config.metadata:
            self.level = 2
        elif config.clouds or config.projects or config.regions:
            self.level = 1
        else:
            self.level = 0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def permission(self) -> str:
        return self.config.permission

    def match_who(self, user: str, groups: Sequence[str]) -> tuple[int, str] | None:
        return _match_who(self.config.users, self.config.groups, user, groups)

    @property
    def just_in_time(self) -> bool:
        return bool(self.config.approvers)

    def match(self, user: str, groups: Sequence[str], server: Server, grants: Collection[str] = ()) -> _Match:
        """`grants`: the just-in-time rules an approved request currently opens for this user and server."""
        found = self._match(user, groups, server)
        if not found.matched or not self.just_in_time:
            return found
        if self.name not in grants:
            approvers = ", ".join(f"group {g}" for g in self.config.approvers)
            return _Match(False, failure=f"needs an approved access request (approvers: {approvers})")
        return _Match(True, who_level=found.who_level, because=(*found.because, "approved request"))

    def _match(self, user: str, groups: Sequence[str], server: Server) -> _Match:
        cfg = self.config
        who = self.match_who(user, groups)
        if who is None:
            listed = ", ".join([*cfg.users, *(f"group {g}" for g in cfg.groups)])
            in_groups = f" (groups: {', '.join(groups)})" if groups else " (no groups)"
            return _Match(False, failure=f"user {user or '<anonymous>'}{in_groups} is not in [{listed}]")
        because = [who[1]]

        def exact(label: str, values: list[str], actual: str) -> str | None:
            if not values:
                return None
            if actual in values:
                because.append(f"{label} {actual}")
                return None
            return f"{label} {actual!r} is not one of {values}"

        for failure in (
            exact("cloud", cfg.clouds, server.cloud),
            exact("project", cfg.projects, server.project_id),
            exact("region", cfg.regions, server.region),
            exact("server id", cfg.server_ids, server.id),
        ):
            if failure:
                return _Match(False, failure=failure)
        if cfg.names:
            pattern = next((p for p in cfg.names if fnmatchcase(server.name, p)), None)
            if pattern is None:
                return _Match(False, failure=f"name {server.name!r} matches none of {cfg.names}")
            because.append(f"name {pattern}")
        if self.tags:
            failure = _tags_failure(self.tags, cfg.tags, server)
            if failure:
                return _Match(False, failure=failure)
            because.extend(f"tag {text}" for text in cfg.tags)
        for key, pattern in cfg.metadata.items():
            if key not in server.metadata:
                return _Match(False, failure=f"metadata key {key!r} is not on the server")
            actual = server.metadata[key]
            if not fnmatchcase(actual, pattern):
                return _Match(False, failure=f"metadata {key}={actual!r} does not match {pattern!r}")
            because.append(f"metadata {key}={pattern}")
        if self.level == 0:
            because.append("all servers")
        return _Match(True, who_level=who[0], because=tuple(because))


def _reason(rule: _Rule, match: _Match) -> str:
    verb = "denies" if rule.permission == "deny" else f"grants {rule.permission}"
    return f'rule "{rule.name}" {verb} ({", ".join(match.because)})'


@dataclass(frozen=True, slots=True)
class Review:
    """What one user may do with one recording: play and download it (`allowed`), and read its typed text
    (`typed_text`, never without `allowed`); `reviewers`: the entries that said so."""

    allowed: bool
    typed_text: bool
    reviewers: tuple[str, ...]
    reason: str


class _Reviewer:
    """A ReviewerConfig prepared for matching."""

    __slots__ = ("config", "tags")

    def __init__(self, config: ReviewerConfig) -> None:
        self.config = config
        self.tags = [_split_tag(t) for t in config.tags]

    def match_who(self, user: str, groups: Sequence[str]) -> bool:
        return _match_who(self.config.users, self.config.groups, user, groups) is not None

    def matches(self, user: str, groups: Sequence[str], server: Server) -> bool:
        cfg = self.config
        return (
            self.match_who(user, groups)
            and (not cfg.clouds or server.cloud in cfg.clouds)
            and (not cfg.projects or server.project_id in cfg.projects)
            and (not cfg.server_ids or server.id in cfg.server_ids)
            and (not cfg.names or any(fnmatchcase(server.name, p) for p in cfg.names))
            and _tags_failure(self.tags, cfg.tags, server) is None
        )


class Policy:
    """Immutable once built: a config reload builds a new Policy and swaps it in."""

    def __init__(
        self, config: PolicyConfig, *, record: RecordMode = "off", record_input: bool = False
    ) -> None:
        """`record`, `record_input`: the `[recording]` defaults for rules that do not say."""
        self.config = config
        self._rules = [_Rule(r, record, record_input) for r in config.rules]
        self._admin_users = frozenset(config.admins.users)
        self._admin_groups = frozenset(config.admins.groups)
        self._reviewers = [_Reviewer(r) for r in config.reviewers]

    def _evaluate(
        self, user: str, groups: Sequence[str], server: Server, grants: Collection[str] = ()
    ) -> tuple[Decision, list[tuple[_Rule, _Match]]]:
        results = [(rule, rule.match(user, groups, server, grants)) for rule in self._rules]
        matching = [(rule, m) for rule, m in results if m.matched and rule.permission != "none"]
        if not matching:
            reason = f"no rule grants {user or '<anonymous>'} access to {server.name} (default deny)"
            return Decision(Permission.NONE, None, reason), results
        for rule, m in matching:  # an explicit deny wins; the first one in file order is reported
            if rule.permission == "deny":
                return Decision(Permission.NONE, rule.name, _reason(rule, m)), results

        def key(item: tuple[_Rule, _Match]) -> tuple[int, int, int]:
            rule, m = item
            return rule.level, m.who_level, Permission(rule.permission).rank

        # max() keeps the first of equal keys, so a remaining tie goes to file order.
        rule, m = max(matching, key=key)
        return Decision(Permission(rule.permission), rule.name, _reason(rule, m), rule.demands), results

    def decide(
        self, user: str, groups: Sequence[str], server: Server, grants: Collection[str] = ()
    ) -> Decision:
        """`grants`: names of the just-in-time rules an approved, unexpired request opens (shared state)."""
        return self._evaluate(user, groups, server, grants)[0]

    def requestable(
        self, user: str, groups: Sequence[str], server: Server, grants: Collection[str] = ()
    ) -> list[Requestable]:
        """The just-in-time rules an approval would make decide, above what the user has now."""
        now = self.decide(user, groups, server, grants).permission
        out = []
        for rule in self._rules:
            if not rule.just_in_time or rule.name in grants or not rule._match(user, groups, server).matched:
                continue
            granted = self.decide(user, groups, server, {*grants, rule.name})
            if granted.rule == rule.name and granted.permission > now:
                cfg = rule.config
                max_grant = cfg.max_grant if cfg.max_grant is not None else DEFAULT_MAX_GRANT
                out.append(Requestable(rule.name, granted.permission, tuple(cfg.approvers), max_grant))
        return out

    def is_approver(self, groups: Sequence[str]) -> bool:
        """Someone in `groups` approves access requests for some rule (the admin page shows them)."""
        return any(set(rule.config.approvers) & set(groups) for rule in self._rules)

    def approves(self, groups: Sequence[str], rule_name: str) -> bool:
        """Whether someone in `groups` is an approver of the rule (exact group names)."""
        rule = next((r for r in self._rules if r.name == rule_name), None)
        return rule is not None and bool(set(rule.config.approvers) & set(groups))

    def is_admin(self, user: str, groups: Sequence[str]) -> Decision:
        if user and user in self._admin_users:
            return Decision(Permission.CONTROL, "admins", f"admin (user {user})")
        for group in groups:
            if group in self._admin_groups:
                return Decision(Permission.CONTROL, "admins", f"admin (group {group})")
        return Decision(Permission.NONE, None, f"{user or '<anonymous>'} is not an admin")

    @property
    def has_join_rules(self) -> bool:
        return any(rule.config.join for rule in self._rules)

    def may_join(
        self, user: str, groups: Sequence[str], server: Server, grants: Collection[str] = ()
    ) -> JoinDecision:
        """Whether `user` may watch a live console on `server` (docs/shadowing.md): admins always; others
        through the most specific matching rule with `join = true` (of equals, one wanting the owner's
        approval wins); an explicit deny for them on the server refuses it, admins excepted. An admin
        waits for approval only where such a rule matches them and wants it."""
        decision, results = self._evaluate(user, groups, server, grants)
        admin = self.is_admin(user, groups)
        joins = [(rule, m) for rule, m in results if m.matched and rule.config.join]
        if not admin.allowed and decision.rule is not None and decision.permission is Permission.NONE:
            return JoinDecision(False, False, decision.rule, f"{decision.reason}; no joining either")
        if joins:
            rule, m = max(
                joins, key=lambda i: (i[0].level, i[1].who_level, i[0].config.join_approval == "owner")
            )
            approval = rule.config.join_approval == "owner"
            wants = ", the owner approves each join" if approval else ""
            return JoinDecision(
                True, approval, rule.name, f'rule "{rule.name}" grants join ({", ".join(m.because)}){wants}'
            )
        if admin.allowed:
            return JoinDecision(True, False, "admins", f"{admin.reason} may join every console")
        who = user or "<anonymous>"
        return JoinDecision(False, False, None, f"no rule lets {who} join consoles on {server.name}")

    def review(self, user: str, groups: Sequence[str], server: Server) -> Review:
        """Who may watch (docs/policy.md, "Reviewers"): any matching reviewer entry allows playback and
        download of a recording of `server` (as recorded); typed text needs a matching entry that says
        `typed_text = true`. Nothing else grants it: neither console rules nor admin."""
        matching = [r for r in self._reviewers if r.matches(user, groups, server)]
        if not matching:
            who = user or "<anonymous>"
            return Review(False, False, (), f"no reviewer entry lets {who} watch {server.name}")
        names = tuple(r.config.name for r in matching)
        typed = any(r.config.typed_text for r in matching)
        listed = ", ".join(f'"{n}"' for n in names)
        return Review(True, typed, names, f"reviewer {listed}" + (" with typed text" if typed else ""))

    def is_reviewer(self, user: str, groups: Sequence[str]) -> bool:
        """Whether some reviewer entry names this user at all (the pages show the recordings link)."""
        return any(r.match_who(user, groups) for r in self._reviewers)

    def filter_servers(
        self,
        user: str,
        groups: Sequence[str],
        servers: Iterable[Server],
        grants_of: Callable[[Server], Collection[str]] = lambda _server: (),
    ) -> list[tuple[Server, Decision, list[Requestable]]]:
        """For the server list page: the servers this user may at least view or may request access to,
        each with its decision (`grants_of`: the rules approved requests open there) and what an access
        request could add."""
        out = []
        for server in servers:
            grants = grants_of(server)
            decision = self.decide(user, groups, server, grants)
            options = self.requestable(user, groups, server, grants)
            if decision.allowed or options:
                out.append((server, decision, options))
        return out


def _review_line(review: Review) -> str:
    if not review.allowed:
        return "may not watch this server's recordings (no reviewer entry matches)"
    entries = ", ".join(f'"{name}"' for name in review.reviewers)
    typed = "with" if review.typed_text else "without"
    return f"may watch this server's recordings, {typed} typed text (reviewer {entries})"


def explain(
    policy: Policy,
    user: str,
    groups: Sequence[str],
    server: Server,
    *,
    provider: str | None = None,
    grants: Collection[str] = (),
) -> str:
    """Everything an operator needs to see why a user got what they got on one server (and, given the
    server's cloud's `provider`, which API the gateway would ask; given `grants`, the just-in-time rules
    an approved request opens)."""
    decision, results = policy._evaluate(user, groups, server, grants)
    lines = [
        f"user:     {user or '<anonymous>'} (groups: {', '.join(groups) if groups else 'none'})",
        f"server:   {server.name} (id {server.id}, cloud {server.cloud}, project {server.project_id}, "
        f"region {server.region})",
        *([f"provider: {provider} (the API of cloud {server.cloud})"] if provider else []),
        f"decision: {decision.permission.value}",
        f"rule:     {decision.rule if decision.rule is not None else '(none: default deny)'}",
        f"reason:   {decision.reason}",
        *(f"demands:  {demand}" for demand in decision.demands.describe()),
        *(f"grant:    {rule} (an approved access request)" for rule in sorted(grants)),
        *(
            [f"join:     {_join_line(policy.may_join(user, groups, server, grants))}"]
            if policy.has_join_rules
            else []
        ),
        *(
            [f"review:   {_review_line(policy.review(user, groups, server))}"]
            if policy.config.reviewers
            else []
        ),
        "rules, in file order:",
    ]
    if not results:
        lines.append("  (no rules configured)")
    for index, (rule, m) in enumerate(results, 1):
        head = f"  {index}. {rule.name} [{rule.permission}; specificity {_LEVEL_NAMES[rule.level]}]"
        if not m.matched:
            lines.append(f"{head}: no match: {m.failure}")
            continue
        matched = f"{head}: matches ({', '.join(m.because)})"
        if rule.permission == "none":
            lines.append(f"{matched} (join only)")
        elif rule.name == decision.rule:
            lines.append(f"{matched} -> DECIDES")
        elif decision.permission is Permission.NONE:
            lines.append(f'{matched}, overridden by deny rule "{decision.rule}"')
        else:
            lines.append(f'{matched}, outranked by "{decision.rule}"')
    return "\n".join(lines)


def _join_line(join: JoinDecision) -> str:
    if not join.allowed:
        return f"no ({join.reason})"
    return f"yes, {'with' if join.approval else 'without'} the owner's approval ({join.reason})"
