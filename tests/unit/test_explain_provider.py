"""`explain` names the provider of the server's cloud, so an operator reading a decision across several
clouds sees which API the gateway would ask."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.auth.cookie import generate_key
from tests.support.processes import ROOT, write_config


def test_explain_names_the_clouds_provider(tmp_path: Path) -> None:
    data = {
        "session": {"keys": [generate_key()]},
        "auth": {"local": {"enabled": True}},
        "clouds": [
            {
                "name": "lab",
                "provider": "openstack",
                "region": "RegionOne",
                "project_id": "p1",
                "keystone": {"url": "https://keystone.example:5000/v3", "user": "gw", "password": "pw"},
            }
        ],
        "policy": {
            "rules": [
                {
                    "name": "lab-view",
                    "users": ["*"],
                    "clouds": ["lab"],
                    "regions": ["RegionOne"],
                    "permission": "view",
                }
            ]
        },
    }
    path = write_config(data, tmp_path / "gw.toml")
    args = [
        "explain",
        "alice",
        "srv-1",
        "--config",
        str(path),
        "--offline",
        "--cloud",
        "lab",
        "--region",
        "RegionOne",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("server:   srv-1 (id srv-1, cloud lab,")
    assert lines[2] == "provider: openstack (the API of cloud lab)"
    assert "decision: view" in result.stdout and "lab-view" in result.stdout
