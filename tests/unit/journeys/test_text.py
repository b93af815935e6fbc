"""Reading definitions from text: YAML the way its author means it, JSON strictly,
repeated keys and aliases refused, unreadable text reported without a traceback."""

from __future__ import annotations

import re

import pytest

from rapport.core.journeys import DocumentError, parse_document
from rapport.core.journeys.text import detect_format


def test_yaml_scalars_follow_yaml_1_2() -> None:
    text = """
    at: 19:30
    on: [mon]
    yes: no
    flag: true
    day: 2026-06-01
    when: 2026-06-01T09:00:00Z
    count: 012
    hex: 0x1F
    ratio: 2.5e1
    nothing: ~
    """
    assert parse_document(text.replace("\n    ", "\n"), "yaml") == {
        "at": "19:30",
        "on": ["mon"],
        "yes": "no",
        "flag": True,
        "day": "2026-06-01",
        "when": "2026-06-01T09:00:00Z",
        "count": 12,
        "hex": 31,
        "ratio": 25.0,
        "nothing": None,
    }


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("a: 1\na: 2\n", "yaml", "not valid YAML: line 2, column 1: duplicate key 'a'"),
        ("a: &x [1]\nb: *x\n", "yaml", "aliases (*name) are not allowed in definitions"),
        ("a: [\n", "yaml", "not valid YAML: line 2, column 1:"),
        ('{"a": 1, "a": 2}', "json", "duplicate key 'a' in an object"),
        ('{"a": NaN}', "json", "NaN is not a JSON number"),
        ('{"a": ', "json", "not valid JSON"),
        (b"\xff\xfe", None, "the text is not UTF-8"),
        ("[" * 100_000, "json", "the document nests too deeply"),
    ],
)
def test_unreadable_text(text: str | bytes, fmt: str | None, message: str) -> None:
    with pytest.raises(DocumentError, match=re.escape(message)):
        parse_document(text, fmt)


def test_merge_keys_are_not_duplicates_and_json_is_guessed() -> None:
    assert parse_document("a: 1\nb: {<<: {c: 1}, d: 2}\n") == {"a": 1, "b": {"c": 1, "d": 2}}
    assert detect_format('  {"a": 1}') == "json"
    assert detect_format("a: 1") == "yaml"
    assert parse_document(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
