"""Code pools: lists of unique promo codes, each given to at most one customer.

A marketer uploads the codes her shop generated (``SPRING-7Q2M``...) into a
pool; a template that reads ``codes.<pool id>`` gets one of them for the
customer it is rendered for. The rules every backend keeps
(``rapport.storage.code_pools``):

- one code per customer per pool: claiming again for the same profile
  returns the code she already has (a retried send shows the same code);
- a code is never given to two customers, even under concurrent claims;
- an exhausted pool gives nothing: the message cannot go out (it is not sent
  with a hole where the code should be).

Which pools a template draws from is found by static analysis of its Liquid
(``template_code_pools``), so codes are claimed before the render and only
for the pools the template names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec
from liquid import BoundTemplate

from rapport.core.templates.compile import CompiledTemplate
from rapport.core.templates.definitions import TEMPLATE_ID_PATTERN

CODES_ROOT: Final = "codes"
"""The render-context root a template reads claimed codes from."""

POOL_ID_PATTERN: Final = TEMPLATE_ID_PATTERN
_POOL_ID = re.compile(POOL_ID_PATTERN)
MAX_DESCRIPTION_LENGTH: Final = 2000
MAX_CODE_LENGTH: Final = 200
MAX_CODES_PER_UPLOAD: Final = 100_000
# Control characters would be invisible in a message, or break a header or SMS.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class CodePool(msgspec.Struct, frozen=True, kw_only=True):
    workspace_id: str
    id: str
    description: str
    created_at: datetime


class PoolStats(msgspec.Struct, frozen=True, kw_only=True):
    available: int
    claimed: int

    @property
    def total(self) -> int:
        return self.available + self.claimed


class AddedCodes(msgspec.Struct, frozen=True, kw_only=True):
    """What an upload did: ``added`` new codes, ``duplicates`` already in the
    pool (or repeated within the upload) and left as they were."""

    added: int
    duplicates: int


class CodePoolExists(Exception):
    def __init__(self, workspace_id: str, pool_id: str) -> None:
        super().__init__(f"code pool {pool_id!r} already exists")
        self.workspace_id = workspace_id
        self.pool_id = pool_id


class CodePoolNotFound(LookupError):
    def __init__(self, workspace_id: str, pool_id: str) -> None:
        super().__init__(f"no code pool {pool_id!r}")
        self.workspace_id = workspace_id
        self.pool_id = pool_id


@dataclass(frozen=True, slots=True)
class CodeError:
    """One thing wrong with a pool or an upload, at ``field`` (``codes[3]``)."""

    field: str
    message: str


def is_pool_id(value: object) -> bool:
    return isinstance(value, str) and _POOL_ID.fullmatch(value) is not None


def pool_errors(body: Mapping[str, Any]) -> list[CodeError]:
    """What is wrong with a pool's JSON body (``id``, optional ``description``)."""
    errors: list[CodeError] = []
    if not is_pool_id(body.get("id")):
        errors.append(
            CodeError(
                "id",
                "id must be 1-100 of a-z, 0-9, '-', '_',"
                " starting and ending with a letter or digit",
            )
        )
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LENGTH:
        errors.append(
            CodeError(
                "description", f"description must be a string of at most {MAX_DESCRIPTION_LENGTH}"
            )
        )
    for name in sorted(set(body) - {"id", "description"}):
        errors.append(CodeError(name, "unknown field; a code pool has id and description"))
    return errors


def clean_codes(values: Iterable[object]) -> list[str] | CodeError:
    """The codes of an upload, stripped, blank ones skipped; or the first bad one.

    Order is kept: codes are handed out in the order they were uploaded.
    """
    codes: list[str] = []
    for index, value in enumerate(values):
        if not isinstance(value, str):
            return CodeError(f"codes[{index}]", "a code is a string")
        code = value.strip()
        if not code:
            continue
        if len(code) > MAX_CODE_LENGTH:
            return CodeError(f"codes[{index}]", f"a code has at most {MAX_CODE_LENGTH} characters")
        if _CONTROL.search(code):
            return CodeError(f"codes[{index}]", "a code cannot hold control characters")
        codes.append(code)
        if len(codes) > MAX_CODES_PER_UPLOAD:
            return CodeError("codes", f"at most {MAX_CODES_PER_UPLOAD} codes per upload")
    return codes


def unique_in_order(codes: Iterable[str]) -> tuple[list[str], int]:
    """The codes without repeats, first occurrence kept; and how many repeats there were."""
    seen: dict[str, None] = {}
    repeats = 0
    for code in codes:
        if code in seen:
            repeats += 1
        else:
            seen[code] = None
    return list(seen), repeats


class UnresolvablePoolReference(ValueError):
    """A template reads ``codes`` in a way that names no pool statically."""


def template_code_pools(compiled: CompiledTemplate) -> list[str]:
    """The pools a template reads (``codes.<pool>`` or ``codes["<pool>"]``), sorted.

    Any reference counts, even in a branch not taken: the codes are claimed
    before the render. Raises ``UnresolvablePoolReference`` for ``codes`` on
    its own (``{% assign c = codes %}``) or with a computed pool
    (``codes[profile.traits.pool]``): which pool to claim from must be known
    without rendering.
    """
    pools: set[str] = set()
    for part in compiled.parts:
        for template in _templates(part.template):
            analysis = template.analyze(include_partials=False)
            for variable in analysis.globals.get(CODES_ROOT, ()):
                segments = variable.segments
                if len(segments) < 2 or not isinstance(segments[1], str):
                    raise UnresolvablePoolReference(
                        f"$.{part.name}: {CODES_ROOT} must be read as {CODES_ROOT}.<pool id>"
                        " with the pool written out"
                    )
                pools.add(segments[1])
    return sorted(pools)


def _templates(value: Any) -> Iterable[BoundTemplate]:
    if isinstance(value, BoundTemplate):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _templates(item)
    elif isinstance(value, list):
        for item in value:
            yield from _templates(item)
