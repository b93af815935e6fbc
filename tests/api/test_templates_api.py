"""The template API on SQLite and PostgreSQL: CRUD with versions, 422 with paths for
bad templates, 404 for unknown ids, and previews against a real profile and sample data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rapport.core.clock import VirtualClock
from tests.api.conftest import ApiHarness

THANKS: dict[str, Any] = {
    "id": "backorder-thanks",
    "name": "Thank you for waiting",
    "channel": "email",
    "subject": "Thank you, {{ profile.traits.first_name }}",
    "html": "<p>Hi {{ profile.traits.first_name }} ({{ profile.traits.nickname }}),"
    " {{ journey.points }} points added.</p>",
    "text": "Hi {{ profile.traits.first_name }}, {{ journey.points }} points added.",
    "variables": {"profile.traits.first_name": "there", "journey.points": 100},
}


async def create(api: ApiHarness, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.client.post("/api/templates", json=body, headers=api.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def preview(api: ApiHarness, template_id: str, **body: Any) -> dict[str, Any]:
    response = await api.client.post(
        f"/api/templates/{template_id}/preview", json=body, headers=api.admin
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def identify(api: ApiHarness, user_id: str, traits: dict[str, Any]) -> None:
    event = {"type": "identify", "userId": user_id, "traits": traits, "messageId": f"i-{user_id}"}
    response = await api.client.post("/v1/batch", json={"batch": [event]}, auth=(api.write_key, ""))
    assert response.status_code == 200 and response.json()["rejected"] == [], response.text
    await api.settle()


async def test_create_read_update_list_and_delete(api_any: ApiHarness) -> None:
    api = api_any
    created = await create(api, THANKS)
    assert (created["version"], created["status"], created["channel"]) == (1, "active", "email")
    assert created["subject"] == THANKS["subject"] and created["variables"] == THANKS["variables"]
    updated = await api.client.put(
        "/api/templates/backorder-thanks",
        json={**THANKS, "id": None, "subject": "Thanks!"} | {"id": "backorder-thanks"},
        headers=api.admin,
    )
    assert updated.status_code == 200 and updated.json()["version"] == 2
    listed = (await api.client.get("/api/templates", headers=api.admin)).json()["templates"]
    assert [(t["id"], t["version"]) for t in listed] == [("backorder-thanks", 2)]
    first = await api.client.get("/api/templates/backorder-thanks?version=1", headers=api.admin)
    assert first.json()["subject"] == THANKS["subject"]
    conflict = await api.client.post("/api/templates", json=THANKS, headers=api.admin)
    assert conflict.status_code == 409 and conflict.json()["code"] == "template_exists"
    deleted = await api.client.delete("/api/templates/backorder-thanks", headers=api.admin)
    assert deleted.json()["status"] == "deleted" and deleted.json()["version"] == 3
    for method, path in [
        ("GET", "/api/templates/backorder-thanks"),
        ("DELETE", "/api/templates/backorder-thanks"),
        ("POST", "/api/templates/backorder-thanks/preview"),
        ("GET", "/api/templates/nope"),
    ]:
        answer = await api.client.request(method, path, json={}, headers=api.admin)
        assert answer.status_code == 404 and answer.json()["code"] == "template_not_found"
    recreated = await api.client.put(
        "/api/templates/backorder-thanks", json=THANKS, headers=api.admin
    )
    assert recreated.status_code == 201 and recreated.json()["version"] == 4


async def test_preview_escapes_html_and_falls_back_to_defaults(api_any: ApiHarness) -> None:
    api = api_any
    await create(api, THANKS)
    await identify(api, "dana", {"first_name": "<script>alert(1)</script>", "nickname": "D&D"})
    dana = await preview(api, "backorder-thanks", profile="user_id:dana", journey={"points": 250})
    assert dana["status"] == "rendered" and dana["version"] == 1
    html = dana["parts"]["html"]
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "(D&amp;D)" in html
    assert "250 points" in html
    # Only the HTML part escapes: the subject and text are plain text.
    assert dana["parts"]["subject"] == "Thank you, <script>alert(1)</script>"
    assert dana["defaults_used"] == []

    await identify(api, "eli", {"nickname": "E"})
    eli = await preview(api, "backorder-thanks", profile="user_id:eli")
    assert eli["parts"]["text"] == "Hi there, 100 points added."
    assert eli["defaults_used"] == ["journey.points", "profile.traits.first_name"]


async def test_a_missing_undeclared_variable_fails_the_preview_with_its_path(
    api_any: ApiHarness,
) -> None:
    api = api_any
    await create(api, THANKS)
    answer = await preview(api, "backorder-thanks", journey={"points": 5})
    assert answer["status"] == "failed"
    assert answer["failure"] == {
        "code": "missing_variable",
        "message": "profile.traits.nickname is undefined",
        "path": "$.html",
        "line": 1,
        "column": 43,
    }


async def test_a_template_with_errors_is_refused_with_every_path(api_any: ApiHarness) -> None:
    api = api_any
    body = {
        **THANKS,
        "html": "<ul>\n{% for item in event.properties.items %}\n<li>{{ item }}</li>\n{% endif %}",
        "text": "{{ profile.traits.first_name | shout }} {{ secret }}",
        "variables": {"first_name": "there"},
    }
    answer = await api.client.post("/api/templates", json=body, headers=api.admin)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_template"
    assert answer.json()["field"] == "variables"
    stored = await api.client.get("/api/templates/backorder-thanks", headers=api.admin)
    assert stored.status_code == 404
    body["variables"] = {}
    answer = await api.client.post("/api/templates", json=body, headers=api.admin)
    assert answer.status_code == 422
    error = answer.json()
    assert error["field"] == "html"
    assert error["message"] == "$.html: unexpected tag 'endif' (line 4, column 4)"
    assert error["errors"] == [
        {"path": "$.html", "message": "unexpected tag 'endif'", "line": 4, "column": 4},
        {"path": "$.text", "message": "unknown filter 'shout'", "line": 1, "column": 32},
        {
            "path": "$.text",
            "message": "unknown variable 'secret'; a template reads profile, event, journey,"
            " offer, codes, links",
            "line": 1,
            "column": 44,
        },
    ]


async def test_shape_errors_are_named(api_any: ApiHarness) -> None:
    api = api_any
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({**THANKS, "channel": "fax"}, "channel", "$.channel"),
        ({**THANKS, "subject": None}, "subject", "$.subject"),
        ({**THANKS, "html": None, "text": None}, "html", "$.html"),
        ({**THANKS, "body": "x"}, "body", "$.body"),
        ({**THANKS, "html": 3}, "html", "$.html"),
        ({**THANKS, "html": "{% include 'secrets.txt' %}"}, "html", "$.html"),
        ({**THANKS, "name": ""}, "name", "$.name"),
    ]
    for body, field, path in cases:
        answer = await api.client.post("/api/templates", json=body, headers=api.admin)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["field"] == field, answer.text
        assert answer.json()["errors"][0]["path"] == path
    bad_id = await api.client.post(
        "/api/templates", json={**THANKS, "id": "Bad Id"}, headers=api.admin
    )
    assert bad_id.status_code == 422 and bad_id.json()["field"] == "id"
    await create(api, THANKS)
    for body, field in [
        ({"profile": 3}, "profile"),
        ({"profile": "nocolon"}, "profile"),
        ({"journey": []}, "journey"),
        ({"event": {"name": 1}}, "event.name"),
        ({"version": True}, "version"),
        ({"colour": "red"}, "colour"),
        ({"event": {"colour": "red"}}, "event.colour"),
    ]:
        answer = await api.client.post(
            "/api/templates/backorder-thanks/preview", json=body, headers=api.admin
        )
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json().get("field") == field
    unknown = await api.client.post(
        "/api/templates/backorder-thanks/preview",
        json={"profile": "user_id:nobody"},
        headers=api.admin,
    )
    assert unknown.status_code == 404 and unknown.json()["field"] == "profile"


async def test_every_channel_renders_with_a_sample_event_and_offer(api_any: ApiHarness) -> None:
    api = api_any
    event = {"name": "Order Completed", "properties": {"order_id": "o-1", "total": 42.5}}
    templates = [
        {"channel": "sms", "body": "Order {{ event.properties.order_id }} ok"},
        {
            "channel": "push",
            "title": "{{ event.name }}",
            "body": "{{ event.properties.total }} EUR",
            "deep_link": "app://orders/{{ event.properties.order_id | url_encode }}",
        },
        {"channel": "in_app", "title": "Code", "body": "{{ offer.code | default: 'none' }}"},
        {
            "channel": "webhook",
            "body": {
                "order": "{{ event.properties.order_id }}",
                "lines": ["{{ offer.code }}", 3, None, {"quote": "{{ offer.quote }}"}],
            },
        },
    ]
    expected = [
        {"body": "Order o-1 ok"},
        {"title": "Order Completed", "body": "42.5 EUR", "deep_link": "app://orders/o-1"},
        {"title": "Code", "body": "SAVE10"},
        {"body": {"order": "o-1", "lines": ["SAVE10", 3, None, {"quote": '"}'}]}},
    ]
    for index, (template, parts) in enumerate(zip(templates, expected, strict=True)):
        await create(api, {"id": f"t{index}", "name": f"T{index}", **template})
        answer = await preview(
            api, f"t{index}", event=event, offer={"code": "SAVE10", "quote": '"}'}
        )
        assert answer["status"] == "rendered" and answer["parts"] == parts, answer


async def test_a_preview_shows_sample_codes_and_links_that_act_on_no_one(
    api_any: ApiHarness,
) -> None:
    api = api_any
    api.rapport.clock = VirtualClock(datetime(2031, 2, 14, 9, 30, tzinfo=UTC))
    await create(
        api,
        {
            "id": "flash",
            "name": "Flash sale",
            "channel": "sms",
            "body": "{{ codes.flash-20 }} takes 20% off until {{ 'now' | date: '%b %-d' }}."
            " Stop: {{ links.unsubscribe }}",
        },
    )
    await identify(api, "dana", {"first_name": "Dana"})
    answer = await preview(api, "flash", profile="user_id:dana", codes={"flash-20": "FLASH-SAMPLE"})
    link = f"{api.rapport.settings.public_url.rstrip('/')}/l/u/PREVIEW-not-a-real-link"
    assert answer["status"] == "rendered", answer
    assert answer["parts"] == {"body": f"FLASH-SAMPLE takes 20% off until Feb 14. Stop: {link}"}
    # The pool was never touched: previewing claims nothing.
    stats = await api.client.get("/api/code-pools/flash-20/stats", headers=api.admin)
    assert stats.status_code == 404
    # The preview link is refused by the link endpoints: no page, no unsubscribe.
    path = link.split("://", 1)[1].split("/", 1)[1]
    for method in ("GET", "POST"):
        followed = await api.client.request(method, f"/{path}")
        assert followed.status_code == 400 and followed.json()["code"] == "invalid_link"
    events = await api.client.get("/api/profiles/user_id:dana/events", headers=api.admin)
    assert [e["type"] for e in events.json()["events"]] == ["identify"]

    # Without a sample code, the preview fails as before, naming the pool.
    missing = await preview(api, "flash")
    assert missing["status"] == "failed"
    assert missing["failure"]["message"] == "codes.flash-20 is undefined"
    for codes, field in (([], "codes"), ({"flash-20": 20}, "codes.flash-20")):
        wrong = await api.client.post(
            "/api/templates/flash/preview", json={"codes": codes}, headers=api.admin
        )
        assert wrong.status_code == 422 and wrong.json()["field"] == field, wrong.text
