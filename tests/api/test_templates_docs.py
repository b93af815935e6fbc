"""docs/templates.md cannot drift from the code: every example is run through the API
in the order it is written (``identify`` calls, ``template`` saves, ``preview`` calls)
and each ``rendered`` block must be exactly the preview's answer; the error example
must be what saving that template answers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.api.conftest import ApiHarness

DOC = Path(__file__).resolve().parents[2] / "docs" / "templates.md"
FENCE = re.compile(r"^```json ?([\w -]*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def examples() -> list[tuple[str, Any]]:
    return [(info.strip(), json.loads(body)) for info, body in FENCE.findall(DOC.read_text())]


async def test_every_example_renders_as_shown(api: ApiHarness) -> None:
    template_id = ""
    answer: dict[str, Any] | None = None
    checked = 0
    for info, body in examples():
        kind, _, target = info.partition(" ")
        if kind == "identify":
            sent = await api.client.post(
                "/v1/batch", json={"batch": [body]}, auth=(api.write_key, "")
            )
            assert sent.status_code == 200 and sent.json()["rejected"] == [], sent.text
            await api.settle()
        elif kind == "template":
            saved = await api.client.post("/api/templates", json=body, headers=api.admin)
            assert saved.status_code == 201, saved.text
            template_id = body["id"]
        elif kind == "preview":
            response = await api.client.post(
                f"/api/templates/{target or template_id}/preview", json=body, headers=api.admin
            )
            assert response.status_code == 200, response.text
            answer = response.json()
        elif kind == "rendered":
            assert answer == body
            answer = None
            checked += 1
    assert checked == 5


async def test_the_error_example_is_what_saving_answers(api: ApiHarness) -> None:
    (shown,) = [body for info, body in examples() if info == ""]
    wrong = {
        "id": "wrong",
        "name": "Wrong",
        "channel": "email",
        "subject": "s",
        "html": "<ul>\n{% for item in event.properties.items %}\n<li>{{ item }}</li>\n{% endif %}",
        "text": "{{ profile.traits.first_name | shout }}",
    }
    response = await api.client.post("/api/templates", json=wrong, headers=api.admin)
    assert response.status_code == 422
    assert response.json() == shown
