"""Who may join (watch) whose live consoles: the `join` permission of console rules (docs/shadowing.md)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.policy import Permission, Policy, PolicyConfig, explain
from tests.unit.test_policy import server


def policy(*rules: dict[str, Any], admins: dict[str, Any] | None = None) -> Policy:
    return Policy(PolicyConfig.model_validate({"rules": list(rules), "admins": admins or {}}))


LEADS = {"name": "leads-watch", "groups": ["leads"], "permission": "none", "join": True}
OPS = {"name": "ops", "groups": ["ops"], "permission": "control"}


def test_a_join_only_rule_lets_its_users_watch_and_grants_no_console_of_their_own() -> None:
    p = policy(OPS, LEADS)
    join = p.may_join("lena", ["leads"], server())
    assert (join.allowed, join.approval, join.rule) == (True, True, "leads-watch")  # the owner approves
    assert "the owner approves each join" in join.reason
    assert p.decide("lena", ["leads"], server()).permission is Permission.NONE
    # The rule does not outrank what other rules grant: an ops lead keeps control.
    assert p.decide("lena", ["leads", "ops"], server()).permission is Permission.CONTROL


def test_without_a_join_rule_even_control_does_not_let_one_watch_others() -> None:
    join = policy(OPS).may_join("olga", ["ops"], server())
    assert not join.allowed
    assert join.rule is None and "no rule lets olga join" in join.reason


def test_join_selectors_are_the_rules_selectors() -> None:
    p = policy({**LEADS, "tags": ["env=prod"], "join_approval": "none"})
    assert p.may_join("lena", ["leads"], server()).allowed
    assert not p.may_join("lena", ["leads"], server(tags=("env=dev",))).allowed
    assert not p.may_join("lena", ["support"], server()).allowed


def test_the_most_specific_join_rule_decides_approval_and_equals_want_it() -> None:
    broad = {**LEADS, "join_approval": "none"}
    pci = {**LEADS, "name": "pci-watch", "tags": ["pci"], "join_approval": "owner"}
    p = policy(broad, pci)
    assert p.may_join("lena", ["leads"], server()).rule == "pci-watch"
    assert p.may_join("lena", ["leads"], server()).approval
    assert not p.may_join("lena", ["leads"], server(tags=())).approval  # only the broad rule matches
    twin = {**LEADS, "name": "twin", "join_approval": "none"}
    assert policy(twin, LEADS).may_join("lena", ["leads"], server()).approval  # a tie: the stricter


def test_admins_always_join_an_explicit_deny_refuses_others() -> None:
    deny = {"name": "no-pci", "groups": ["leads"], "tags": ["pci"], "permission": "deny"}
    p = policy(LEADS, deny, admins={"users": ["root"]})
    refused = p.may_join("lena", ["leads"], server())
    assert not refused.allowed and refused.rule == "no-pci"
    admin = p.may_join("root", [], server())
    assert (admin.allowed, admin.approval, admin.rule) == (True, False, "admins")
    # An admin a join rule names waits for approval like everybody it names.
    assert p.may_join("root", ["leads"], server(tags=())).approval


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"permission": "none"}, "grants nothing"),
        ({"permission": "deny", "join": True}, "cannot grant join"),
        ({"join": True, "join_approval": "maybe"}, "join_approval"),
    ],
)
def test_meaningless_join_rules_are_refused(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        policy({"name": "r", "groups": ["g"], "permission": "view", **fields})


def test_explain_shows_join_when_a_rule_grants_it() -> None:
    p = policy(OPS, LEADS)
    text = explain(p, "lena", ["leads"], server())
    assert 'join:     yes, with the owner\'s approval (rule "leads-watch" grants join' in text
    assert (
        "2. leads-watch [none; specificity all servers]: matches (group leads, all servers) (join only)"
        in text
    )
    assert "join:     no (no rule lets olga join" in explain(p, "olga", ["ops"], server())
    assert "join:" not in explain(policy(OPS), "olga", ["ops"], server())  # no join rules, no line


def test_docs_join_example_is_what_the_code_does() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text(encoding="utf-8")
    section = doc.split("## Joining live consoles", 1)[1]
    p = Policy(
        PolicyConfig.model_validate(
            {"rules": tomllib.loads(section.split("```toml\n", 1)[1].split("```", 1)[0])["policy"]["rules"]}
        )
    )
    lead = p.may_join("mia", ["ops-leads"], server())
    assert (lead.allowed, lead.approval, lead.rule) == (True, True, "leads-watch")
    lab = p.may_join("tim", ["trainees"], server(tags=("env=lab",)))
    assert (lab.allowed, lab.approval) == (True, False)
    assert p.decide("tim", ["trainees"], server(tags=("env=lab",))).permission is Permission.VIEW
    line = next(x for x in explain(p, "mia", ["ops-leads"], server()).splitlines() if x.startswith("join:"))
    assert f"`{line}`" in doc
