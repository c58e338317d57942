"""One close-code vocabulary: the console page's titles and README's table say what
gateway/consoles/codes.py says (as tests/unit/test_audit.py holds docs/audit.md to the audit schema)."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.consoles import codes
from gateway.consoles.codes import CODES

ROOT = Path(__file__).resolve().parents[2]


def page_titles() -> dict[int, str]:
    text = (ROOT / "static" / "js" / "console.js").read_text(encoding="utf-8")
    table = re.search(r"const CLOSE_TITLES = \{(.*?)\};", text, re.S)
    assert table, "static/js/console.js: CLOSE_TITLES not found"
    return {int(code): title for code, title in re.findall(r'^\s*(\d{4}): "([^"]*)",$', table[1], re.M)}


def readme_rows() -> dict[int, tuple[str, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d{4}) \| `([a-z_]+)` \| ([^|]+?) \| [^|]+ \|$", text, re.M)
    return {int(code): (name, title) for code, name, title in rows}


def test_the_page_has_a_title_for_every_code_the_gateway_sends() -> None:
    assert page_titles() == {c.code: c.title for c in CODES.values()}


def test_readme_lists_every_code_with_its_name_and_title() -> None:
    assert readme_rows() == {c.code: (c.name, c.title) for c in CODES.values()}


def test_each_code_and_name_is_defined_once() -> None:
    names = [c.name for c in CODES.values()]
    assert len(names) == len(set(names))
    constants = {
        name: value
        for name, value in vars(codes).items()
        if name.startswith("CLOSE_") and isinstance(value, int)
    }
    assert sorted(constants.values()) == sorted(CODES), "one CLOSE_ constant per code"


def test_gateway_close_codes_come_from_the_vocabulary() -> None:
    """No module but codes.py assigns a 4xxx close code to a name (CLOSE_DRAINING was defined twice)."""
    offenders = []
    for path in (ROOT / "gateway").rglob("*.py"):
        if path.name == "codes.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.match(r"\s*CLOSE_[A-Z_]+\s*(:\s*\w+(\[\w+\])?)?\s*=\s*\d", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert not offenders, offenders
