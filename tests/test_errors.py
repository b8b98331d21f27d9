"""docs/errors.md lists every error code the API can answer with, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# `code="…"` where an error is raised or answered, and a default `code: str = "…"` of an error class
IN_SOURCE = re.compile(r'\bcode(?:: str = |=)"([a-z_]+)"')
IN_DOCS = re.compile(r"^\| [0-9x]+ \| `([a-z_]+)` \|", re.MULTILINE)


def test_documented_codes_are_the_codes_in_the_source() -> None:
    in_source = {code for path in (ROOT / "openft").rglob("*.py") for code in IN_SOURCE.findall(path.read_text())}
    documented = set(IN_DOCS.findall((ROOT / "docs" / "errors.md").read_text()))
    assert in_source, "the pattern found no codes: the test itself is broken"
    assert sorted(in_source - documented) == [], "codes the API can return but docs/errors.md doesn't list"
    assert sorted(documented - in_source) == [], "codes docs/errors.md lists but no code returns"
