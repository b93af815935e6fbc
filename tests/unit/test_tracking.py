"""Normalisation rules of the Segment HTTP API (pure core, no HTTP)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from rapport.core.ids import SequentialIds
from rapport.core.tracking import (
    MAX_NESTING,
    MAX_REJECTED_PAYLOAD_CHARS,
    IngestRequest,
    Limits,
    Normalised,
    RequestRejected,
    bounded_payload,
    contains_nul_escape,
    decode_batch,
    decode_single,
    normalise,
)
from rapport.core.tracking_fields import coerce_id, deep_merge, nesting_exceeds, parse_timestamp

RECEIVED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LIMITS = Limits()


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def run_batch(
    events: list[Any], limits: Limits = LIMITS, **envelope: Any
) -> tuple[IngestRequest, Normalised]:
    request = decode_batch(body({"batch": events, **envelope}), limits)
    return request, normalise(
        request,
        workspace_id="ws_1",
        source="write_key:key_1",
        received_at=RECEIVED,
        ids=SequentialIds(),
        limits=limits,
    )


def one(event: dict[str, Any], **envelope: Any) -> Normalised:
    return run_batch([event], **envelope)[1]


def rejection_of(event: dict[str, Any]) -> tuple[str, str | None, str]:
    result = one(event)
    assert result.events == [], "expected the event to be refused"
    [rejection] = result.rejections
    return rejection.code, rejection.field, rejection.message


TRACK = {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m1"}


# -- decoding the request ----------------------------------------------------------


def test_batch_envelope_is_decoded() -> None:
    request = decode_batch(
        body(
            {
                "batch": [TRACK, TRACK],
                "writeKey": "wk_abc",
                "sentAt": "2026-03-01T12:00:05Z",
                "context": {"library": {"name": "x"}},
                "integrations": {"All": False},
            }
        ),
        LIMITS,
    )
    assert request.is_batch
    assert request.write_key == "wk_abc"
    assert len(request.events) == 2
    assert request.sent_at == datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
    assert request.context == {"library": {"name": "x"}}
    assert request.integrations == {"All": False}


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (b"", "invalid_json", None),
        (b"   ", "invalid_json", None),
        (b'{"batch": [', "invalid_json", None),
        (b"{'batch': []}", "invalid_json", None),
        (b"[1, 2]", "invalid_json", None),
        (b'"text"', "invalid_json", None),
        (b"{}", "missing_field", "batch"),
        (b'{"batch": {"type": "track"}}', "invalid_field", "batch"),
        (b'{"batch": [], "context": [1]}', "invalid_field", "context"),
        (b'{"batch": [], "integrations": "x"}', "invalid_field", "integrations"),
        (b'{"batch": [], "sentAt": 5}', "invalid_field", "sentAt"),
        (b'{"batch": [], "sentAt": "yesterday"}', "invalid_timestamp", "sentAt"),
    ],
)
def test_unusable_requests_are_refused_whole(raw: bytes, code: str, field: str | None) -> None:
    with pytest.raises(RequestRejected) as caught:
        decode_batch(raw, LIMITS)
    assert caught.value.code == code
    assert caught.value.field == field
    assert caught.value.message


def test_too_many_events_refuses_the_batch() -> None:
    limits = Limits(max_batch_events=3)
    decode_batch(body({"batch": [TRACK] * 3}), limits)
    with pytest.raises(RequestRejected) as caught:
        decode_batch(body({"batch": [TRACK] * 4}), limits)
    assert caught.value.code == "too_many_events"
    assert caught.value.field == "batch"


def test_body_over_the_batch_limit_is_refused() -> None:
    raw = body({"batch": [TRACK]})
    decode_batch(raw, Limits(max_batch_bytes=len(raw)))
    with pytest.raises(RequestRejected) as caught:
        decode_batch(raw, Limits(max_batch_bytes=len(raw) - 1))
    assert caught.value.code == "batch_too_large"


def test_byte_order_mark_is_tolerated() -> None:
    request = decode_batch(b"\xef\xbb\xbf" + body({"batch": [TRACK]}), LIMITS)
    assert len(request.events) == 1


def test_write_key_that_is_not_a_string_is_ignored() -> None:
    assert decode_batch(body({"batch": [], "writeKey": 12}), LIMITS).write_key is None
    assert decode_batch(body({"batch": [], "writeKey": ""}), LIMITS).write_key is None


def test_single_call_takes_its_type_from_the_path() -> None:
    raw = body({"type": "identify", "event": "Signed Up", "userId": "u1", "writeKey": "wk_1"})
    request = decode_single(raw, "track", LIMITS)
    assert not request.is_batch
    assert request.write_key == "wk_1"
    result = normalise(
        request,
        workspace_id="ws",
        source="s",
        received_at=RECEIVED,
        ids=SequentialIds(),
        limits=LIMITS,
    )
    [event] = result.events
    assert event.type == "track"
    assert event.event == "Signed Up"


def test_single_call_rejection_names_the_field_without_batch_prefix() -> None:
    request = decode_single(body({"userId": "u1", "properties": [1, 2]}), "track", LIMITS)
    result = normalise(
        request,
        workspace_id="ws",
        source="s",
        received_at=RECEIVED,
        ids=SequentialIds(),
        limits=LIMITS,
    )
    [rejection] = result.rejections
    assert rejection.field == "properties"
    assert rejection.index is None


def test_single_call_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(RequestRejected) as caught:
        decode_single(b"[]", "track", LIMITS)
    assert caught.value.code == "invalid_json"


# -- the event ---------------------------------------------------------------------


def test_a_valid_track_becomes_an_event() -> None:
    result = one(
        {
            **TRACK,
            "anonymousId": "a1",
            "properties": {"revenue": 30},
            "context": {"ip": "1.2.3.4"},
            "integrations": {"Mixpanel": False},
            "timestamp": "2026-03-01T11:59:00Z",
            "somethingElse": [1, 2, 3],
        }
    )
    assert result.rejections == []
    [event] = result.events
    assert event.workspace_id == "ws_1"
    assert event.source == "write_key:key_1"
    assert event.message_id == "m1"
    assert event.type == "track"
    assert event.event == "Order Completed"
    assert event.user_id == "u1"
    assert event.anonymous_id == "a1"
    assert event.properties == {"revenue": 30}
    assert event.context == {"ip": "1.2.3.4"}
    assert event.integrations == {"Mixpanel": False}
    assert event.received_at == RECEIVED


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            {"type": "identify", "userId": "u1", "traits": {"plan": "gold"}},
            {"traits": {"plan": "gold"}},
        ),
        (
            {"type": "page", "anonymousId": "a", "name": "Home", "category": "Docs"},
            {"name": "Home", "category": "Docs"},
        ),
        ({"type": "screen", "anonymousId": "a", "name": "Cart"}, {"name": "Cart"}),
        (
            {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"n": 1}},
            {"group_id": "g1", "traits": {"n": 1}},
        ),
        ({"type": "alias", "userId": "u1", "previousId": "a9"}, {"previous_id": "a9"}),
    ],
)
def test_every_event_type_is_accepted(event: dict[str, Any], expected: dict[str, Any]) -> None:
    result = one(event)
    assert result.rejections == []
    [accepted] = result.events
    assert accepted.type == event["type"]
    for name, value in expected.items():
        assert getattr(accepted, name) == value


def test_message_id_is_generated_when_missing_or_empty() -> None:
    _, result = run_batch(
        [
            {"type": "track", "event": "E", "userId": "u"},
            {"type": "track", "event": "E", "userId": "u", "messageId": ""},
        ]
    )
    ids = [e.message_id for e in result.events]
    assert ids == ["msg_000001", "msg_000002"]


def test_message_id_must_be_shorter_than_100_characters() -> None:
    assert one({**TRACK, "messageId": "m" * 99}).events[0].message_id == "m" * 99
    code, field, _ = rejection_of({**TRACK, "messageId": "m" * 100})
    assert (code, field) == ("invalid_message_id", "batch.0.messageId")


def test_message_id_must_be_a_string() -> None:
    code, field, _ = rejection_of({**TRACK, "messageId": 12})
    assert (code, field) == ("invalid_field", "batch.0.messageId")


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (42, "42"),
        (42.0, "42"),
        (-7, "-7"),
        (1.5, "1.5"),
        (12345678901234567890, "12345678901234567890"),
        ("u-1", "u-1"),
        (" padded ", " padded "),
    ],
)
def test_numeric_ids_are_coerced_to_strings(sent: Any, stored: str) -> None:
    [event] = one({"type": "group", "userId": sent, "anonymousId": sent, "groupId": sent}).events
    assert (event.user_id, event.anonymous_id, event.group_id) == (stored, stored, stored)


def test_alias_previous_id_is_coerced() -> None:
    [event] = one({"type": "alias", "userId": 5, "previousId": 6}).events
    assert (event.user_id, event.previous_id) == ("5", "6")


@pytest.mark.parametrize(
    "ids",
    [
        {},
        {"userId": None},
        {"userId": ""},
        {"anonymousId": "   "},
        {"userId": "", "anonymousId": "\t"},
    ],
)
def test_an_event_needs_a_user_id_or_anonymous_id(ids: dict[str, Any]) -> None:
    code, field, message = rejection_of({"type": "track", "event": "E", **ids})
    assert code == "missing_identity"
    assert field == "batch.0.userId"
    assert "anonymousId" in message


def test_a_blank_user_id_is_dropped_when_anonymous_id_is_present() -> None:
    [event] = one({"type": "track", "event": "E", "userId": " ", "anonymousId": "a"}).events
    assert event.user_id is None
    assert event.anonymous_id == "a"


@pytest.mark.parametrize(
    ("name", "value"),
    [("userId", True), ("userId", {"id": 1}), ("anonymousId", [1]), ("groupId", False)],
)
def test_junk_ids_are_refused_naming_the_field(name: str, value: Any) -> None:
    code, field, message = rejection_of(
        {"type": "group", "userId": "u", "groupId": "g", name: value}
    )
    assert (code, field) == ("invalid_field", f"batch.0.{name}")
    assert name in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("properties", [1, 2]),
        ("traits", "gold"),
        ("context", 5),
        ("integrations", [True]),
        ("event", 12),
        ("timestamp", 1700000000),
        ("name", {"a": 1}),
        ("type", 3),
    ],
)
def test_wrong_field_types_are_refused_naming_the_field(name: str, value: Any) -> None:
    code, field, message = rejection_of({**TRACK, name: value})
    assert (code, field) == ("invalid_field", f"batch.0.{name}")
    assert message.startswith(f"{name}: expected")


@pytest.mark.parametrize(
    ("event", "code", "field"),
    [
        ({"userId": "u", "event": "E"}, "missing_field", "type"),
        ({"type": "purchase", "userId": "u"}, "invalid_type", "type"),
        ({"type": "Track", "userId": "u", "event": "E"}, "invalid_type", "type"),
        ({"type": "track", "userId": "u"}, "missing_field", "event"),
        ({"type": "track", "userId": "u", "event": "  "}, "missing_field", "event"),
        ({"type": "alias", "userId": "u"}, "missing_field", "previousId"),
        ({"type": "alias", "anonymousId": "a", "previousId": "p"}, "missing_field", "userId"),
        ({"type": "group", "userId": "u"}, "missing_field", "groupId"),
    ],
)
def test_required_fields_per_type(event: dict[str, Any], code: str, field: str) -> None:
    assert rejection_of(event)[:2] == (code, f"batch.0.{field}")


@pytest.mark.parametrize("value", [1, "x", None, [TRACK]])
def test_an_event_that_is_not_an_object_is_refused(value: Any) -> None:
    code, field, _ = rejection_of(value)
    assert (code, field) == ("invalid_event", "batch.0")


def test_event_over_the_size_limit_is_refused_alone() -> None:
    small = {**TRACK, "messageId": "small"}
    big = {**TRACK, "messageId": "big", "properties": {"blob": "x" * 500}}
    limits = Limits(max_event_bytes=len(body(big)) - 1)
    _, result = run_batch([small, big, small], limits=limits)
    assert [e.message_id for e in result.events] == ["small", "small"]
    [rejection] = result.rejections
    assert rejection.code == "event_too_large"
    assert rejection.field == "batch.1"
    assert rejection.index == 1
    assert rejection.message_id == "big"
    # Exactly at the limit is fine.
    _, at_limit = run_batch([big], limits=Limits(max_event_bytes=len(body(big))))
    assert len(at_limit.events) == 1


def test_partial_batch_keeps_good_events_and_describes_bad_ones() -> None:
    _, result = run_batch(
        [
            {**TRACK, "messageId": "ok-1"},
            {"type": "track", "event": "E", "messageId": "no-id"},
            {**TRACK, "messageId": "ok-2"},
            {"type": "nope", "userId": "u"},
        ]
    )
    assert [e.message_id for e in result.events] == ["ok-1", "ok-2"]
    assert [(r.index, r.code, r.field) for r in result.rejections] == [
        (1, "missing_identity", "batch.1.userId"),
        (3, "invalid_type", "batch.3.type"),
    ]
    first = result.rejections[0]
    assert first.workspace_id == "ws_1"
    assert first.source == "write_key:key_1"
    assert first.received_at == RECEIVED
    assert first.message_id == "no-id"
    assert json.loads(first.payload) == {"type": "track", "event": "E", "messageId": "no-id"}


def test_rejected_payload_is_bounded() -> None:
    huge = {"type": "track", "userId": "u", "properties": {"x": "y" * 100_000}}
    _, result = run_batch([huge], limits=Limits(max_event_bytes=1000))
    [rejection] = result.rejections
    assert len(rejection.payload) == MAX_REJECTED_PAYLOAD_CHARS
    assert bounded_payload("é".encode() * 10_000) == "é" * MAX_REJECTED_PAYLOAD_CHARS
    assert bounded_payload(b"\xff\xfe ok") == "\ufffd\ufffd ok"


# -- time --------------------------------------------------------------------------


def test_skew_is_corrected_with_the_batch_sent_at() -> None:
    # The device clock is 1 hour fast: it says it sent at 13:00:10 what it
    # recorded at 13:00:00; we received it at 12:00:00.
    [event] = one(
        {**TRACK, "timestamp": "2026-03-01T13:00:00Z"}, sentAt="2026-03-01T13:00:10Z"
    ).events
    assert event.timestamp == RECEIVED - timedelta(seconds=10)
    assert event.original_timestamp == datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    assert event.sent_at == datetime(2026, 3, 1, 13, 0, 10, tzinfo=UTC)


def test_event_sent_at_wins_over_batch_sent_at() -> None:
    [event] = one(
        {**TRACK, "timestamp": "2026-03-01T09:00:00Z", "sentAt": "2026-03-01T09:00:30Z"},
        sentAt="2026-03-01T13:00:00Z",
    ).events
    assert event.timestamp == RECEIVED - timedelta(seconds=30)
    assert event.sent_at == datetime(2026, 3, 1, 9, 0, 30, tzinfo=UTC)


def test_timestamp_without_sent_at_is_kept_as_is_in_utc() -> None:
    [event] = one({**TRACK, "timestamp": "2026-02-01T10:00:00+02:00"}).events
    assert event.timestamp == datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
    assert event.timestamp.utcoffset() == timedelta(0)
    # originalTimestamp keeps what the device said, offset included.
    assert event.original_timestamp is not None
    assert event.original_timestamp.utcoffset() == timedelta(hours=2)
    assert event.sent_at is None


def test_missing_timestamp_means_received_at() -> None:
    [event] = one(TRACK, sentAt="2026-03-01T13:00:10Z").events
    assert event.timestamp == RECEIVED
    assert event.original_timestamp is None


def test_timestamps_in_other_offsets_and_precisions() -> None:
    [event] = one(
        {
            **TRACK,
            "timestamp": "2026-03-01T13:00:00.123456+01:00",
            "sentAt": "2026-03-01 12:00:01.123456",
        }
    ).events
    # sentAt without an offset is read as UTC; 1s between timestamp and sentAt.
    assert event.timestamp == RECEIVED - timedelta(seconds=1)


@pytest.mark.parametrize("name", ["timestamp", "sentAt"])
def test_unparseable_timestamps_are_refused(name: str) -> None:
    code, field, message = rejection_of({**TRACK, name: "last tuesday"})
    assert (code, field) == ("invalid_timestamp", f"batch.0.{name}")
    assert "last tuesday" in message


def test_timestamp_correction_out_of_range_is_refused() -> None:
    code, field, _ = rejection_of(
        {**TRACK, "timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T00:00:00Z"}
    )
    assert (code, field) == ("invalid_timestamp", "batch.0.timestamp")


# -- batch-level context and integrations -----------------------------------------


def test_batch_context_is_deep_merged_and_the_event_wins() -> None:
    [event] = one(
        {**TRACK, "context": {"library": {"version": "2"}, "locale": "fr-FR"}},
        context={"library": {"name": "sdk", "version": "1"}, "locale": "en-US", "ip": "1.1.1.1"},
        integrations={"All": True, "Mixpanel": {"a": 1}},
    ).events
    assert event.context == {
        "library": {"name": "sdk", "version": "2"},
        "locale": "fr-FR",
        "ip": "1.1.1.1",
    }
    assert event.integrations == {"All": True, "Mixpanel": {"a": 1}}


def test_batch_context_applies_to_every_event_without_sharing_state() -> None:
    _, result = run_batch(
        [
            {**TRACK, "messageId": "a", "context": {"library": {"v": 1}}},
            {**TRACK, "messageId": "b"},
        ],
        context={"library": {"name": "sdk"}},
    )
    first, second = result.events
    assert first.context == {"library": {"name": "sdk", "v": 1}}
    assert second.context == {"library": {"name": "sdk"}}


# -- small helpers -----------------------------------------------------------------


def test_coerce_id() -> None:
    assert coerce_id(None) is None
    assert coerce_id("") is None
    assert coerce_id(" \n") is None
    assert coerce_id(3) == "3"
    assert coerce_id(3.0) == "3"
    assert coerce_id(2.5e20) == "2.5e+20"
    with pytest.raises(TypeError):
        coerce_id(True)


def test_parse_timestamp() -> None:
    assert parse_timestamp("2026-01-02T03:04:05.678Z") == datetime(
        2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC
    )
    assert parse_timestamp("2026-01-02") == datetime(2026, 1, 2, tzinfo=UTC)
    assert parse_timestamp("2026-01-02T03:04:05-05:00") == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))
    )
    assert parse_timestamp("not a date") is None
    assert parse_timestamp("") is None


def test_deep_merge_does_not_mutate_its_inputs() -> None:
    defaults = {"a": {"b": 1, "c": 2}, "d": 1}
    own = {"a": {"b": 9}, "d": {"x": 1}}
    assert deep_merge(defaults, own) == {"a": {"b": 9, "c": 2}, "d": {"x": 1}}
    assert defaults == {"a": {"b": 1, "c": 2}, "d": 1}
    assert own == {"a": {"b": 9}, "d": {"x": 1}}


def test_decode_single_rejects_unknown_types() -> None:
    with pytest.raises(ValueError):
        decode_single(b"{}", "purchase", LIMITS)


def test_events_encode_in_segment_camel_case() -> None:
    [event] = one({**TRACK, "timestamp": "2026-03-01T11:00:00Z"}).events
    encoded = msgspec.json.decode(msgspec.json.encode(event))
    assert encoded["messageId"] == "m1"
    assert encoded["userId"] == "u1"
    assert encoded["originalTimestamp"] == "2026-03-01T11:00:00Z"


# -- hostile documents -------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


def test_invalid_utf8_inside_an_event_refuses_that_event() -> None:
    raw = b'{"batch": [' + body(TRACK) + b', {"type": "track", "event": "\xff", "userId": "u"}]}'
    request = decode_batch(raw, LIMITS)
    result = normalise(
        request,
        workspace_id="ws",
        source="s",
        received_at=RECEIVED,
        ids=SequentialIds(),
        limits=LIMITS,
    )
    assert len(result.events) == 1
    [rejection] = result.rejections
    assert (rejection.code, rejection.field) == ("invalid_event", "batch.1")


def test_invalid_utf8_in_the_envelope_refuses_the_request() -> None:
    with pytest.raises(RequestRejected) as caught:
        decode_batch(b'{"batch": [], "writeKey": "\xff"}', LIMITS)
    assert caught.value.code == "invalid_json"


def test_absurd_nesting_refuses_the_request_not_the_interpreter() -> None:
    raw = b'{"batch": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    with pytest.raises(RequestRejected) as caught:
        decode_batch(raw, Limits(max_batch_bytes=len(raw)))
    assert caught.value.code == "invalid_json"


def test_deep_events_are_refused_and_shallow_ones_kept() -> None:
    _, result = run_batch(
        [
            {**TRACK, "messageId": "ok", "properties": {"x": nested(MAX_NESTING - 3)}},
            {**TRACK, "messageId": "deep", "context": {"x": nested(MAX_NESTING + 1)}},
            {**TRACK, "messageId": "many", "properties": {"items": [{"a": 1}] * 500}},
        ]
    )
    assert [e.message_id for e in result.events] == ["ok", "many"]
    [rejection] = result.rejections
    assert (rejection.code, rejection.field) == ("too_deep", "batch.1")


def test_deep_batch_context_refuses_the_request() -> None:
    with pytest.raises(RequestRejected) as caught:
        decode_batch(body({"batch": [], "context": {"x": nested(MAX_NESTING + 1)}}), LIMITS)
    assert (caught.value.code, caught.value.field) == ("too_deep", "context")


def test_nesting_exceeds() -> None:
    assert not nesting_exceeds(1, 0)
    assert nesting_exceeds({}, 0)
    assert not nesting_exceeds({"a": [1, 2]}, 2)
    assert nesting_exceeds({"a": [[]]}, 2)
    assert not nesting_exceeds(nested(500), 500)
    assert nesting_exceeds(nested(501), 500)


def test_nul_character_in_any_string_is_refused() -> None:
    result = one({"type": "track", "userId": "u1", "event": "X", "properties": {"n": "a\u0000b"}})
    assert result.events == []
    assert result.rejections[0].code == "invalid_character"


def test_escaped_backslash_before_u0000_text_is_not_a_nul() -> None:
    result = one({"type": "track", "userId": "u1", "event": "X", "properties": {"n": "\\u0000"}})
    assert len(result.events) == 1
    assert result.events[0].properties["n"] == "\\u0000"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'"\\u0000"', True),
        (b'"\\\\u0000"', False),
        (b'"\\\\\\u0000"', True),
        (b'"u0000"', False),
        (b'"\\\\u0000 \\u0000"', True),
    ],
)
def test_contains_nul_escape(data: bytes, expected: bool) -> None:
    assert contains_nul_escape(data) is expected


@pytest.mark.parametrize("junk", ["undefined", "null", " NULL ", "0", "anonymous"])
def test_an_event_with_only_placeholder_ids_is_refused(junk: str) -> None:
    code, field, message = rejection_of({"type": "track", "event": "X", "anonymousId": junk})
    assert (code, field) == ("missing_identity", "batch.0.anonymousId")
    assert "placeholder" in message


def test_a_placeholder_user_id_beside_a_real_anonymous_id_is_accepted() -> None:
    result = one({"type": "track", "event": "X", "userId": "undefined", "anonymousId": "a-1"})
    assert len(result.events) == 1


def test_only_the_event_holding_a_nul_is_refused_when_the_body_has_one() -> None:
    # The body is searched once; when it holds a NUL, each event is searched
    # again so only the one carrying it is refused.
    _, result = run_batch(
        [TRACK, {**TRACK, "messageId": "m2", "properties": {"n": "a\u0000b"}}, TRACK]
    )
    assert [e.message_id for e in result.events] == ["m1", "m1"]
    [rejection] = result.rejections
    assert (rejection.code, rejection.index) == ("invalid_character", 1)


def test_the_body_is_searched_for_nul_once() -> None:
    clean = decode_batch(body({"batch": [TRACK]}), LIMITS)
    assert not clean.may_contain_nul
    assert decode_batch(
        body({"batch": [TRACK], "context": {"x": "\u0000"}}), LIMITS
    ).may_contain_nul
    assert decode_single(body({**TRACK, "name": "\u0000"}), "track", LIMITS).may_contain_nul
    assert not decode_single(body(TRACK), "track", LIMITS).may_contain_nul


def test_every_optional_field_reaches_the_event() -> None:
    [event] = one(
        {
            "type": "page",
            "userId": 7,
            "anonymousId": "a1",
            "previousId": "p1",
            "groupId": 9,
            "name": "Home",
            "category": "Docs",
            "event": "ignored for pages but kept",
            "traits": {"t": 1},
            "properties": {"p": 2},
            "context": {"c": 3},
            "integrations": {"i": 4},
            "timestamp": "2026-03-01T11:59:00Z",
            "sentAt": "2026-03-01T11:59:30Z",
        }
    ).events
    assert (event.user_id, event.anonymous_id, event.previous_id, event.group_id) == (
        "7",
        "a1",
        "p1",
        "9",
    )
    assert (event.name, event.category, event.event) == (
        "Home",
        "Docs",
        "ignored for pages but kept",
    )
    assert (event.traits, event.properties, event.context, event.integrations) == (
        {"t": 1},
        {"p": 2},
        {"c": 3},
        {"i": 4},
    )
    assert event.original_timestamp == datetime(2026, 3, 1, 11, 59, tzinfo=UTC)
    assert event.sent_at == datetime(2026, 3, 1, 11, 59, 30, tzinfo=UTC)
    assert event.timestamp == RECEIVED - timedelta(seconds=30)
    assert event.source == "write_key:key_1"
    assert event.received_at == RECEIVED


def test_nesting_right_at_the_limit_is_accepted_and_one_more_level_refused() -> None:
    # properties itself is the first level; MAX_NESTING - 1 more may follow.
    _, result = run_batch(
        [
            {**TRACK, "messageId": "ok", "properties": {"x": nested(MAX_NESTING - 2)}},
            {**TRACK, "messageId": "deep", "properties": {"x": nested(MAX_NESTING - 1)}},
        ]
    )
    assert [e.message_id for e in result.events] == ["ok"]
    [rejection] = result.rejections
    assert (rejection.code, rejection.index) == ("too_deep", 1)
