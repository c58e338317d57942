from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.clouds.base import Server
from gateway.policy import (
    AdminConfig,
    Decision,
    Demands,
    Permission,
    Policy,
    PolicyConfig,
    RuleConfig,
    explain,
)


def server(**overrides: Any) -> Server:
    base: dict[str, Any] = {
        "cloud": "hw",
        "id": "srv-1",
        "name": "web-1",
        "status": "ACTIVE",
        "project_id": "proj-a",
        "region": "ap-southeast-1",
        "availability_zone": "az1",
        "locked": False,
        "tags": ("env=prod", "pci"),
        "metadata": {"role": "frontend-main", "owner": "team-x"},
    }
    base.update(overrides)
    return Server(**base)


def rule(name: str, permission: str = "view", **selectors: Any) -> dict[str, Any]:
    if "users" not in selectors and "groups" not in selectors:
        selectors["groups"] = ["ops"]
    return {"name": name, "permission": permission, **selectors}


def policy(*rules: dict[str, Any], admins: dict[str, Any] | None = None) -> Policy:
    return Policy(PolicyConfig.model_validate({"rules": list(rules), "admins": admins or {}}))


# --- Permission ordering -----------------------------------------------------------------------------


def test_permission_orders_by_power_not_alphabet():
    assert Permission.NONE < Permission.VIEW < Permission.CONTROL
    assert max(Permission) is Permission.CONTROL
    assert Permission.CONTROL >= "view"
    assert not (Permission.VIEW >= "control")
    assert "control" > Permission.VIEW  # reflected comparison uses rank too
    assert Permission.VIEW == "view"


# --- default deny, deny wins, specificity, ties --------------------------------------------------------


def test_no_rules_means_default_deny_with_reason():
    d = policy().decide("alice", ["ops"], server())
    assert d == Decision(Permission.NONE, None, d.reason)
    assert "default deny" in d.reason and "alice" in d.reason and "web-1" in d.reason
    assert not d.allowed


def test_no_matching_rule_is_default_deny():
    p = policy(rule("dev", groups=["dev"], permission="control"))
    d = p.decide("alice", ["ops"], server())
    assert d.permission is Permission.NONE and d.rule is None


def test_single_matching_rule_grants_with_reason():
    p = policy(rule("ops-control", "control", groups=["ops"], names=["web-*"]))
    d = p.decide("alice", ["ops"], server())
    assert d.permission is Permission.CONTROL
    assert d.rule == "ops-control"
    assert d.reason == 'rule "ops-control" grants control (group ops, name web-*)'


def test_explicit_deny_wins_even_when_less_specific_and_later():
    p = policy(
        rule("by-id", "control", server_ids=["srv-1"]),
        rule("no-pci", "deny", tags=["pci"]),
        rule("all", "deny", groups=["ops"]),
    )
    d = p.decide("alice", ["ops"], server())
    assert d.permission is Permission.NONE
    assert d.rule == "no-pci"  # the first deny in file order is the one reported
    assert d.reason == 'rule "no-pci" denies (group ops, tag pci)'


def test_deny_that_does_not_match_changes_nothing():
    p = policy(rule("ctl", "control"), rule("deny-dev", "deny", tags=["env=dev"]))
    assert p.decide("alice", ["ops"], server()).permission is Permission.CONTROL


@pytest.mark.parametrize(
    ("specific", "general"),
    [
        ({"server_ids": ["srv-1"]}, {"names": ["web-*"]}),
        ({"names": ["web-*"]}, {"tags": ["env=prod"]}),
        ({"names": ["web-*"]}, {"metadata": {"role": "front*"}}),
        ({"tags": ["env=prod"]}, {"projects": ["proj-a"]}),
        ({"metadata": {"role": "*"}}, {"regions": ["ap-southeast-1"]}),
        ({"clouds": ["hw"]}, {}),
        ({"server_ids": ["srv-1"]}, {"projects": ["proj-a"], "tags": ["pci"], "names": ["web-1"]}),
    ],
)
@pytest.mark.parametrize("specific_first", [True, False])
def test_more_specific_server_selector_decides(specific, general, specific_first):
    # The specific rule narrows to view although the general one grants control: specificity, not power.
    rules = [rule("specific", "view", **specific), rule("general", "control", **general)]
    if not specific_first:
        rules.reverse()
    d = policy(*rules).decide("alice", ["ops"], server())
    assert (d.permission, d.rule) == (Permission.VIEW, "specific")


@pytest.mark.parametrize("user_first", [True, False])
def test_user_rule_beats_group_rule_at_equal_server_specificity(user_first):
    rules = [
        rule("alice-view", "view", users=["alice"], names=["web-*"]),
        rule("ops-control", "control", groups=["ops"], names=["web-1"]),
    ]
    if not user_first:
        rules.reverse()
    d = policy(*rules).decide("alice", ["ops"], server())
    assert (d.permission, d.rule) == (Permission.VIEW, "alice-view")


def test_server_specificity_outranks_user_specificity():
    p = policy(
        rule("alice-all", "control", users=["alice"]),
        rule("ops-web", "view", groups=["ops"], names=["web-*"]),
    )
    assert p.decide("alice", ["ops"], server()).rule == "ops-web"


def test_user_glob_counts_as_group_level_not_user_level():
    p = policy(
        rule("everyone", "control", users=["*"], names=["web-*"]),
        rule("ops", "view", groups=["ops"], names=["web-*"]),
    )
    # Equal specificity (glob user == group): the tie goes to the higher permission.
    d = p.decide("alice", ["ops"], server())
    assert d.reason == 'rule "everyone" grants control (user alice via *, name web-*)'


@pytest.mark.parametrize("order", [("a-view", "b-control"), ("b-control", "a-view")])
def test_tie_goes_to_higher_permission_regardless_of_order(order):
    rules = {
        "a-view": rule("a-view", "view", projects=["proj-a"]),
        "b-control": rule("b-control", "control", regions=["ap-southeast-1"]),
    }
    d = policy(*(rules[n] for n in order)).decide("alice", ["ops"], server())
    assert (d.permission, d.rule) == (Permission.CONTROL, "b-control")


def test_full_tie_reports_first_rule_in_file_order():
    p = policy(rule("first", "view", groups=["ops"]), rule("second", "view", groups=["ops"]))
    assert p.decide("alice", ["ops"], server()).rule == "first"


# --- who -----------------------------------------------------------------------------------------------


def test_star_matches_every_signed_in_user_but_not_anonymous():
    p = policy(rule("all", "view", users=["*"]))
    assert p.decide("zoe", [], server()).permission is Permission.VIEW
    assert p.decide("", [], server()).permission is Permission.NONE


def test_user_and_group_globs_are_case_sensitive():
    p = policy(rule("admins", "control", users=["adm-*"]), rule("ops", "view", groups=["team-?"]))
    assert p.decide("adm-bob", [], server()).rule == "admins"
    assert p.decide("ADM-bob", [], server()).rule is None
    assert p.decide("carol", ["team-a"], server()).rule == "ops"
    assert p.decide("carol", ["Team-a"], server()).rule is None
    assert p.decide("carol", ["team-ab"], server()).rule is None


def test_group_glob_reason_names_the_group_and_the_pattern():
    p = policy(rule("g", "view", groups=["team-*"]))
    assert (
        p.decide("c", ["dev", "team-red"], server()).reason
        == 'rule "g" grants view (group team-red via team-*, all servers)'
    )


def test_rule_with_both_users_and_groups_matches_either():
    p = policy(rule("r", "view", users=["alice"], groups=["ops"]))
    assert p.decide("alice", [], server()).allowed
    assert p.decide("bob", ["ops"], server()).allowed
    assert not p.decide("bob", ["dev"], server()).allowed


# --- server selectors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selectors", "matches"),
    [
        ({"clouds": ["hw"]}, True),
        ({"clouds": ["nova"]}, False),
        ({"projects": ["proj-b", "proj-a"]}, True),
        ({"projects": ["proj-*"]}, False),  # exact values, not globs
        ({"regions": ["eu-west-0"]}, False),
        ({"server_ids": ["srv-1"]}, True),
        ({"server_ids": ["srv-2"]}, False),
        ({"names": ["web-?"]}, True),
        ({"names": ["db-*", "web-[0-9]"]}, True),
        ({"names": ["WEB-*"]}, False),  # case-sensitive
        ({"names": ["web"]}, False),
        ({"tags": ["env=prod"]}, True),
        ({"tags": ["env=pr*"]}, True),  # tag values are globs
        ({"tags": ["env=dev"]}, False),
        ({"tags": ["env"]}, True),  # key only: any value
        ({"tags": ["pci"]}, True),
        ({"tags": ["pci="]}, True),  # a valueless server tag has the empty value
        ({"tags": ["pci=x"]}, False),
        ({"tags": ["env=prod", "pci"]}, True),  # tags are all-of
        ({"tags": ["env=prod", "gpu"]}, False),
        ({"metadata": {"role": "frontend-*"}}, True),
        ({"metadata": {"role": "backend-*"}}, False),
        ({"metadata": {"role": "*", "owner": "team-x"}}, True),  # metadata is all-of
        ({"metadata": {"role": "*", "owner": "team-y"}}, False),
        ({"metadata": {"missing": "*"}}, False),  # "*" still requires the key
        ({"clouds": ["hw"], "projects": ["proj-a"], "names": ["web-*"]}, True),
        ({"clouds": ["hw"], "projects": ["proj-b"], "names": ["web-*"]}, False),  # all selectors must match
    ],
)
def test_server_selectors(selectors, matches):
    d = policy(rule("r", "view", **selectors)).decide("alice", ["ops"], server())
    assert d.allowed is matches


def test_reason_lists_every_selector_that_matched():
    p = policy(
        rule("r", "control", users=["alice"], clouds=["hw"], tags=["env=prod"], metadata={"role": "front*"})
    )
    assert p.decide("alice", [], server()).reason == (
        'rule "r" grants control (user alice, cloud hw, tag env=prod, metadata role=front*)'
    )


def test_rule_without_server_selectors_covers_all_servers():
    p = policy(rule("r", "view"))
    assert p.decide("a", ["ops"], server(name="x", id="y", tags=(), metadata={})).reason == (
        'rule "r" grants view (group ops, all servers)'
    )


# --- filter_servers, admins ----------------------------------------------------------------------------


def test_filter_servers_keeps_view_and_control_with_decisions():
    servers = [server(id="1", name="web-1"), server(id="2", name="db-1"), server(id="3", name="web-2")]
    p = policy(
        rule("web", "control", names=["web-*"]),
        rule("db", "view", names=["db-*"]),
        rule("no-web2", "deny", server_ids=["3"]),
    )
    got = [(s.id, d.permission, d.rule, o) for s, d, o in p.filter_servers("alice", ["ops"], servers)]
    assert got == [("1", Permission.CONTROL, "web", []), ("2", Permission.VIEW, "db", [])]


def test_filter_servers_lists_what_an_access_request_could_open_and_what_a_grant_opened():
    servers = [server(id="1", name="web-1"), server(id="2", name="db-1")]
    p = policy(rule("jit", "control", names=["db-*"], approvers=["leads"]))
    [(listed, decision, [option])] = p.filter_servers("alice", ["ops"], servers)
    assert (listed.id, decision.permission, option.rule) == ("2", Permission.NONE, "jit")

    def grants_of(s: Server) -> set[str]:
        return {"jit"} if s.id == "2" else set()

    [(_, granted, options)] = p.filter_servers("alice", ["ops"], servers, grants_of)
    assert (granted.permission, options) == (Permission.CONTROL, [])


def test_is_admin_exact_user_or_group():
    p = policy(admins={"users": ["root"], "groups": ["gw-admins"]})
    assert p.is_admin("root", []) == Decision(Permission.CONTROL, "admins", "admin (user root)")
    assert p.is_admin("bob", ["x", "gw-admins"]) == Decision(
        Permission.CONTROL, "admins", "admin (group gw-admins)"
    )
    no = p.is_admin("bob", ["ops"])
    assert no.permission is Permission.NONE and no.rule is None
    assert p.is_admin("", []).permission is Permission.NONE


def test_admins_are_not_globs():
    with pytest.raises(ValidationError, match=r"policy\.admins\.groups: 'adm\*' looks like a glob"):
        AdminConfig(groups=["adm*"])


def test_rules_do_not_make_admins():
    p = policy(rule("everything", "control", users=["*"]))
    assert p.is_admin("alice", ["ops"]).permission is Permission.NONE


# --- config validation -----------------------------------------------------------------------------------


def test_duplicate_rule_names_are_refused_naming_the_rule():
    with pytest.raises(ValidationError, match='policy rule "twice": the name is used by more than one rule'):
        PolicyConfig.model_validate({"rules": [rule("twice"), rule("once"), rule("twice")]})


def test_rule_without_users_or_groups_is_refused_naming_the_rule():
    with pytest.raises(ValidationError, match='policy rule "nobody": give users or groups'):
        RuleConfig.model_validate({"name": "nobody", "permission": "view", "names": ["*"]})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"tags": ["=x"]}, "policy rule \"r\": tags: '=x' needs a key"),
        ({"users": [""]}, 'policy rule "r": users: empty entry'),
        ({"names": [" web"]}, "leading or trailing spaces"),
        ({"metadata": {"": "x"}}, "metadata: empty key"),
        ({"permission": "admin"}, "permission"),
        ({"hosts": ["x"]}, "hosts"),  # unknown keys are refused (typos must not widen access)
    ],
)
def test_malformed_rules_are_refused(extra, message):
    with pytest.raises(ValidationError, match=message):
        RuleConfig.model_validate({**rule("r"), **extra})


def test_empty_policy_config_is_valid():
    assert PolicyConfig().rules == [] and PolicyConfig().admins.users == []


# --- explain ----------------------------------------------------------------------------------------------


def test_explain_shows_decision_and_each_rule_outcome():
    p = policy(
        rule("dev", "control", groups=["dev"]),
        rule("ops-control", "control", names=["web-*"]),
        rule("prod-view", "view", tags=["env=prod"]),
        rule("db-only", "view", names=["db-*"]),
        rule("meta", "view", metadata={"role": "back*"}),
    )
    text = explain(p, "alice", ["ops"], server())
    lines = text.splitlines()
    assert "decision: control" in lines
    assert "rule:     ops-control" in lines
    assert 'reason:   rule "ops-control" grants control (group ops, name web-*)' in lines
    first = "  1. dev [control; specificity all servers]: no match: "
    assert lines[-5] == first + "user alice (groups: ops) is not in [group dev]"
    assert lines[-4].endswith("matches (group ops, name web-*) -> DECIDES")
    assert lines[-3].endswith('matches (group ops, tag env=prod), outranked by "ops-control"')
    assert lines[-2].endswith("no match: name 'web-1' matches none of ['db-*']")
    assert lines[-1].endswith("no match: metadata role='frontend-main' does not match 'back*'")


def test_explain_default_deny_and_deny_override():
    p = policy(rule("ok", "view"), rule("stop", "deny", tags=["pci"]), rule("gpu", "view", tags=["gpu"]))
    text = explain(p, "alice", ["ops"], server())
    assert "decision: none" in text
    assert 'matches (group ops, all servers), overridden by deny rule "stop"' in text
    assert "stop [deny; specificity tags/metadata]: matches (group ops, tag pci) -> DECIDES" in text
    assert "no match: tag 'gpu' is not on the server" in text
    empty = explain(policy(), "bob", [], server())
    assert "rule:     (none: default deny)" in empty and "(no rules configured)" in empty
    assert "groups: none" in empty


# --- docs/policy.md stays true ----------------------------------------------------------------------------


def test_docs_examples_match_the_code():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text(encoding="utf-8")
    config = tomllib.loads(doc.split("```toml\n", 1)[1].split("```", 1)[0])
    p = Policy(PolicyConfig.model_validate(config["policy"]))

    def srv(name: str, *tags: str) -> Server:
        return server(cloud="huawei-prod", id="7b7e3c5e-0001", project_id="0a1b2c", name=name, tags=tags)

    table = [
        ("bob", ["ops"], srv("web-dev", "env=dev"), Permission.CONTROL, "ops-control"),
        ("bob", ["ops"], srv("web-1", "env=prod"), Permission.VIEW, "prod-view-only"),
        ("alice", ["ops"], srv("web-1", "env=prod"), Permission.CONTROL, "alice-break-glass"),
        ("carol", ["dba"], srv("db-cards", "env=prod", "pci"), Permission.NONE, "no-pci"),
        ("dave", ["sales"], srv("web-1", "env=prod"), Permission.NONE, None),
    ]
    for user, groups, s, permission, rule_name in table:
        d = p.decide(user, groups, s)
        assert (d.permission, d.rule) == (permission, rule_name), user
        if user != "bob":
            assert d.reason in doc, d.reason
    assert explain(p, "bob", ["ops"], srv("web-1", "env=prod")) in doc


# --- justification -----------------------------------------------------------------------------------

TICKET = "^(INC|CHG)-[0-9]+$"


def test_a_rule_can_require_a_justification_with_a_ticket_pattern():
    p = policy(
        rule("prod", "control", tags=["env=prod"], justification="required", ticket_pattern=TICKET),
        rule("dev", "control", names=["dev-*"]),
    )
    d = p.decide("bob", ["ops"], server())
    assert d.demands.justification and d.demands.ticket_pattern == "^(INC|CHG)-[0-9]+$"
    assert not p.decide("bob", ["ops"], server(name="dev-1", tags=())).demands.justification
    # Any word of the reason may be the ticket reference; the rest is free text.
    assert d.demands.justification_problem("INC-42 disk full on web-1") is None
    assert d.demands.justification_problem("disk full, see CHG-7") is None
    for bad, expected in [
        ("", "A reason is required"),
        ("   ", "A reason is required"),
        ("disk full", "ticket reference matching ^(INC|CHG)-[0-9]+$"),
        ("INC-x disk", "ticket reference matching"),
        ("INC-1 " + "x" * 300, "at most 200 characters"),
        ("INC-1\nsecond line", "one line"),
    ]:
        problem = d.demands.justification_problem(bad)
        assert problem is not None and expected in problem, (bad, problem)


def test_a_justification_without_a_pattern_is_any_non_empty_line():
    d = policy(rule("prod", "control", justification="required")).decide("bob", ["ops"], server())
    assert d.demands.justification_problem("restarting nginx") is None
    assert d.demands.justification_problem("") == "A reason is required to open this console: say why."


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ticket_pattern": "^INC-[0-9]+$"}, 'ticket_pattern needs justification = "required"'),
        ({"justification": "required", "ticket_pattern": "(["}, "ticket_pattern is not a valid"),
        ({"justification": "maybe"}, "justification"),
    ],
)
def test_malformed_justification_settings_are_refused(extra, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        RuleConfig.model_validate(rule("r", **extra))


def test_explain_shows_the_justification_a_rule_demands():
    p = policy(rule("prod", "control", justification="required", ticket_pattern="^INC-[0-9]+$"))
    text = explain(p, "bob", ["ops"], server())
    assert "demands:  a justification (a ticket reference matching ^INC-[0-9]+$)" in text


# --- clipboard -----------------------------------------------------------------------------------------


def test_clipboard_settings_come_with_the_deciding_rule_and_show_in_explain():
    p = policy(
        rule("prod", "control", tags=["env=prod"], clipboard_copy="deny", clipboard_max=4096),
        rule("all", "control"),
    )
    demands = p.decide("bob", ["ops"], server()).demands
    assert (demands.copy, demands.paste, demands.clipboard_max) == (False, True, 4096)
    assert p.decide("bob", ["ops"], server(tags=())).demands == Demands()
    text = explain(p, "bob", ["ops"], server())
    assert "demands:  clipboard: copy out denied, paste in allowed, at most 4096 bytes" in text
    with pytest.raises(ValidationError):
        RuleConfig.model_validate(rule("r", clipboard_paste="sometimes"))
    with pytest.raises(ValidationError):
        RuleConfig.model_validate(rule("r", clipboard_max=0))


# --- step-up sign-in -----------------------------------------------------------------------------------


def test_a_rule_can_require_a_recent_and_strong_enough_sign_in_for_control():
    p = policy(
        rule("prod", "control", tags=["env=prod"], max_auth_age="10m", acr_values=["phr", "mfa"]),
        rule("view", "view", names=["web-*"], users=["viewer"], max_auth_age="10m"),
    )
    demands = p.decide("bob", ["ops"], server()).demands
    assert (demands.max_auth_age, demands.acr_values) == (600.0, ("phr", "mfa"))
    now = 10_000.0
    assert demands.step_up_problem(auth_time=now - 599, acr="mfa", now=now) is None
    assert demands.step_up_problem(auth_time=now - 601, acr="mfa", now=now) == (
        "This console needs a sign-in within the last 10 minutes; sign in again"
    )
    assert demands.step_up_problem(auth_time=None, acr="mfa", now=now) == (
        "This console needs a sign-in within the last 10 minutes; sign in again"
    )
    assert demands.step_up_problem(auth_time=now, acr="pwd", now=now) == (
        "This console needs a stronger sign-in (phr or mfa); sign in again"
    )
    text = explain(p, "bob", ["ops"], server())
    assert "demands:  for control, a sign-in within the last 10 minutes, of class phr or mfa" in text


def test_explain_lists_every_demand_of_the_deciding_rule_as_the_docs_show():
    p = policy(
        rule(
            "prod-fresh-mfa",
            "control",
            tags=["env=prod"],
            justification="required",
            ticket_pattern=TICKET,
            clipboard_copy="deny",
            clipboard_max=4096,
            max_auth_age="10m",
            acr_values=["urn:example:mfa:phr"],
        )
    )
    text = explain(p, "bob", ["ops"], server())
    demands = [line for line in text.splitlines() if line.startswith("demands:")]
    doc = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text(encoding="utf-8")
    assert len(demands) == 3 and all(line in doc for line in demands), demands


# --- just-in-time access -------------------------------------------------------------------------------


def test_a_rule_with_approvers_grants_only_through_an_approved_request():
    p = policy(
        rule("ops-view", "view", tags=["env=prod"]),
        rule("ops-jit", "control", tags=["env=prod"], approvers=["leads"], max_grant="2h"),
    )
    plain = p.decide("bob", ["ops"], server())
    assert (plain.permission, plain.rule) == (Permission.VIEW, "ops-view")
    granted = p.decide("bob", ["ops"], server(), grants={"ops-jit"})
    assert (granted.permission, granted.rule) == (Permission.CONTROL, "ops-jit")
    assert "approved request" in granted.reason
    [option] = p.requestable("bob", ["ops"], server())
    assert (option.rule, option.permission, option.approvers, option.max_grant) == (
        "ops-jit",
        Permission.CONTROL,
        ("leads",),
        7200.0,
    )
    assert p.requestable("bob", ["ops"], server(), grants={"ops-jit"}) == []
    assert p.requestable("eve", ["sales"], server()) == []  # the rule's who and which servers still apply
    text = explain(p, "bob", ["ops"], server())
    assert "no match: needs an approved access request (approvers: group leads)" in text
    assert "ops-jit [control; specificity tags/metadata]: matches" in explain(
        p, "bob", ["ops"], server(), grants={"ops-jit"}
    )


def test_approvers_are_exact_group_names():
    with pytest.raises(ValidationError, match="approvers"):
        RuleConfig.model_validate(rule("r", approvers=["lead*"]))
    with pytest.raises(ValidationError, match="max_grant needs approvers"):
        RuleConfig.model_validate(rule("r", max_grant="1h"))


# --- recording -----------------------------------------------------------------------------------------


def test_recording_comes_from_the_rule_or_the_global_default_and_shows_in_explain():
    config = PolicyConfig.model_validate(
        {
            "rules": [
                rule("prod", "control", tags=["env=prod"], record="required", record_input=True),
                rule("dev", "control", names=["dev-*"]),
                rule("quiet", "view", server_ids=["srv-9"], record="off", record_input=True),
            ]
        }
    )
    default = Policy(config)
    prod = default.decide("bob", ["ops"], server()).demands
    assert (prod.record, prod.record_input) == ("required", True)
    assert default.decide("bob", ["ops"], server(name="dev-1", tags=())).demands == Demands()
    optional = Policy(config, record="optional", record_input=False)
    dev = optional.decide("bob", ["ops"], server(name="dev-1", tags=())).demands
    assert (dev.record, dev.record_input) == ("optional", False)
    quiet = optional.decide("bob", ["ops"], server(id="srv-9", tags=())).demands
    assert (quiet.record, quiet.record_input) == ("off", False)  # no input without the screen
    assert not quiet.recorded
    text = explain(default, "bob", ["ops"], server())
    assert "demands:  recording: required (screen and input)" in text
    text = explain(optional, "bob", ["ops"], server(name="dev-1", tags=()))
    assert "demands:  recording: optional (screen only, no input)" in text
    doc = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text(encoding="utf-8")
    assert "demands:  recording: required (screen only, no input)" in doc
    with pytest.raises(ValidationError):
        RuleConfig.model_validate(rule("r", record="always"))
