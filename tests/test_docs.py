"""The project's own documents match the code: every table and column, every link from the code."""

from __future__ import annotations

import re

import pytest

from jobs.tables import ALL_TABLES
from tests.helpers import ROOT

DOCS = ROOT / "docs"


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _sections(path) -> dict[str, str]:
    """Anchor -> the text under that `## ` heading."""
    out: dict[str, str] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            current = _anchor(line[3:])
            out[current] = ""
        elif current is not None:
            out[current] += line + "\n"
    return out


@pytest.mark.parametrize("spec", ALL_TABLES, ids=lambda s: s.full_name)
def test_the_table_contract_lists_every_column_with_its_type(spec):
    section = _sections(DOCS / "tables.md").get(_anchor(spec.full_name))
    assert section is not None, f"docs/tables.md has no '## {spec.full_name}' section"
    rows = dict(re.findall(r"^\|\s*`([a-z0-9_]+)`\s*\|\s*`?([A-Z<>]+)`?\s*\|", section, re.MULTILINE))
    assert rows == {f.name: f.type for f in spec.fields}


def test_every_docs_link_in_the_code_names_an_existing_section():
    links = set()
    for pattern in ("jobs/**/*.py", "ray_backfill/**/*.py", "benchmarks/*.py", "tests/*.py", "pyproject.toml"):
        for path in ROOT.glob(pattern):
            links |= set(re.findall(r"docs/([a-z_]+\.md)#([a-z0-9_-]+)", path.read_text()))
    assert len(links) >= 4
    for doc, anchor in sorted(links):
        assert anchor in _sections(DOCS / doc), f"docs/{doc} has no section #{anchor}"
