"""docs/stories.md cannot drift from the published examples: every YAML excerpt is a
contiguous part of a file in examples/journeys/, every JSON block parses, and
every relative link points at a file that exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "stories.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\]\((?!https?:|#)([^)#]+)(?:#[^)]*)?\)")


def blocks(kind: str) -> list[str]:
    return [body for info, body in FENCE.findall(DOC.read_text()) if info == kind]


def test_yaml_excerpts_are_parts_of_the_published_examples() -> None:
    examples = [p.read_text() for p in (ROOT / "examples" / "journeys").glob("*.yaml")]
    excerpts = blocks("yaml")
    assert excerpts
    for excerpt in excerpts:
        assert any(excerpt in text for text in examples), excerpt[:200]


def test_json_blocks_parse() -> None:
    found = blocks("json")
    assert found
    for body in found:
        json.loads(body)


def test_links_point_at_files_that_exist() -> None:
    for target in LINK.findall(DOC.read_text()):
        assert (DOC.parent / target).resolve().exists(), target
