"""Who the user is, independent of how they proved it, and the one error type sign-in raises."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

METHODS = ("local", "oidc", "proxy-jwt", "proxy-header")  # how a user signed in (audit `method`)

# Bounds that keep a hostile or misconfigured identity source from bloating the session cookie and logs.
MAX_USER_LENGTH = 256
MAX_GROUPS = 256
MAX_GROUP_LENGTH = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_GROUP_SPLIT = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    groups: tuple[str, ...] = ()
    email: str | None = None
    method: str = "local"  # one of METHODS


@dataclass(frozen=True, slots=True)
class Authentication:
    """When the user authenticated (`auth_time`, seconds) and how (`acr`), as an ID token or a proxy's
    assertion says (the standard claims); None: not said. Step-up rules (docs/policy.md) read them."""

    auth_time: float | None
    acr: str | None

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Authentication:
        raw = claims.get("auth_time")
        auth_time = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
        acr = claims.get("acr")
        return cls(auth_time, acr if isinstance(acr, str) else None)


class AuthError(Exception):
    """A sign-in or session failure.

    `reason` is precise and log-safe (never a token, key or password); `user_message` is what the sign-in
    page may show, deliberately vaguer so it does not help an attacker.
    """

    def __init__(self, reason: str, user_message: str = "Sign-in failed. Please try again.") -> None:
        super().__init__(reason)
        self.reason = reason
        self.user_message = user_message

    def __str__(self) -> str:
        return self.reason


def claim_value(claims: Mapping[str, Any], path: str) -> Any:
    """Look up a claim by name, or by a dotted path into nested objects ("realm_access.roles").

    A literal key wins first because namespaced claims such as "https://example.com/roles" contain dots.
    """
    if path in claims:
        return claims[path]
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def clean_text(value: Any, *, what: str, limit: int = MAX_USER_LENGTH) -> str | None:
    """A claim or header value usable as a name: a non-empty string without control characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise AuthError(f"{what} is not a string", "Your identity provider sent an unusable identity.")
    value = value.strip()
    if not value:
        return None
    if len(value) > limit or _CONTROL.search(value):
        raise AuthError(
            f"{what} is too long or contains control characters",
            "Your identity provider sent an unusable identity.",
        )
    return value


def parse_groups(value: Any, *, separators: str | None = None) -> tuple[str, ...]:
    """Groups from a list, or from a string separated by whitespace/commas (or by `separators`).

    Non-string members and oversize names are dropped rather than failing the sign-in; order is kept and
    duplicates removed so the policy sees a stable set.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        if separators is None:
            items: list[Any] = _GROUP_SPLIT.split(value)
        else:
            items = re.split("[" + re.escape(separators) + "]", value)
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return ()
    seen: dict[str, None] = {}
    for item in items:
        if not isinstance(item, str):
            continue
        item = item.strip()
        if item and len(item) <= MAX_GROUP_LENGTH and not _CONTROL.search(item):
            seen.setdefault(item, None)
        if len(seen) >= MAX_GROUPS:
            break
    return tuple(seen)


def identity_from_claims(
    claims: Mapping[str, Any],
    *,
    username_claim: str,
    email_claim: str | None,
    groups_claim: str | None,
    method: str,
) -> Identity:
    """Map verified token claims to an Identity; a missing username is an error, not a fallback to `sub`."""
    user = clean_text(claim_value(claims, username_claim), what=f"claim {username_claim!r}")
    if user is None:
        raise AuthError(
            f"token lacks the username claim {username_claim!r}",
            "Your identity provider did not send a user name.",
        )
    email = None
    if email_claim:
        raw_email = claim_value(claims, email_claim)
        email = clean_text(raw_email, what=f"claim {email_claim!r}") if isinstance(raw_email, str) else None
    groups = parse_groups(claim_value(claims, groups_claim)) if groups_claim else ()
    return Identity(user=user, groups=groups, email=email, method=method)
