"""Reading a definition from text: JSON, or YAML read the way its author means it.

YAML 1.1 (what PyYAML implements) reads ``on``, ``yes`` and ``no`` as
booleans, ``19:30`` as the number 1170 and ``2026-06-01`` as a date object:
a definition saying ``at: 19:30`` would fail validation with a baffling
"got a number". Definitions are therefore read with the YAML 1.2 core
scalars: only ``true``/``false`` are booleans, numbers are decimal (or
``0x``/``0o``), and dates and times stay strings for the validator to check.

Two keys with the same name in one object are an error in both languages
(parsers otherwise keep the last silently: a step id typed twice would
lose a step without a word). YAML aliases (``*name``) are refused: they let
a small text expand into a huge tree.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node

JSON: Final = "json"
YAML: Final = "yaml"

_REPLACED_TAGS = frozenset(
    (
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:timestamp",
    )
)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class DocumentError(ValueError):
    """The text is not a readable JSON or YAML document (before any validation)."""


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` with YAML 1.2 core scalars, no duplicate keys and no aliases."""

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise ComposerError(
                None, None, "aliases (*name) are not allowed in definitions", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the constructor refuses it below
                continue
            if duplicate:
                raise ConstructorError(
                    "while reading an object",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits.startswith("0x"):
        return sign * int(digits[2:], 16)
    if digits.startswith("0o"):
        return sign * int(digits[2:], 8)
    return sign * int(digits, 10)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise DocumentError(f"duplicate key {key!r} in an object")
        found[key] = value
    return found


def _no_constant(name: str) -> Any:
    raise DocumentError(f"{name} is not a JSON number")


def detect_format(text: str) -> str:
    """``json`` when the text starts like a JSON object or array, else ``yaml``."""
    return JSON if text.lstrip()[:1] in ("{", "[") else YAML


def parse_document(text: str | bytes, fmt: str | None = None) -> Any:
    """The document ``text`` holds, as JSON values; ``DocumentError`` if it cannot be read.

    ``fmt`` is ``json`` or ``yaml``; None guesses from the text (``detect_format``).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DocumentError(f"the text is not UTF-8: {exc}") from None
    fmt = fmt or detect_format(text)
    try:
        if fmt == JSON:
            try:
                return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
            except json.JSONDecodeError as exc:
                raise DocumentError(f"not valid JSON: {exc}") from None
        if fmt != YAML:
            raise ValueError(f"unknown format {fmt!r} (expected json or yaml)")
        try:
            return yaml.load(text, Loader=_Loader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = "" if mark is None else f"line {mark.line + 1}, column {mark.column + 1}: "
            raise DocumentError(f"not valid YAML: {where}{exc.problem or exc.context}") from None
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            # Explicit tags reach the constructors with any text (``!!int x``).
            raise DocumentError(f"not valid YAML: {exc}") from None
    except RecursionError:
        raise DocumentError("the document nests too deeply") from None
