"""One HTTP request to a provider, and what its answer means for delivery.

The SMS, push and webhook channels all POST once and read the status the
same way: 2xx delivered; 408, 425, 429 and 5xx are worth retrying (honouring
``Retry-After``); any other status is refused for good; timeouts and broken
connections are worth retrying.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from rapport.channels.base import PermanentDeliveryError, TransientDeliveryError

RETRYABLE_STATUSES = frozenset((408, 425, 429))
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
_DETAIL_CHARS = 300


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the provider asked us to wait, from ``Retry-After`` (seconds or an HTTP date).

    An HTTP date is measured against the response's own ``Date`` header, so
    no clock is read here; without one the date cannot be used and is ignored.
    """
    raw = response.headers.get("retry-after", "").strip()
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        until = parsedate_to_datetime(raw)
        sent = parsedate_to_datetime(response.headers.get("date", ""))
    except (TypeError, ValueError, IndexError):
        return None
    if until.tzinfo is None or sent.tzinfo is None:
        return None
    return max(0.0, (until - sent).total_seconds())


def _detail(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    if len(text) > _DETAIL_CHARS:
        text = text[:_DETAIL_CHARS] + "..."
    return f"HTTP {response.status_code}: {text}" if text else f"HTTP {response.status_code}"


def check_response(response: httpx.Response) -> None:
    """Raise the delivery error a non-2xx answer means; return for a 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status >= 500 or status in RETRYABLE_STATUSES:
        raise TransientDeliveryError(_detail(response), retry_after=retry_after(response))
    raise PermanentDeliveryError(_detail(response))


async def post(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    """POST once; a 2xx response, or the delivery error the outcome means."""
    try:
        response = await client.post(url, **kwargs)
    except httpx.TimeoutException as exc:
        raise TransientDeliveryError(f"timed out: {type(exc).__name__}") from exc
    except httpx.TransportError as exc:
        raise TransientDeliveryError(f"{type(exc).__name__}: {exc}") from exc
    except httpx.InvalidURL as exc:
        raise PermanentDeliveryError(f"invalid URL {url!r}: {exc}") from exc
    check_response(response)
    return response


def json_field(response: httpx.Response, name: str) -> str | None:
    """A string field of a JSON object body, if there is one."""
    try:
        body = response.json()
    except ValueError:
        return None
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None
