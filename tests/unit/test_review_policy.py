"""Who may watch recordings: `[[policy.reviewers]]` (docs/policy.md, "Reviewers")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.auth.cookie import generate_key
from gateway.cli import main
from gateway.policy import Policy, PolicyConfig, explain
from tests.unit.test_policy import server


def reviewers(*entries: dict[str, Any], rules: list[dict[str, Any]] | None = None) -> Policy:
    return Policy(PolicyConfig.model_validate({"rules": rules or [], "reviewers": list(entries)}))


AUDIT = {"name": "audit-prod", "groups": ["auditors"], "tags": ["env=prod"]}
SECURITY = {"name": "security", "users": ["sec-lead"], "clouds": ["hw"], "typed_text": True}


def test_a_matching_entry_allows_playback_but_typed_text_needs_its_own_switch() -> None:
    policy = reviewers(AUDIT, SECURITY)
    review = policy.review("carol", ["auditors"], server())
    assert review.allowed and not review.typed_text
    assert review.reviewers == ("audit-prod",)
    lead = policy.review("sec-lead", [], server())
    assert lead.allowed and lead.typed_text
    assert "with typed text" in lead.reason


def test_typed_text_from_any_matching_entry_and_never_without_playback() -> None:
    policy = reviewers(AUDIT, {**SECURITY, "users": [], "groups": ["auditors"], "clouds": ["other"]})
    hw = policy.review("carol", ["auditors"], server())
    assert hw.allowed and not hw.typed_text  # the typed-text entry is for another cloud
    both = policy.review("carol", ["auditors"], server(cloud="other"))
    assert both.allowed and both.typed_text and set(both.reviewers) == {"audit-prod", "security"}
    assert not policy.review("carol", ["ops"], server(cloud="other")).typed_text


@pytest.mark.parametrize(
    ("selectors", "recorded", "allowed"),
    [
        ({"clouds": ["hw"]}, {}, True),
        ({"clouds": ["nova"]}, {}, False),
        ({"projects": ["proj-a"]}, {}, True),
        ({"projects": ["proj-b"]}, {}, False),
        ({"server_ids": ["srv-1"]}, {}, True),
        ({"server_ids": ["srv-2"]}, {}, False),
        ({"names": ["web-*"]}, {}, True),
        ({"names": ["db-*"]}, {}, False),
        ({"tags": ["pci"]}, {}, True),
        ({"tags": ["env=prod"]}, {"tags": ("env=staging",)}, False),
        ({"tags": ["env=*"]}, {"tags": ("env=staging",)}, True),
        ({"clouds": ["hw"], "names": ["db-*"]}, {}, False),  # every selector given must match
    ],
)
def test_server_selectors_match_the_server_as_recorded(
    selectors: dict[str, Any], recorded: dict[str, Any], allowed: bool
) -> None:
    policy = reviewers({"name": "r", "groups": ["auditors"], **selectors})
    assert policy.review("carol", ["auditors"], server(**recorded)).allowed is allowed


def test_console_rules_and_admin_grant_no_review() -> None:
    control = {"name": "ops", "groups": ["ops"], "permission": "control"}
    policy = Policy(
        PolicyConfig.model_validate({"rules": [control], "admins": {"users": ["root"]}, "reviewers": [AUDIT]})
    )
    assert not policy.review("dave", ["ops"], server()).allowed
    assert not policy.review("root", [], server()).allowed
    assert not policy.review("", ["auditors"], server()).allowed  # anonymous never matches
    assert policy.is_reviewer("carol", ["auditors"]) and not policy.is_reviewer("root", ["ops"])


def test_user_globs_and_group_globs_match_like_console_rules() -> None:
    policy = reviewers({"name": "r", "users": ["audit-*"], "groups": ["sec-*"]})
    assert policy.review("audit-1", [], server()).allowed
    assert policy.review("x", ["sec-team"], server()).allowed
    assert not policy.review("x", ["ops"], server()).allowed


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "r"}, "give users or groups"),
        ({"name": "r", "groups": ["a"], "names": [" x"]}, "leading or trailing spaces"),
        ({"name": "r", "groups": ["a"], "tags": ["=v"]}, "needs a key"),
        ({"name": "r", "groups": ["a"], "permission": "view"}, "Extra inputs are not permitted"),
        ({"name": " r", "groups": ["a"]}, "must be non-empty"),
    ],
)
def test_bad_reviewer_entries_are_refused_with_the_entry_named(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PolicyConfig.model_validate({"reviewers": [entry]})


def test_reviewer_names_are_unique() -> None:
    with pytest.raises(ValidationError, match='policy reviewer "r": the name is used by more than one'):
        PolicyConfig.model_validate(
            {"reviewers": [{"name": "r", "users": ["a"]}, {"name": "r", "users": ["b"]}]}
        )


def test_check_config_names_a_bad_reviewer_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    head = f'[session]\nkeys = ["{generate_key()}"]\n[auth.local]\nenabled = true\n' + (
        '[[policy.reviewers]]\nname = "r"\ngroups = ["auditors"]\n'
    )
    good = tmp_path / "good.toml"
    good.write_text(head + "typed_text = true\n")
    assert main(["check-config", str(good)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text(head + 'typed_text = "yes please"\n')
    with pytest.raises(SystemExit) as exited:
        main(["check-config", str(bad)])
    assert exited.value.code == 2
    assert "policy.reviewers[0].typed_text" in capsys.readouterr().err


def test_explain_says_whether_the_user_may_watch_the_servers_recordings() -> None:
    policy = reviewers(AUDIT, SECURITY)
    lines = explain(policy, "carol", ["auditors"], server()).splitlines()
    assert (
        'review:   may watch this server\'s recordings, without typed text (reviewer "audit-prod")' in lines
    )
    lead = explain(policy, "sec-lead", [], server(tags=()))
    assert 'review:   may watch this server\'s recordings, with typed text (reviewer "security")' in lead
    assert "review:   may not watch this server's recordings" in explain(policy, "dave", ["ops"], server())
    assert "review:" not in explain(reviewers(), "carol", ["auditors"], server())  # no reviewers: no line
