"""The template core: shape checks, the locked-down Liquid environment, the rule for
missing values, limits, and that a render returns a failure instead of raising."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from rapport.core.model import ConsentValue, Event, Identifier, Membership, Profile, TraitValue
from rapport.core.templates import (
    CompiledTemplate,
    RenderContext,
    Rendered,
    RenderFailure,
    TemplateCache,
    TemplateError,
    compile_template,
    event_context,
    next_template,
    parse_draft,
    profile_context,
    render_template,
)
from rapport.core.templates.compile import HTML_OUTPUT_LIMIT, LOOP_ITERATION_LIMIT

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def compiled(**body: Any) -> CompiledTemplate:
    draft = parse_draft("ws", "t", {"name": "T", **body})
    assert not isinstance(draft, list), draft
    result = compile_template(next_template(None, draft, T0))
    assert not isinstance(result, list), result
    return result


def errors(**body: Any) -> list[TemplateError]:
    draft = parse_draft("ws", "t", {"name": "T", **body})
    if isinstance(draft, list):
        return draft
    result = compile_template(next_template(None, draft, T0))
    assert isinstance(result, list), "expected errors"
    return result


def rendered(template: CompiledTemplate, **context: Any) -> Rendered:
    result = render_template(template, RenderContext(**{"now": T0, **context}))
    assert isinstance(result, Rendered), result
    return result


def failed(template: CompiledTemplate, **context: Any) -> RenderFailure:
    result = render_template(template, RenderContext(**{"now": T0, **context}))
    assert isinstance(result, RenderFailure), result
    return result


def sms(body: str, **more: Any) -> CompiledTemplate:
    return compiled(channel="sms", body=body, **more)


def test_profile_and_event_context_are_plain_values() -> None:
    observed = {"source": "api", "observed_at": T0, "received_at": T0}
    profile = Profile(
        id="prof_1",
        workspace_id="ws",
        created_at=T0,
        updated_at=T0,
        identifiers=[
            Identifier("email", "dana@example.com"),
            Identifier("user_id", "dana"),
            Identifier("email", "d@work.example"),
        ],
        traits={"first_name": TraitValue(value="Dana", **observed)},
        consent={"email_marketing": ConsentValue(granted=True, **observed)},
        segments={
            "vip": Membership(version=1, entered_at=T0),
            "b": Membership(version=2, entered_at=T0),
        },
    )
    event = Event(
        workspace_id="ws",
        message_id="m1",
        type="track",
        timestamp=T0,
        received_at=T0,
        source="api",
        event="Order Completed",
        properties={"total": 3},
    )
    template = sms(
        "{{ profile.traits.first_name }} {{ profile.identifiers.email }}"
        " {{ profile.consent.email_marketing }} {{ profile.segments | join: ',' }}"
        " {{ event.name }} {{ event.properties.total }} {{ event.timestamp }}"
    )
    out = rendered(template, profile=profile_context(profile), event=event_context(event))
    assert out.parts["body"] == (
        "Dana dana@example.com true b,vip Order Completed 3 2026-03-01T12:00:00+00:00"
    )


def test_declared_defaults_fill_missing_and_null_values_without_touching_the_context() -> None:
    template = sms(
        "{{ profile.traits.first_name }}/{{ journey.basket.count }}/{{ offer.code }}",
        variables={
            "profile.traits.first_name": "there",
            "journey.basket.count": 0,
            "offer.code": "WELCOME",
        },
    )
    profile = {"traits": {"first_name": None}}
    out = rendered(template, profile=profile, journey={"basket": {}}, offer={"code": "S2"})
    assert out.parts["body"] == "there/0/S2"
    assert out.defaults_used == ("journey.basket.count", "profile.traits.first_name")
    assert profile == {"traits": {"first_name": None}}


def test_a_default_never_replaces_a_present_value_or_a_scalar_on_its_path() -> None:
    template = sms("{{ journey.a }}", variables={"journey.a.b": "x", "journey.z": ""})
    out = rendered(template, journey={"a": "plain"})
    assert out.parts["body"] == "plain"
    assert out.defaults_used == ("journey.z",)


def test_undefined_values_may_be_tested_or_defaulted_inline_but_not_output() -> None:
    template = sms(
        "{% if profile.traits.vip %}VIP{% else %}no{% endif %}"
        " {% unless offer.code %}none{% endunless %}"
        " {% if journey.x == nil %}nil{% endif %}"
        " {{ event.properties.size | default: 'M' }}"
    )
    assert rendered(template).parts["body"] == "no none nil M"
    failure = failed(sms("Hi {{ profile.traits.first_name }}"))
    assert failure == RenderFailure(
        "missing_variable", "profile.traits.first_name is undefined", "$.body", 1, 7
    )
    loop = failed(sms("{% for i in journey.items %}{{ i }}{% endfor %}"))
    assert loop.code == "missing_variable"


def test_html_parts_escape_values_and_other_parts_do_not() -> None:
    template = compiled(
        channel="email",
        subject="{{ profile.traits.note }}",
        html="<b>{{ profile.traits.note }}</b>{{ profile.traits.note | safe }}",
        text="{{ profile.traits.note }}",
    )
    out = rendered(template, profile={"traits": {"note": "<i>&</i>"}})
    assert out.parts == {
        "subject": "<i>&</i>",
        "html": "<b>&lt;i&gt;&amp;&lt;/i&gt;</b><i>&</i>",
        "text": "<i>&</i>",
    }


def test_nothing_outside_the_context_can_be_read() -> None:
    for source in ("{% include 'etc/passwd' %}", "{% render 'x' %}"):
        found = errors(channel="sms", body=source)
        assert [e.path for e in found] == ["$.body"] and "unexpected tag" in found[0].message
    found = errors(channel="sms", body="{{ settings.secret }}{% assign x = 1 %}{{ x }}")
    assert [str(e) for e in found] == [
        "$.body: unknown variable 'settings'; a template reads profile, event, journey, offer,"
        " codes, links (line 1, column 4)"
    ]


def test_links_are_the_messages_own_and_take_no_default() -> None:
    template = sms("Stop: {{ links.unsubscribe }}")
    link = "https://rapport.test/l/u/abc.def"
    assert rendered(template, links={"unsubscribe": link}).parts == {"body": f"Stop: {link}"}
    # A preview has no message, so no link: the template says so instead of sending a hole.
    assert failed(template).code == "missing_variable"
    optional = sms("Hi{% if links.unsubscribe %} - stop: {{ links.unsubscribe }}{% endif %}")
    assert rendered(optional).parts == {"body": "Hi"}
    found = errors(channel="sms", body="x", variables={"links.unsubscribe": "https://x"})
    assert [e.path for e in found] == ["$.variables['links.unsubscribe']"], found


def test_limits_fail_the_render_instead_of_sending_a_cut_message() -> None:
    loop = sms("{% for i in (1..20000) %}{% endfor %}done")
    failure = failed(loop)
    assert failure.code == "limit_exceeded" and "loop" in failure.message
    assert LOOP_ITERATION_LIMIT < 20000
    big = compiled(
        channel="email",
        subject="s",
        html="{% for i in (1..9000) %}{{ journey.chunk }}{% endfor %}",
    )
    failure = failed(big, journey={"chunk": "x" * 100})
    assert failure.code == "limit_exceeded" and failure.path == "$.html"
    assert HTML_OUTPUT_LIMIT < 9000 * 100
    text = sms("{% for i in (1..9000) %}{{ journey.chunk }}{% endfor %}")
    assert failed(text, journey={"chunk": "x" * 10}).code == "limit_exceeded"


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("{{ journey.n | divided_by: 0 }}", "render_error"),
        ("{{ journey.n | plus: journey.s }}", None),
        ("{{ journey.d | date: '%Y' }}", None),
        ("{{ journey.s | split: journey.n }}", None),
        ("{{ journey.items | sort: 'k' | map: 'k' | join }}", None),
    ],
)
def test_a_render_never_raises(source: str, code: str | None) -> None:
    template = sms(source)
    journey = {"n": 3, "s": "a,b", "d": "not a date", "items": [{"k": 2}, {"k": None}, 7]}
    result = render_template(template, RenderContext(now=T0, journey=journey))
    if code is None:
        assert isinstance(result, Rendered | RenderFailure)
    else:
        assert isinstance(result, RenderFailure) and result.code == code


def test_webhook_bodies_keep_their_json_structure() -> None:
    template = compiled(
        channel="webhook",
        body={"name": "{{ profile.traits.name }}", "n": [1, True, None, "{{ offer.x }}"]},
    )
    out = rendered(template, profile={"traits": {"name": '", "admin": true'}}, offer={"x": "{}"})
    assert out.parts["body"] == {"name": '", "admin": true', "n": [1, True, None, "{}"]}
    failure = failed(template, profile={"traits": {}})
    assert failure.path == "$.body['name']" and failure.code == "missing_variable"
    found = errors(channel="webhook", body={"a": ["ok", "{{ x"]})
    assert [e.path for e in found] == ["$.body['a'][1]"]


def test_shape_errors_are_all_returned_with_paths() -> None:
    found = errors(
        channel="push",
        body=3,
        deep_link=None,
        html="x",
        variables={"profile": 1, "journey.ok": 2, "x.y": 3},
    )
    assert sorted(e.path for e in found) == [
        "$.body",
        "$.html",
        "$.title",
        "$.variables['profile']",
        "$.variables['x.y']",
    ]
    assert [e.path for e in errors(channel="email", subject="s")] == ["$.html"]


def test_the_cache_compiles_each_version_once() -> None:
    draft = parse_draft("ws", "t", {"name": "T", "channel": "sms", "body": "hi"})
    assert not isinstance(draft, list)
    v1 = next_template(None, draft, T0)
    v2 = next_template(v1, draft, T0)
    cache = TemplateCache(size=1)
    first = cache.get(v1)
    assert cache.get(v1) is first
    assert cache.get(v2) is not first and len(cache) == 1
    assert cache.get(v1) is not first  # evicted by v2, compiled again


def test_now_is_the_render_time_never_the_machine_clock() -> None:
    # A date the machine's clock cannot show while this suite runs.
    virtual = datetime(2031, 2, 14, 9, 30, tzinfo=UTC)
    template = sms(
        '{{ "now" | date: "%Y-%m-%d %H:%M" }} {{ "today" | date: "%A" }}'
        ' {{ "now" | date: "%s" }} {{ event.timestamp | date: "%d/%m/%Y" }}'
    )
    event = {"timestamp": "2026-03-01T12:00:00+00:00"}
    result = rendered(template, now=virtual, event=event)
    stamp = str(int(virtual.timestamp()))
    assert result.parts["body"] == f"2031-02-14 09:30 Friday {stamp} 01/03/2026"
    later = rendered(template, now=datetime(2031, 2, 15, 0, 0, tzinfo=UTC), event=event)
    assert later.parts["body"].startswith("2031-02-15 00:00 Saturday")


def test_now_cannot_be_read_as_a_variable() -> None:
    # The render keeps its time among the template globals under a name no template reaches.
    found = errors(channel="sms", body='{{ ["rapport.now"] }}')
    assert [e.message for e in found] == [
        "unknown variable 'rapport.now'; a template reads profile, event, journey, offer,"
        " codes, links"
    ]
