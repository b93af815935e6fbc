"""The small HTML pages customers see behind message links: preferences, done, thanks.

Everything shown is escaped; nothing is loaded from elsewhere (no scripts,
no fonts, no images), so the pages work in any browser and leak nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from starlette.responses import HTMLResponse

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:32rem;margin:3rem auto;
padding:0 1rem;color:#222;line-height:1.5}
h1{font-size:1.4rem}label{display:block;padding:.4rem 0}
button{margin-top:1rem;padding:.5rem 1.2rem;font-size:1rem}.note{color:#555}
"""

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


_CHANNEL_WORDS = {"email": "email", "sms": "SMS", "push": "push notification", "in_app": "in-app"}
"""How a channel reads in a page title; any other (or none) is "message"."""


def category_label(category: str, names: Mapping[str, str] | None = None) -> str:
    """What a consent category is called on the page: its topic's name from ``names``
    (category -> name, from the workspace policy), else ``topic:news`` is "news"."""
    if names and category in names:
        return names[category]
    if category == "marketing":
        return "Marketing messages"
    return category.removeprefix("topic:")


def preference_title(channel: str | None) -> str:
    """The page title for a link sent by ``channel`` (the token's)."""
    return f"Your {_CHANNEL_WORDS.get(channel or '', 'message')} preferences"


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


def preference_page(
    states: Mapping[str, bool],
    *,
    saved: bool = False,
    channel: str | None = None,
    names: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """The form listing ``states`` (category -> subscribed), posting back to the same URL.

    ``channel`` (the link's) words the title; ``names`` (category -> topic name)
    labels the boxes, a category without one showing its id.

    A hidden ``categories`` field names every category shown, so an unticked
    box (which browsers do not send) still reads as "unsubscribe".
    """
    rows = []
    for category, subscribed in states.items():
        name = escape(category, quote=True)
        checked = " checked" if subscribed else ""
        rows.append(
            f'<input type=hidden name=categories value="{name}">'
            f'<label><input type=checkbox name="{name}" value=on{checked}> '
            f"{escape(category_label(category, names))}</label>"
        )
    note = "<p class=note role=status>Your preferences are saved.</p>" if saved else ""
    body = (
        f"{note}<p>Choose which messages you want to receive from us.</p>"
        f"<form method=post>{''.join(rows)}<button type=submit>Save</button></form>"
    )
    return page(preference_title(channel), body)


def unsubscribed_page(category: str, names: Mapping[str, str] | None = None) -> HTMLResponse:
    """What a one-click unsubscribe answers; ``names`` as for ``preference_page``, so
    she reads the topic's name ("Weekly offers"), not its id."""
    label = escape(category_label(category, names))
    return page(
        "You are unsubscribed",
        f"<p>You will no longer receive: {label}.</p>"
        "<p class=note>Changed your mind? Open the link again to manage your preferences.</p>",
    )


def confirmed_page(channel: str, address: str) -> HTMLResponse:
    return page(
        "Thank you",
        f"<p>Your {escape(channel)} address <strong>{escape(address)}</strong> is confirmed.</p>",
    )
