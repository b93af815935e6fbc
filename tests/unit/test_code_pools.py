"""Code pools in the core: which pools a template reads, and upload checks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rapport.core.code_pools import (
    CodeError,
    UnresolvablePoolReference,
    clean_codes,
    pool_errors,
    template_code_pools,
    unique_in_order,
)
from rapport.core.templates import CompiledTemplate, TemplateDefinition, compile_template
from rapport.core.templates.compile import TEXT_ENVIRONMENT, CompiledPart

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def compiled(channel: str, **parts: object) -> CompiledTemplate:
    definition = TemplateDefinition(
        workspace_id="ws",
        id="t",
        name="T",
        channel=channel,
        parts=dict(parts),
        variables={},
        version=1,
        status="active",
        created_at=T0,
        updated_at=T0,
    )
    result = compile_template(definition)
    assert isinstance(result, CompiledTemplate), result
    return result


def test_pools_are_found_in_every_part_and_every_notation() -> None:
    template = compiled(
        "email",
        subject="{{ codes.welcome-10 }} for you",
        html="{% if codes.vip %}<b>{{ codes['summer_25'] | upcase }}</b>{% endif %}",
        text="{{ codes.welcome-10 }}",
    )
    assert template_code_pools(template) == ["summer_25", "vip", "welcome-10"]


def test_pools_are_found_inside_a_webhook_body() -> None:
    template = compiled(
        "webhook", body={"code": "{{ codes.apology }}", "n": [1, "{{ profile.id }}"]}
    )
    assert template_code_pools(template) == ["apology"]
    assert template_code_pools(compiled("sms", body="Hi {{ profile.id }}")) == []


@pytest.mark.parametrize(
    "body",
    ["{{ codes[profile.traits.pool] }}", "{% assign c = codes %}{{ c.x }}", "{{ codes | size }}"],
)
def test_a_pool_that_is_not_written_out_is_refused(body: str) -> None:
    definition = TemplateDefinition(
        workspace_id="ws",
        id="t",
        name="T",
        channel="sms",
        parts={"body": body},
        variables={},
        version=1,
        status="active",
        created_at=T0,
        updated_at=T0,
    )
    errors = compile_template(definition)
    assert isinstance(errors, list)
    assert [(e.path, e.message) for e in errors] == [
        ("$.body", "read a promo code as codes.<pool id>, the pool written out")
    ]
    # And at send time, should such a template have been stored before the check.
    parsed = CompiledTemplate(
        workspace_id="ws",
        id="t",
        version=1,
        channel="sms",
        parts=(CompiledPart("body", TEXT_ENVIRONMENT.from_string(body)),),
        variables={},
    )
    with pytest.raises(UnresolvablePoolReference, match=r"\$\.body: codes must be read as"):
        template_code_pools(parsed)


def test_codes_is_a_root_a_template_may_read_but_no_default_may_fill() -> None:
    from rapport.core.templates import parse_draft

    errors = parse_draft(
        "ws",
        "t",
        {"name": "T", "channel": "sms", "body": "x", "variables": {"codes.welcome": "FREE"}},
    )
    assert isinstance(errors, list)
    assert [e.path for e in errors] == ["$.variables['codes.welcome']"]


def test_uploads_are_stripped_blank_lines_skipped_and_bad_codes_named() -> None:
    assert clean_codes([" A1 ", "", "B2\n"]) == ["A1", "B2"]
    assert clean_codes(["A1", 7]) == CodeError("codes[1]", "a code is a string")
    assert clean_codes(["A\x00B"]) == CodeError("codes[0]", "a code cannot hold control characters")
    bad = clean_codes(["x" * 201])
    assert isinstance(bad, CodeError) and bad.field == "codes[0]"
    assert unique_in_order(["b", "a", "b", "c", "a"]) == (["b", "a", "c"], 2)


def test_pool_bodies_are_checked_field_by_field() -> None:
    assert pool_errors({"id": "welcome-10", "description": "10% off"}) == []
    fields = [e.field for e in pool_errors({"id": "Bad Id", "description": 3, "size": 1})]
    assert fields == ["id", "description", "size"]
